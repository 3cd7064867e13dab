"""Backends by name: ``make_backend("golden" | "triton" | "rtl" | "remote" | "soc-sim" | "board", **kwargs)``."""

from __future__ import annotations

from .backends import Backend, GoldenBackend, TritonBackend
from .client import RemoteBackend

__all__ = ["BACKENDS", "make_backend"]


def _soc(**kwargs) -> Backend:
    from .soc import SocBackend  # LiteX, Verilator: heavy, optional

    return SocBackend(**kwargs)


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
    "soc-sim": _soc,
    "board": lambda url=None, config=None, **kw: _soc(board="", url=url, config=config, **kw),
}
#: Backend names, for CLI choices.
BACKENDS = tuple(_FACTORIES)


def make_backend(name: str, **kwargs) -> Backend:
    """A backend by name: ``golden``, ``triton`` (kwargs: device), ``rtl`` or its alias ``engine``
    (every layer on one engine build; kwargs: params or EngineParams fields, timeout) or
    ``remote`` (kwargs: host, port, timeout), ``soc-sim`` (the whole SoC in Verilator; kwargs:
    board "sim-sdr" or "sim-ddr3", params) or ``board`` (a programmed board; kwargs: url, config
    = its soc.json)."""
    try:
        factory = _FACTORIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"backend must be one of {BACKENDS}, not {name!r}") from None
    return factory(**kwargs)
