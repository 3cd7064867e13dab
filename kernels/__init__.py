"""Triton GPU kernels and the ``TritPlaneLinear`` module (imported as ``ptqtp.kernels``).

``trit_matmul`` / ``trit_matmul_int`` import Triton on first use, so the package imports
without it.
"""

from ._linear import TritPlaneLinear

__all__ = ["TritPlaneLinear", "trit_matmul", "trit_matmul_int"]


def __getattr__(name):
    if name in ("trit_matmul", "trit_matmul_int"):
        from . import _trit_matmul as _mod

        return getattr(_mod, name)
    raise AttributeError(name)
