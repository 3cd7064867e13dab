"""Shape checks of a packed layer's tensors, shared by the kernels and ``TritPlaneLinear``
(no Triton import, so the module works without it)."""

from __future__ import annotations

import torch


def check_packed(codes: torch.Tensor, scales: torch.Tensor, group_size: int, offsets=None) -> tuple[int, int]:
    """(n, d_pad) of codes uint8 [planes, n, d_pad/4] (1 or 2 planes), scales [planes, n, ng]
    and optional offsets [n, ng]; ``ValueError`` naming the mismatch otherwise."""
    if codes.dtype != torch.uint8 or codes.dim() != 3 or codes.shape[0] not in (1, 2):
        raise ValueError(f"codes must be uint8 [planes, n, d_pad/4] with 1 or 2 planes, not {codes.dtype} "
                         f"{tuple(codes.shape)}")
    planes, n, d_pad = codes.shape[0], codes.shape[1], codes.shape[2] * 4
    if d_pad % group_size or tuple(scales.shape) != (planes, n, d_pad // group_size):
        raise ValueError(f"scales {tuple(scales.shape)} do not match codes {tuple(codes.shape)} with G={group_size}")
    if offsets is not None and tuple(offsets.shape) != (n, d_pad // group_size):
        raise ValueError(f"offsets {tuple(offsets.shape)} must be (n, ng) = {(n, d_pad // group_size)}")
    return n, d_pad
