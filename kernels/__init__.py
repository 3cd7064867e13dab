"""Triton GPU kernels (imported as ``ptqtp.kernels``)."""
