"""Round-to-nearest k-bit asymmetric per group (min/max grid): the usual weight-only
baseline (methods ``rtn2``, ``rtn3``, ``rtn4``). Not a trit format: evaluation only."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from ._common import check_weight, relative_error
from ._config import MethodConfig
from .ternary import grouped, valid_columns

__all__ = ["RTNConfig", "RTNResult", "quantize_rtn", "minmax_grid", "RTN_BITS"]

RTN_BITS = (2, 3, 4, 8)


@dataclass(frozen=True)
class RTNConfig(MethodConfig):
    """``bits`` bits per weight per group, plus a float16 scale and a k-bit zero point."""

    METHOD: ClassVar[str] = "rtn"

    bits: int = 4

    @property
    def method(self) -> str:
        return f"rtn{self.bits}"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bits not in RTN_BITS:
            raise ValueError(f"bits must be one of {', '.join(map(str, RTN_BITS))}, not {self.bits!r}")


@dataclass
class RTNResult:
    """Round-to-nearest k-bit asymmetric group-wise result (evaluation only)."""

    q: torch.Tensor  # uint8 [n, ng, G] levels 0 .. 2^k - 1
    scale: torch.Tensor  # float64 [n, ng]
    zero: torch.Tensor  # float64 [n, ng], the level that maps to 0.0
    in_features: int
    group_size: int
    bits: int
    rel_error: float = float("nan")
    seconds: float = 0.0
    iterations: int = 0

    @property
    def method(self) -> str:
        return f"rtn{self.bits}"

    @property
    def out_features(self) -> int:
        return int(self.q.shape[0])

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        w = (self.q.to(torch.float64) - self.zero.unsqueeze(-1)) * self.scale.unsqueeze(-1)
        return w.reshape(self.q.shape[0], -1)[:, : self.in_features].to(dtype)


def minmax_grid(lo: torch.Tensor, hi: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero point) of the asymmetric ``bits``-bit grid spanning [lo, hi]."""
    scale = (hi - lo) / (2**bits - 1)
    # A constant group c gets scale |c| (or 1), so it dequantizes to c exactly.
    scale = torch.where(scale > 0, scale, torch.where(lo != 0, lo.abs(), torch.ones_like(lo)))
    return scale, torch.round(-lo / scale)


def quantize_rtn(weight: torch.Tensor, bits: int, group_size: int = 128, name: str = "weight") -> RTNResult:
    """Asymmetric round-to-nearest with ``bits`` bits per weight per group (min/max grid)."""
    RTNConfig(group_size, bits)  # validates
    check_weight(weight, name)
    t0 = time.perf_counter()
    with torch.inference_mode():
        w = grouped(weight, group_size)
        valid = valid_columns(weight, group_size)
        lo = torch.where(valid, w, math.inf).amin(-1)
        hi = torch.where(valid, w, -math.inf).amax(-1)
        qmax = 2**bits - 1
        scale, zero = minmax_grid(lo, hi, bits)
        q = (torch.round(w / scale.unsqueeze(-1)) + zero.unsqueeze(-1)).clamp(0, qmax).to(torch.uint8)
        result = RTNResult(q=q, scale=scale, zero=zero, in_features=weight.shape[1], group_size=group_size, bits=bits)
        result.rel_error = relative_error(weight, result.dequantize(torch.float64))
    result.seconds = time.perf_counter() - t0
    return result
