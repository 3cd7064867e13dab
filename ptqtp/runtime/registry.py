"""Backends by name: ``make_backend("golden" | "triton" | "rtl" | "rtl-layer" | "remote", **kwargs)``."""

from __future__ import annotations

from .backends import Backend, GoldenBackend, TritonBackend
from .client import RemoteBackend

__all__ = ["BACKENDS", "make_backend"]


def _rtl(**kwargs) -> Backend:
    from .rtl import RtlBackend  # Amaranth and cocotb: heavy, optional

    return RtlBackend(**kwargs)


def _engine(**kwargs) -> Backend:
    from .engine import EngineBackend  # Amaranth and cocotb: heavy, optional

    return EngineBackend(**kwargs)


# "rtl" is the streaming engine (one build for every layer); "engine" is its older name.
_FACTORIES = {"golden": GoldenBackend, "triton": TritonBackend, "rtl": _engine, "rtl-layer": _rtl, "engine": _engine,
              "remote": RemoteBackend}
#: Backend names, for CLI choices.
BACKENDS = tuple(_FACTORIES)


def make_backend(name: str, **kwargs) -> Backend:
    """A backend by name: ``golden``, ``triton`` (kwargs: device), ``rtl`` or its alias ``engine``
    (every layer on one streaming-engine build; kwargs: params or EngineParams fields, timeout),
    ``rtl-layer`` (one per-layer accelerator build per layer; kwargs: lanes, rows, timeout) or
    ``remote`` (kwargs: host, port, timeout)."""
    try:
        factory = _FACTORIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"backend must be one of {BACKENDS}, not {name!r}") from None
    return factory(**kwargs)
