"""Command-line entry points (imported as ``ptqtp.tools``)."""
