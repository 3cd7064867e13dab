"""Triton GPU kernels and the ``TritPlaneLinear`` module (imported as ``ptqtp.kernels``).

``trit_matmul`` / ``trit_matmul_int`` import Triton on first use, so the package imports
without it. Without CUDA the kernels run in Triton's interpreter, which Triton decides
when it is first imported (its standard library is compiled then): an application calls
:func:`use_interpreter_without_cuda` before anything imports Triton (the ``ptqtp``
command and the test suite do); transformers may import Triton when it loads a model.
"""

import os
import sys

from ._linear import TritPlaneLinear

__all__ = ["TritPlaneLinear", "trit_matmul", "trit_matmul_int", "use_interpreter_without_cuda"]


def use_interpreter_without_cuda() -> bool:
    """Set ``TRITON_INTERPRET=1`` when no CUDA device is present (an explicit choice of the
    caller, never done at import); returns whether the interpreter is selected. Raises
    ``RuntimeError`` when Triton was already imported in compiled mode without CUDA."""
    import torch

    if torch.cuda.is_available():
        return os.environ.get("TRITON_INTERPRET") == "1"
    if os.environ.get("TRITON_INTERPRET") != "1" and "triton" in sys.modules:
        raise RuntimeError("Triton was imported before TRITON_INTERPRET=1 was set and there is no CUDA device: "
                           "set TRITON_INTERPRET=1 in the environment, or call "
                           "ptqtp.kernels.use_interpreter_without_cuda() before importing transformers")
    os.environ["TRITON_INTERPRET"] = "1"
    return True


def __getattr__(name):
    if name in ("trit_matmul", "trit_matmul_int"):
        from . import _trit_matmul as _mod

        return getattr(_mod, name)
    raise AttributeError(name)
