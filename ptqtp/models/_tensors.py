"""What an artifact stores of a model besides its trit-plane layers (shared by
``hf.save_quantized`` and the transformers quantizer's ``save_pretrained``)."""

from __future__ import annotations

import torch

from ptqtp.formats.artifact import GUARD
from ptqtp.kernels import TritPlaneLinear

__all__ = ["artifact_tensors"]


def artifact_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors an artifact of ``model`` stores besides its trit-plane layers' own: every
    other parameter and buffer (biases of quantized layers included), tied weights once."""
    quantized = {n for n, m in model.named_modules() if isinstance(m, TritPlaneLinear)}
    tensors, seen = {}, {}
    for key, t in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if owner in quantized and leaf in ("tp_codes", "tp_scales", "tp_offsets", "tp_perm", "bias", GUARD):
            tensors[key] = t
            continue
        ptr = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if ptr in seen:  # tied weights (e.g. lm_head = embed_tokens): stored once, re-tied on load
            continue
        seen[ptr] = key
        tensors[key] = t
    return tensors
