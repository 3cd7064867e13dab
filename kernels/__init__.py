"""Triton GPU kernels and the ``TritPlaneLinear`` module (imported as ``ptqtp.kernels``).

``trit_matmul`` / ``trit_matmul_int`` import Triton on first use, so the package imports
without it. Without CUDA the kernels run in Triton's interpreter, which Triton decides
when it is first imported (its standard library is compiled then): an application calls
:func:`use_interpreter_without_cuda` before anything imports Triton (the ``ptqtp``
command and the test suite do); transformers may import Triton when it loads a model.
"""

from ._interpreter import use_interpreter_without_cuda
from ._linear import TritPlaneLinear

__all__ = ["TritPlaneLinear", "trit_matmul", "trit_matmul_int", "use_interpreter_without_cuda"]


def __getattr__(name):
    if name in ("trit_matmul", "trit_matmul_int"):
        from . import _trit_matmul as _mod

        return getattr(_mod, name)
    raise AttributeError(name)
