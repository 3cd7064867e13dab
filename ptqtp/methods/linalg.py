"""Linear algebra shared by the calibrated methods (GPTQ-style error feedback)."""

from __future__ import annotations

import torch

from ._common import PAIR_C1, PAIR_C2

__all__ = ["upper_inverse_cholesky", "nearest_levels", "refit_scales"]


def upper_inverse_cholesky(H: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp mean(diag H) I)^-1, float64 (dead inputs get 1 on the diagonal)."""
    H = H.to(torch.float64).clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    H += damp * torch.diag(H).mean() * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)


def nearest_levels(w: torch.Tensor, a: torch.Tensor):
    """Per row: the pinned-order pair index (first minimum) of the level nearest to w, and that level."""
    c1 = torch.tensor(PAIR_C1, dtype=a.dtype, device=a.device)
    c2 = torch.tensor(PAIR_C2, dtype=a.dtype, device=a.device)
    levels = a[:, :1] * c1 + a[:, 1:] * c2  # [n, 9]
    idx = (w.unsqueeze(1) - levels).square().argmin(1)  # argmin returns the first minimum
    return idx, levels.gather(1, idx.unsqueeze(1)).squeeze(1)


def refit_scales(target: torch.Tensor, t: torch.Tensor, H: torch.Tensor, ridge: float = 1e-8) -> torch.Tensor:
    """a [n, 2] minimising (w - T a)^T H (w - T a) per row; ``t`` is [n, width, 2], float64."""
    HT = torch.einsum("ij,njk->nik", H, t)  # [n, width, 2]
    A = torch.einsum("njk,njl->nkl", t, HT)
    b = torch.einsum("njk,nj->nk", HT, target)
    A = A + ridge * torch.diagonal(H).mean() * torch.eye(2, dtype=A.dtype, device=A.device)
    return torch.linalg.solve(A, b)
