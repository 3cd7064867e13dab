"""Amaranth generators for the ternary matmul accelerator (imported as ``ptqtp.hdl``)."""
