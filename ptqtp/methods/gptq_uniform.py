"""GPTQ onto a uniform k-bit grid (methods ``gptq3``, ``gptq4``): the baseline a user would
pick instead of trit planes, with the same calibration data and group size.

Per linear, with H = X^T X of its calibration inputs (Frantar et al., 2022, without act-order):
damp H (0.01 mean diag), take the upper Cholesky factor U of H^-1; per group of G columns,
fix each row's asymmetric min/max grid (``rtn``'s rule) from the error-updated weights as the
group begins, round column by column to the grid and push the scaled error into the later
columns. The result is an ``RTNResult`` (levels, scale, zero point): evaluation only.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from ._common import check_weight, relative_error
from ._config import MethodConfig
from .linalg import upper_inverse_cholesky
from .rtn import RTNResult, minmax_grid

__all__ = ["GPTQConfig", "GPTQResult", "gptq_uniform"]


@dataclass(frozen=True)
class GPTQConfig(MethodConfig):
    """``bits`` (3 or 4) per weight per group, plus a float16 scale and a k-bit zero point;
    Hessian damping ``damp``."""

    METHOD: ClassVar[str] = "gptq"

    bits: int = 4
    damp: float = 0.01

    @property
    def method(self) -> str:
        return f"gptq{self.bits}"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bits not in (2, 3, 4, 8) or isinstance(self.bits, bool):
            raise ValueError(f"bits must be 2, 3, 4 or 8, not {self.bits!r}")
        if not 0 <= self.damp < math.inf:
            raise ValueError(f"damp must be >= 0 and finite, not {self.damp!r}")


@dataclass
class GPTQResult(RTNResult):
    @property
    def method(self) -> str:
        return f"gptq{self.bits}"


def gptq_uniform(
    weight: torch.Tensor, H: torch.Tensor, config: GPTQConfig | None = None, name: str = "weight"
) -> GPTQResult:
    """Quantize ``weight`` (n x d) with GPTQ onto a ``config.bits``-bit grid per group."""
    config = config or GPTQConfig()
    check_weight(weight, name)
    if H.shape != (weight.shape[1], weight.shape[1]):
        raise ValueError(f"{name}: H must be {weight.shape[1]} x {weight.shape[1]}, not {tuple(H.shape)}")
    t0 = time.perf_counter()
    n, d = weight.shape
    G, qmax = config.group_size, 2**config.bits - 1
    ng = -(-d // G)
    W = weight.detach().to(torch.float64).clone()
    W[:, torch.diag(H) == 0] = 0
    U = upper_inverse_cholesky(H, config.damp)
    q = torch.zeros(n, ng, G, dtype=torch.uint8, device=W.device)
    scale = torch.ones(n, ng, dtype=torch.float64, device=W.device)
    zero = torch.zeros(n, ng, dtype=torch.float64, device=W.device)
    for g in range(ng):
        c0, c1 = g * G, min(d, (g + 1) * G)
        blk = W[:, c0:c1].clone()
        s, z = minmax_grid(blk.amin(1), blk.amax(1), config.bits)  # as rtn's grid
        scale[:, g], zero[:, g] = s, z
        q[:, g, c1 - c0 :] = z.unsqueeze(1).to(torch.uint8)  # padding holds the level of 0.0, as rtn's
        err = torch.empty_like(blk)
        Ub = U[c0:c1, c0:c1]
        for j in range(c1 - c0):
            w = blk[:, j]
            level = (torch.round(w / s) + z).clamp(0, qmax)
            q[:, g, j] = level.to(torch.uint8)
            err[:, j] = (w - (level - z) * s) / Ub[j, j]
            blk[:, j + 1 :] -= err[:, j : j + 1] * Ub[j, j + 1 :].unsqueeze(0)
        W[:, c1:] -= err @ U[c0:c1, c1:]
    result = GPTQResult(q=q, scale=scale, zero=zero, in_features=d, group_size=G, bits=config.bits)
    result.rel_error = relative_error(weight, result.dequantize(torch.float64))
    result.seconds = time.perf_counter() - t0
    return result
