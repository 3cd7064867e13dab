"""Linear algebra shared by the calibrated methods (GPTQ-style error feedback)."""

from __future__ import annotations

import torch

from .kplanes import combinations

__all__ = ["upper_inverse_cholesky", "nearest_levels", "refit_scales", "refit_to_float_path"]


def upper_inverse_cholesky(H: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp mean(diag H) I)^-1, float64 (dead inputs get 1 on the diagonal)."""
    H = H.to(torch.float64).clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    H += damp * torch.diag(H).mean() * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)


def nearest_levels(w: torch.Tensor, a: torch.Tensor):
    """Per row: the index in the pinned order (``kplanes.combinations``; for K = 2 the pair
    order ``PAIR_C1``/``PAIR_C2``) of the level nearest to w (first minimum), and that level.
    ``a`` is [n, K]."""
    levels = a @ combinations(a.shape[1], a.device).to(a.dtype).t()  # [n, 3^K]
    idx = (w.unsqueeze(1) - levels).square().argmin(1)  # argmin returns the first minimum
    return idx, levels.gather(1, idx.unsqueeze(1)).squeeze(1)


def refit_scales(target: torch.Tensor, t: torch.Tensor, H: torch.Tensor, ridge: float = 1e-8) -> torch.Tensor:
    """a [n, K] minimising (w - T a)^T H (w - T a) per row; ``t`` is [n, width, K], float64."""
    HT = torch.einsum("ij,njk->nik", H, t)  # [n, width, 2]
    A = torch.einsum("njk,njl->nkl", t, HT)
    b = torch.einsum("njk,nj->nk", HT, target)
    A = A + ridge * torch.diagonal(H).mean() * torch.eye(t.shape[2], dtype=A.dtype, device=A.device)
    return torch.linalg.solve(A, b)


def refit_to_float_path(
    codes: torch.Tensor,
    d: int,
    group_size: int,
    Hq: torch.Tensor,
    C: torch.Tensor,
    W: torch.Tensor,
    ridge: float = 1e-6,
) -> torch.Tensor:
    """Every scale of a layer at once, trits fixed: per row r, the a [K, ng] minimising
    sum_t (w_hat_r(a) . xq_t - w_r . xf_t)^2, where xq are the layer's inputs on the quantized
    path and xf the float model's at the same tokens (block reconstruction, issue 29).

    ``codes`` int8 [K, n, d_pad]; ``Hq`` = sum xq xq^T and ``C`` = sum xq xf^T ([d, d]);
    ``W`` [n, d] the float weights. Normal equations per row: M a = c with
    M[(k,g),(k',g')] = t_kg^T Hq[g, g'] t_k'g' and c[(k,g)] = t_kg^T (C w_r)[g], plus a ridge of
    ``ridge`` x mean diag(M). Returns float64 scales [K, n, ng]."""
    K, n, d_pad = codes.shape
    G, ng = group_size, d_pad // group_size
    T = codes.to(torch.float64)
    T[:, :, d:] = 0
    Hp = torch.zeros(d_pad, d_pad, dtype=torch.float64, device=T.device)
    Hp[:d, :d] = Hq.to(torch.float64)
    Cw = torch.zeros(n, d_pad, dtype=torch.float64, device=T.device)
    Cw[:, :d] = W.to(torch.float64) @ C.to(torch.float64).t()  # (C w_r)_i = sum_j C[i, j] w_r[j]
    Tg = T.view(K, n, ng, G)
    V = torch.einsum("knge,gef->kngf", Tg, Hp.view(ng, G, d_pad))  # t_kg^T Hq[g, :]
    M = torch.einsum("kngjf,lnjf->nkglj", V.view(K, n, ng, ng, G), Tg).reshape(n, K * ng, K * ng)
    c = torch.einsum("kngf,ngf->nkg", Tg, Cw.view(n, ng, G)).reshape(n, K * ng)
    diag = torch.diagonal(M, dim1=1, dim2=2)
    lam = ridge * diag.mean(1).clamp_min(1e-30)
    M = M + torch.diag_embed(lam.unsqueeze(1).expand(-1, K * ng) + (diag == 0).to(torch.float64))
    a = torch.linalg.solve(M, c.unsqueeze(2)).squeeze(2)
    return a.view(n, K, ng).permute(1, 0, 2).contiguous()
