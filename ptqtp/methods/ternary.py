"""BitNet b1.58 absmean ternary, one trit plane per group (comparison method ``ternary``).

gamma = mean|w| over the group's real columns, t = clip(round(w / gamma), -1, 1). Stored as
plane 1 with plane 2 zero at scale 0, so it packs into the same artifact and runs on the
same hardware as PTQTP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from ._common import TritPlaneResult, check_weight, relative_error
from ._config import MethodConfig

__all__ = ["TernaryConfig", "quantize_ternary_absmean", "grouped", "valid_columns"]


@dataclass(frozen=True)
class TernaryConfig(MethodConfig):
    """Absmean ternary: only the group size."""

    METHOD: ClassVar[str] = "ternary"


def grouped(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """(n, d) -> (n, ng, G) float64 with zero padding."""
    n, d = weight.shape
    ng = -(-d // group_size)
    w = torch.zeros(n, ng * group_size, dtype=torch.float64, device=weight.device)
    w[:, :d] = weight
    return w.view(n, ng, group_size)


def valid_columns(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """bool (1, ng, G): which grouped columns are real (not padding); the tail group's
    statistics are taken over its real columns only."""
    d = weight.shape[1]
    ng = -(-d // group_size)
    valid = torch.zeros(ng * group_size, dtype=torch.bool, device=weight.device)
    valid[:d] = True
    return valid.view(1, ng, group_size)


def quantize_ternary_absmean(
    weight: torch.Tensor, group_size: int | TernaryConfig = 128, name: str = "weight"
) -> TritPlaneResult:
    """Single-plane absmean ternary (BitNet b1.58) per group of ``group_size`` columns."""
    if isinstance(group_size, TernaryConfig):
        group_size = group_size.group_size
    check_weight(weight, name)
    t0 = time.perf_counter()
    n, d = weight.shape
    with torch.inference_mode():
        w = grouped(weight, group_size)
        valid = valid_columns(weight, group_size)
        count = valid.sum(-1, dtype=torch.float64)
        gamma = w.abs().sum(-1) / count
        t = torch.where(gamma.unsqueeze(-1) > 0, torch.round(w / gamma.clamp_min(1e-300).unsqueeze(-1)), 0.0)
        t = torch.where(valid, t.clamp(-1, 1), 0.0).to(torch.int8)
        codes = torch.zeros(2, n, t.shape[1] * group_size, dtype=torch.int8, device=weight.device)
        codes[0] = t.view(n, -1)
        scales = torch.zeros(2, n, t.shape[1], dtype=torch.float64, device=weight.device)
        scales[0] = gamma
        result = TritPlaneResult(
            codes=codes, scales=scales, in_features=d, group_size=group_size, method="ternary", iterations=0
        )
        result.rel_error = relative_error(weight, result.dequantize(torch.float64))
    result.seconds = time.perf_counter() - t0
    return result
