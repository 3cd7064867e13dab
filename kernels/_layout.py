"""Shape checks of a packed layer's tensors, shared by the kernels and ``TritPlaneLinear``
(no Triton import, so the module works without it)."""

from __future__ import annotations

import torch

from ptqtp.formats.packing import check_packing, packed_width


def check_packed(
    codes: torch.Tensor, scales: torch.Tensor, group_size: int, offsets=None, packing: str = "2bit"
) -> tuple[int, int]:
    """(n, d_pad) of codes uint8 [planes, n, packed_width(d_pad, packing)] (1 to 4 planes),
    scales [planes, n, ng] (d_pad = ng G) and optional offsets [n, ng]; ``ValueError`` naming
    the mismatch otherwise."""
    check_packing(packing)
    if codes.dtype != torch.uint8 or codes.dim() != 3 or codes.shape[0] not in (1, 2, 3, 4):
        raise ValueError(
            f"codes must be uint8 [planes, n, bytes] with 1 to 4 planes, not {codes.dtype} {tuple(codes.shape)}"
        )
    planes, n = codes.shape[0], codes.shape[1]
    if scales.dim() != 3 or tuple(scales.shape[:2]) != (planes, n):
        raise ValueError(f"scales {tuple(scales.shape)} do not match codes {tuple(codes.shape)}: [planes, n, ng]")
    d_pad = scales.shape[2] * group_size
    if codes.shape[2] != packed_width(d_pad, packing):
        raise ValueError(
            f"codes {tuple(codes.shape)} do not hold {d_pad} columns ({scales.shape[2]} groups of "
            f"{group_size}) in {packing} packing ({packed_width(d_pad, packing)} bytes a row)"
        )
    if offsets is not None and tuple(offsets.shape) != (n, d_pad // group_size):
        raise ValueError(f"offsets {tuple(offsets.shape)} must be (n, ng) = {(n, d_pad // group_size)}")
    return n, d_pad
