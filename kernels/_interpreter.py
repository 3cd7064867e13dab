"""Choosing Triton's interpreter when there is no CUDA device (see ``ptqtp.kernels``)."""

import os
import sys

__all__ = ["use_interpreter_without_cuda"]


def use_interpreter_without_cuda() -> bool:
    """Set ``TRITON_INTERPRET=1`` when no CUDA device is present (an explicit choice of the
    caller, never done at import); returns whether the interpreter is selected. Raises
    ``RuntimeError`` when Triton was already imported in compiled mode without CUDA."""
    import torch

    if torch.cuda.is_available():
        return os.environ.get("TRITON_INTERPRET") == "1"
    if os.environ.get("TRITON_INTERPRET") != "1" and "triton" in sys.modules:
        raise RuntimeError(
            "Triton was imported before TRITON_INTERPRET=1 was set and there is no CUDA device: "
            "set TRITON_INTERPRET=1 in the environment, or call "
            "ptqtp.kernels.use_interpreter_without_cuda() before importing transformers"
        )
    os.environ["TRITON_INTERPRET"] = "1"
    return True
