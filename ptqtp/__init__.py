"""ptqtp: PTQTP trit-plane quantization and hardware co-design toolkit.

Quantize (``quantize``), pack (``save_artifact`` / ``load_artifact``); the golden
integer model and the hardware image live in ``ptqtp.golden`` and ``ptqtp.hwimage``;
``ptqtp.hdl``, ``ptqtp.sim``, ``ptqtp.kernels`` and ``ptqtp.tools`` are the
repository's ``hdl/``, ``sim/``, ``kernels/`` and ``tools/`` folders.
"""

import os as _os

import torch as _torch

if not _torch.cuda.is_available():
    # Without a GPU the Triton kernels run in Triton's interpreter. This must be decided
    # before anything (transformers, for one) imports triton, hence here.
    _os.environ.setdefault("TRITON_INTERPRET", "1")

from .artifact import Artifact, ArtifactError, PackedLayer, load_artifact, save_artifact  # noqa: E402
from .baselines import RTNResult, quantize_rtn, quantize_ternary_absmean  # noqa: E402
from .config import METHODS, PTQTPConfig  # noqa: E402
from .quantizer import TritPlaneResult, quantize_ptqtp  # noqa: E402

__all__ = [
    "Artifact",
    "ArtifactError",
    "METHODS",
    "PTQTPConfig",
    "PackedLayer",
    "RTNResult",
    "TritPlaneResult",
    "load_artifact",
    "quantize",
    "quantize_ptqtp",
    "quantize_rtn",
    "quantize_ternary_absmean",
    "save_artifact",
]


def quantize(weight, method: str = "ptqtp", config: PTQTPConfig | None = None, name: str = "weight", progress=None):
    """Quantize one (out x in) weight with ``method`` in :data:`METHODS`.

    ``ptqtp`` and ``ternary`` give a :class:`TritPlaneResult` (packable); ``rtn2/3/4``
    give an :class:`RTNResult` (evaluation only). All share ``dequantize()``,
    ``rel_error``, ``iterations`` and ``seconds``.
    """
    config = config or PTQTPConfig()
    if method == "ptqtp":
        return quantize_ptqtp(weight, config, name=name, progress=progress)
    if method == "ternary":
        return quantize_ternary_absmean(weight, config.group_size, name=name)
    if method in ("rtn2", "rtn3", "rtn4"):
        return quantize_rtn(weight, int(method[3]), config.group_size, name=name)
    raise ValueError(f"method must be one of {METHODS}, not {method!r}")
