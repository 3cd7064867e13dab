"""What every trit-plane method shares: the result type, the input checks, W_hat.

``TritPlaneResult`` holds trits [planes, n, d_pad] and per-group scales (and, for
PT^2-LLM, offsets and a column order); :func:`dequantize_planes` is the one definition of
W_hat, used by results, packed layers, ``TritPlaneLinear`` and the error budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = [
    "TritPlaneResult",
    "check_weight",
    "raise_nonfinite",
    "dequantize_planes",
    "relative_error",
    "PAIR_C1",
    "PAIR_C2",
]

# The 9 (c1, c2) pairs in the pinned tie order (-1,-1), (-1,0), ..., (1,1).
PAIR_C1 = (-1, -1, -1, 0, 0, 0, 1, 1, 1)
PAIR_C2 = (-1, 0, 1, -1, 0, 1, -1, 0, 1)


def dequantize_planes(
    trits: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    in_features: int,
    dtype: torch.dtype = torch.float32,
    offsets: torch.Tensor | None = None,
    perm: torch.Tensor | None = None,
) -> torch.Tensor:
    """W_hat (n, in_features) = sum_k a_k T_k (+ m) per group, from trits [planes, n, d_pad],
    scales [planes, n, ng] and optional offsets m [n, ng]; summed in float64, so the one
    rounding is the cast to ``dtype``. With ``perm`` the stored column j is input column
    perm[j], and W_hat comes back in input order."""
    planes, n, d_pad = trits.shape
    t = trits.to(torch.float64).view(planes, n, d_pad // group_size, group_size)
    w = (t * scales.to(torch.float64).unsqueeze(-1)).sum(0)
    if offsets is not None:
        w = w + offsets.to(torch.float64).unsqueeze(-1)
    w = w.view(n, d_pad)[:, :in_features]
    if perm is not None:
        w = torch.empty_like(w).index_copy_(1, perm.to(device=w.device, dtype=torch.long), w)
    return w.to(dtype)


@dataclass
class TritPlaneResult:
    """Trit planes with per-group scales: W_hat = sum_k diag(a_k) T_k (+ m), per group.

    Attributes
    ----------
    codes: int8 tensor [planes, n, d_pad] of trits in {-1, 0, 1}; padding columns hold 0.
    scales: float64 tensor [planes, n, ng], a_k per plane, row and group.
    offsets: float64 [n, ng] or None; the per-group offset m of PT^2-LLM.
    perm: int64 [d] or None; stored column j is input column perm[j] (PT^2-LLM's SSR).
    """

    codes: torch.Tensor
    scales: torch.Tensor
    in_features: int
    group_size: int
    method: str = "ptqtp"
    iterations: int = 0
    rel_error: float = float("nan")
    lambda_stats: dict = field(default_factory=dict)
    error_history: list = field(default_factory=list)
    seconds: float = 0.0
    offsets: torch.Tensor | None = None
    perm: torch.Tensor | None = None

    @property
    def out_features(self) -> int:
        return int(self.codes.shape[1])

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """W_hat as an (n, d) tensor of ``dtype``."""
        return dequantize_planes(
            self.codes, self.scales, self.group_size, self.in_features, dtype, self.offsets, self.perm
        )

    def info(self) -> dict:
        """The per-layer record stored in artifact metadata."""
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "group_size": self.group_size,
            "method": self.method,
            "planes": int(self.codes.shape[0]),
            "iterations": self.iterations,
            "rel_error": self.rel_error,
            **({"lambda": self.lambda_stats} if self.lambda_stats else {}),
        }


def check_weight(weight: torch.Tensor, name: str = "weight", finite: bool = True) -> None:
    """Raise ``ValueError`` naming the layer unless ``weight`` is a (finite) 2-D float tensor."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{name}: weight must be a torch.Tensor, not {type(weight).__name__}")
    if weight.dim() != 2 or weight.shape[0] == 0 or weight.shape[1] == 0:
        raise ValueError(f"{name}: weight must be a non-empty 2-D (out x in) tensor, not shape {tuple(weight.shape)}")
    if not weight.is_floating_point():
        raise TypeError(f"{name}: weight must be a floating-point tensor, not {weight.dtype}")
    if finite and not bool(torch.isfinite(weight).all()):
        raise_nonfinite(weight, name)


def raise_nonfinite(weight: torch.Tensor, name: str):
    bad = int((~torch.isfinite(weight)).sum())
    raise ValueError(f"{name}: weight has {bad} NaN/Inf values; refusing to quantize")


def relative_error(weight: torch.Tensor, w_hat: torch.Tensor) -> float:
    """||W - W_hat||_F / ||W||_F in float64 (0 for an all-zero W)."""
    w = weight.detach().to(torch.float64)
    den = float(torch.linalg.vector_norm(w))
    return float(torch.linalg.vector_norm(w - w_hat.to(w.device, torch.float64))) / den if den > 0 else 0.0
