"""Trit packings (docs/SPEC.md section 2): the one definition of how trits sit in bytes.

``"2bit"`` (the default): 4 trits a byte, 2-bit two's complement codes. A row of m trits
(m a multiple of 4) takes m / 4 bytes::

    byte j // 4, bits 2*(j % 4) .. 2*(j % 4) + 1  hold trit j   (least significant first)
    code 0b00 = 0, 0b01 = +1, 0b11 = -1, 0b10 = invalid

``"base3"``: 5 trits a byte (3^5 = 243 <= 256), 1.6 bits a trit. A row of m trits takes
ceil(m / 5) bytes; byte k holds trits 5k .. 5k + 4 as the base-3 number::

    byte = d(5k) * 81 + d(5k+1) * 27 + d(5k+2) * 9 + d(5k+3) * 3 + d(5k+4),   d(t) = t mod 3
                                                   (0 -> 0, +1 -> 1, -1 -> 2; trit 5k most significant)

Remainder rule: when m is not a multiple of 5 the last byte's missing trits are 0 (digit 0),
so a zero byte is five zero trits in both packings. Bytes 243..255 are invalid.

The base-3 decode is defined by the arithmetic the hardware decoder performs
(:func:`base3_digits`): the byte becomes the 15-bit fraction f = byte * 135 / 2^15 (just above
byte / 243), and each digit, most significant first, is the integer part of 3 f, the rest
carried on. Times 135 and times 3 are shifts and adds: no general multiplier, no table.

Every function takes torch tensors or NumPy arrays, with any leading dimensions, returns the
same kind, and never modifies its input. The module imports no torch itself (the engine's
stream layout and the HDL use it with NumPy alone).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = [
    "PACKINGS",
    "TRITS_PER_BYTE",
    "pack_trits",
    "unpack_trits",
    "packed_width",
    "invalid_bytes",
    "check_packing",
    "base3_digits",
    "TRIT_CODE",
    "BASE3_RECIPROCAL",
    "BASE3_FRACTION_BITS",
]

PACKINGS = ("2bit", "base3")
#: trit value -> 2-bit code
TRIT_CODE = {0: 0b00, 1: 0b01, -1: 0b11}
_INVALID = 0b10
#: byte * 135 / 2^15 exceeds byte / 243 by less than 1/243 for every byte < 243, the margin
#: five digit extractions need (each multiplies the error by 3; 3^5 / 243 = 1).
BASE3_RECIPROCAL, BASE3_FRACTION_BITS = 135, 15
#: trits a byte holds in each packing
TRITS_PER_BYTE = {"2bit": 4, "base3": 5}


def check_packing(packing) -> str:
    if packing not in PACKINGS:
        raise ValueError(f"packing must be one of {PACKINGS}, not {packing!r}")
    return packing


def packed_width(trits: int, packing: str = "2bit") -> int:
    """Bytes of a row of ``trits`` trits."""
    check_packing(packing)
    if packing == "2bit" and trits % 4:
        raise ValueError(f"a 2-bit row needs a multiple of 4 trits, not {trits}")
    return -(-trits // TRITS_PER_BYTE[packing])


def base3_digits(q):
    """The five base-3 digits of bytes ``q`` (ints 0..242), most significant first, by the
    hardware decoder's fixed-point arithmetic: list of 5 arrays/tensors like ``q``."""
    mask = (1 << BASE3_FRACTION_BITS) - 1
    f = q * BASE3_RECIPROCAL
    digits = []
    for _ in range(5):
        f = f * 3
        digits.append(f >> BASE3_FRACTION_BITS)
        f = f & mask
    return digits


# trit values of every byte (rows 243..255 unused): the digits as trits, 2 -> -1
_BASE3_TRITS = np.stack(base3_digits(np.arange(256, dtype=np.int32)), axis=-1)
_BASE3_TRITS = np.where(np.arange(256)[:, None] < 243, np.where(_BASE3_TRITS == 2, -1, _BASE3_TRITS), 0).astype(np.int8)
_POW3 = np.array([81, 27, 9, 3, 1], dtype=np.int32)


def _np(a) -> bool:
    if isinstance(a, np.ndarray):
        return True
    torch = sys.modules.get("torch")  # a tensor exists only if torch was imported
    if torch is not None and isinstance(a, torch.Tensor):
        return False
    raise TypeError(f"expected a torch tensor or NumPy array, not {type(a).__name__}")


def _dtype_name(a) -> str:
    return str(a.dtype).removeprefix("torch.")


def pack_trits(trits, packing: str = "2bit"):
    """int8 trits [..., m] (values in {-1, 0, 1}; m a multiple of 4 for ``"2bit"``) -> uint8
    [..., packed_width(m, packing)]."""
    is_np = _np(trits)
    if _dtype_name(trits) != "int8":
        raise TypeError(f"trits must be int8, not {trits.dtype}")
    m = trits.shape[-1]
    width = packed_width(m, packing)
    if bool(((trits < -1) | (trits > 1)).any()):
        raise ValueError("trits must be in {-1, 0, 1}")
    lead = tuple(trits.shape[:-1])
    torch: Any = sys.modules.get("torch")  # only set when the caller passed torch tensors
    if packing == "2bit":
        codes = trits & 0b11
        codes = (codes.astype(np.uint8) if is_np else codes.to(torch.uint8)).reshape(*lead, width, 4)
        return codes[..., 0] | (codes[..., 1] << 2) | (codes[..., 2] << 4) | (codes[..., 3] << 6)
    pad = 5 * width - m
    if is_np:
        digits = np.concatenate([trits, np.zeros((*lead, pad), np.int8)], -1).astype(np.int32) % 3
        return (digits.reshape(*lead, width, 5) @ _POW3).astype(np.uint8)
    digits = torch.nn.functional.pad(trits, (0, pad)).to(torch.int32) % 3  # Python modulo: -1 -> 2
    pow3 = torch.from_numpy(_POW3).to(trits.device)
    return (digits.reshape(*lead, width, 5) * pow3).sum(-1).to(torch.uint8)


def _codes(packed):
    """2-bit fields of ``packed`` [..., k] -> [..., 4k]."""
    if _np(packed):
        return np.stack([(packed >> s) & 0b11 for s in (0, 2, 4, 6)], axis=-1).reshape(*packed.shape[:-1], -1)
    torch = sys.modules["torch"]
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=packed.device)
    return ((packed.unsqueeze(-1) >> shifts) & 0b11).flatten(-2)


def invalid_bytes(packed, packing: str = "2bit"):
    """Indices [k, ndim] (packed coordinates) of every invalid byte: one holding the 2-bit
    code 0b10, or a base-3 byte >= 243."""
    check_packing(packing)
    _check_packed_dtype(packed)
    if packing == "2bit":
        bad = (_codes(packed) == _INVALID).reshape(*packed.shape, 4).any(-1)
    else:
        bad = packed >= 243
    return np.argwhere(bad) if _np(packed) else sys.modules["torch"].nonzero(bad)


def _check_packed_dtype(packed) -> None:
    _np(packed)
    if _dtype_name(packed) != "uint8":
        raise TypeError(f"packed codes must be uint8, not {packed.dtype}")


def unpack_trits(packed, packing: str = "2bit", width: int | None = None):
    """uint8 [..., k] -> int8 trits [..., width] (default: every trit the bytes hold, 4k or 5k).

    Raises ``ValueError`` on an invalid byte (see :func:`invalid_bytes`) or, for base-3 with
    ``width``, a nonzero trit past ``width`` in the last byte (the remainder rule)."""
    check_packing(packing)
    _check_packed_dtype(packed)
    is_np = _np(packed)
    torch: Any = sys.modules.get("torch")  # only set when the caller passed torch tensors
    per = TRITS_PER_BYTE[packing]
    full = packed.shape[-1] * per
    width = full if width is None else width
    if not full - per < width <= full and not (width == full == 0):
        raise ValueError(f"{packed.shape[-1]} bytes of {packing} codes do not hold a row of {width} trits")
    bad = invalid_bytes(packed, packing)
    if len(bad):
        first = tuple(int(i) for i in bad[0])
        what = "the invalid trit code 0b10" if packing == "2bit" else f"base-3 byte {int(packed[first])} (>= 243)"
        raise ValueError(f"{what} at byte index {first} ({len(bad)} in all)")
    if packing == "2bit":
        c = _codes(packed)
        c = c.astype(np.int8) if is_np else c.to(torch.int8)
        trits = (c & 1) * (1 - (c & 2))  # 0b00 -> 0, 0b01 -> 1, 0b11 -> -1, in int8
    elif is_np:
        trits = _BASE3_TRITS[packed].reshape(*packed.shape[:-1], -1)
    else:
        trits = torch.from_numpy(_BASE3_TRITS).to(packed.device)[packed.long()].flatten(-2)
    if width < full:
        if bool((trits[..., width:] != 0).any()):
            raise ValueError(f"base-3 remainder: trits {width}..{full - 1} of the last byte must be 0")
        trits = trits[..., :width]
    return trits
