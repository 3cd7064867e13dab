"""Trit packing: 4 trits per byte, 2-bit two's complement codes (docs/SPEC.md section 2).

Memory layout of one packed row (d_pad trits -> d_pad / 4 bytes)::

    byte j // 4, bits 2*(j % 4) .. 2*(j % 4) + 1  hold trit j   (least significant first)
    code 0b00 = 0, 0b01 = +1, 0b11 = -1, 0b10 = invalid

Both functions accept any leading dimensions and never modify their input.
"""

from __future__ import annotations

import torch

__all__ = ["pack_trits", "unpack_trits", "invalid_code_positions", "TRIT_CODE"]

#: trit value -> 2-bit code
TRIT_CODE = {0: 0b00, 1: 0b01, -1: 0b11}
_INVALID = 0b10


def pack_trits(trits: torch.Tensor) -> torch.Tensor:
    """int8 trits [..., m] (m a multiple of 4, values in {-1, 0, 1}) -> uint8 [..., m / 4]."""
    if trits.dtype != torch.int8:
        raise TypeError(f"trits must be int8, not {trits.dtype}")
    if trits.shape[-1] % 4:
        raise ValueError(f"the last dimension must be a multiple of 4, not {trits.shape[-1]}")
    if bool(((trits < -1) | (trits > 1)).any()):
        raise ValueError("trits must be in {-1, 0, 1}")
    codes = (trits & 0b11).to(torch.uint8).view(*trits.shape[:-1], -1, 4)
    return codes[..., 0] | (codes[..., 1] << 2) | (codes[..., 2] << 4) | (codes[..., 3] << 6)


def _codes(packed: torch.Tensor) -> torch.Tensor:
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed codes must be uint8, not {packed.dtype}")
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=packed.device)
    return ((packed.unsqueeze(-1) >> shifts) & 0b11).flatten(-2)


def invalid_code_positions(packed: torch.Tensor) -> torch.Tensor:
    """Indices (in unpacked trit coordinates) of every 0b10 code in ``packed``."""
    return torch.nonzero(_codes(packed) == _INVALID)


def unpack_trits(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [..., m / 4] -> int8 trits [..., m]; raises ``ValueError`` on the invalid code 0b10."""
    codes = _codes(packed)
    bad = codes == _INVALID
    if bool(bad.any()):
        first = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise ValueError(f"invalid trit code 0b10 at trit index {first} ({int(bad.sum())} in all)")
    c = codes.to(torch.int8)
    return (c & 1) * (1 - (c & 2))  # 0b00 -> 0, 0b01 -> 1, 0b11 -> -1, in int8 (no int64 index tensor)

