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


def quantize(weight, method: str = "ptqtp", config: PTQTPConfig | None = None, name: str = "weight", progress=None,
             hessian=None, pt2_config=None):
    """Quantize one (out x in) weight with ``method`` in :data:`METHODS`.

    ``ptqtp``, ``ternary``, ``pt2`` and ``pt2-itf`` give a :class:`TritPlaneResult`
    (packable); ``rtn2/3/4`` give an :class:`RTNResult` (evaluation only). All share
    ``dequantize()``, ``rel_error``, ``iterations`` and ``seconds``. ``pt2`` (PT^2-LLM with
    AGA, error propagation and SSR) needs ``hessian``, the d x d sum of x x^T of the layer's
    calibration inputs; ``pt2-itf`` is its data-free ternary fit. ``pt2_config``:
    :class:`ptqtp.pt2.PT2Config` (its group size defaults to ``config.group_size``).
    """
    config = config or PTQTPConfig()
    if method == "ptqtp":
        return quantize_ptqtp(weight, config, name=name, progress=progress)
    if method == "ternary":
        return quantize_ternary_absmean(weight, config.group_size, name=name)
    if method in ("pt2", "pt2-itf"):
        from .pt2 import PT2Config, pt2_calibrated, pt2_itf

        pt2_config = pt2_config or PT2Config(group_size=config.group_size)
        if method == "pt2-itf":
            return pt2_itf(weight, pt2_config, name=name)
        if hessian is None:
            raise ValueError(f"{name}: method 'pt2' needs calibration statistics (hessian=); "
                             f"'pt2-itf' is the data-free variant")
        return pt2_calibrated(weight, hessian, pt2_config, name=name)
    if method in ("rtn2", "rtn3", "rtn4"):
        return quantize_rtn(weight, int(method[3]), config.group_size, name=name)
    raise ValueError(f"method must be one of {METHODS}, not {method!r}")
