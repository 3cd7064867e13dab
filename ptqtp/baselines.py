"""Comparison quantizers with the same API as :func:`quantize_ptqtp`.

- ``ternary``: one trit plane per group, BitNet b1.58 absmean: gamma = mean|w|,
  t = clip(round(w / gamma), -1, 1). Stored as plane 1; plane 2 is zero with scale 0,
  so it packs into the same artifact and runs on the same hardware.
- ``rtn{k}``: round-to-nearest k-bit asymmetric per group (min/max grid), the usual
  weight-only baseline. Not a trit format, so it is for evaluation only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from .quantizer import TritPlaneResult, check_weight

__all__ = ["RTNResult", "quantize_ternary_absmean", "quantize_rtn"]


def _grouped(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """(n, d) -> (n, ng, G) float64 with zero padding; zeros do not move absmean or min/max wrongly
    for full groups, and the tail's statistics are taken over its real columns only."""
    n, d = weight.shape
    ng = -(-d // group_size)
    w = torch.zeros(n, ng * group_size, dtype=torch.float64, device=weight.device)
    w[:, :d] = weight
    return w.view(n, ng, group_size)


def _valid(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    n, d = weight.shape
    ng = -(-d // group_size)
    valid = torch.zeros(ng * group_size, dtype=torch.bool, device=weight.device)
    valid[:d] = True
    return valid.view(1, ng, group_size)


def _rel_error(weight: torch.Tensor, w_hat: torch.Tensor) -> float:
    w = weight.to(torch.float64)
    den = float(torch.linalg.vector_norm(w))
    return float(torch.linalg.vector_norm(w - w_hat)) / den if den > 0 else 0.0


def quantize_ternary_absmean(weight: torch.Tensor, group_size: int = 128, name: str = "weight") -> TritPlaneResult:
    """Single-plane absmean ternary (BitNet b1.58) per group of ``group_size`` columns."""
    check_weight(weight, name)
    t0 = time.perf_counter()
    n, d = weight.shape
    with torch.inference_mode():
        w = _grouped(weight, group_size)
        valid = _valid(weight, group_size)
        count = valid.sum(-1, dtype=torch.float64)
        gamma = w.abs().sum(-1) / count
        t = torch.where(gamma.unsqueeze(-1) > 0, torch.round(w / gamma.clamp_min(1e-300).unsqueeze(-1)), 0.0)
        t = torch.where(valid, t.clamp(-1, 1), 0.0).to(torch.int8)
        codes = torch.zeros(2, n, t.shape[1] * group_size, dtype=torch.int8, device=weight.device)
        codes[0] = t.view(n, -1)
        scales = torch.zeros(2, n, t.shape[1], dtype=torch.float64, device=weight.device)
        scales[0] = gamma
        result = TritPlaneResult(codes=codes, scales=scales, in_features=d, group_size=group_size,
                                 method="ternary", iterations=0)
        result.rel_error = _rel_error(weight, result.dequantize(torch.float64))
    result.seconds = time.perf_counter() - t0
    return result


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


def quantize_rtn(weight: torch.Tensor, bits: int, group_size: int = 128, name: str = "weight") -> RTNResult:
    """Asymmetric round-to-nearest with ``bits`` bits per weight per group (min/max grid)."""
    if bits not in (2, 3, 4, 8):
        raise ValueError(f"bits must be one of 2, 3, 4, 8, not {bits!r}")
    check_weight(weight, name)
    t0 = time.perf_counter()
    with torch.inference_mode():
        w = _grouped(weight, group_size)
        valid = _valid(weight, group_size)
        lo = torch.where(valid, w, math.inf).amin(-1)
        hi = torch.where(valid, w, -math.inf).amax(-1)
        qmax = 2**bits - 1
        scale = (hi - lo) / qmax
        # A constant group c gets scale |c| (or 1), so it dequantizes to c exactly.
        scale = torch.where(scale > 0, scale, torch.where(lo != 0, lo.abs(), torch.ones_like(lo)))
        zero = torch.round(-lo / scale)
        q = (torch.round(w / scale.unsqueeze(-1)) + zero.unsqueeze(-1)).clamp(0, qmax).to(torch.uint8)
        result = RTNResult(q=q, scale=scale, zero=zero, in_features=weight.shape[1],
                           group_size=group_size, bits=bits)
        result.rel_error = _rel_error(weight, result.dequantize(torch.float64))
    result.seconds = time.perf_counter() - t0
    return result
