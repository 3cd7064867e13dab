"""Backends by name: ``make_backend("golden" | "triton" | "rtl" | "remote", **kwargs)``."""

from __future__ import annotations

from .backends import Backend, GoldenBackend, TritonBackend
from .client import RemoteBackend

__all__ = ["BACKENDS", "make_backend"]


def _engine(**kwargs) -> Backend:
    from .engine import EngineBackend  # Amaranth and cocotb: heavy, optional

    return EngineBackend(**kwargs)


# "rtl" is the engine in Verilator (one build for every layer); "engine" is its alias.
_FACTORIES = {
    "golden": GoldenBackend,
    "triton": TritonBackend,
    "rtl": _engine,
    "engine": _engine,
    "remote": RemoteBackend,
}
#: Backend names, for CLI choices.
BACKENDS = tuple(_FACTORIES)


def make_backend(name: str, **kwargs) -> Backend:
    """A backend by name: ``golden``, ``triton`` (kwargs: device), ``rtl`` or its alias ``engine``
    (every layer on one engine build; kwargs: params or EngineParams fields, timeout) or
    ``remote`` (kwargs: host, port, timeout)."""
    try:
        factory = _FACTORIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"backend must be one of {BACKENDS}, not {name!r}") from None
    return factory(**kwargs)
