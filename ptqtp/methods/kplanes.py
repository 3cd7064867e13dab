"""PTQTP with K = 1, 3 or 4 trit planes: the steps and the group segment that
``ptqtp.quantize_ptqtp``'s driver runs when ``config.planes`` is not 2 (K = 2 has its own).

Each group row w (G input columns) becomes w ~ sum_k a_k t_k, t_k in {-1, 0, 1}^G. The same
alternation as two planes: a ridge least-squares solve of the K scales with adaptive lambda
(condition number ||A||_F ||A^-1||_F, as for two), then the exact search of the 3^K trit
combinations per element, until no scale moves by eps.

The search is the two-plane one generalised: a group's 3^K levels v_c = sum_k a_k c_k are
sorted once, an element's level is the number of the 3^K - 1 midpoints it exceeds (a binary
search), and the Gram statistics S^T S, S^T w come from per-level counts and sums. Ties go
to the first combination in the pinned order (c_1 most significant digit, -1 < 0 < 1; for
K = 2 this is ``PAIR_C1``/``PAIR_C2``'s order), exactly as the float64 argmin would.

Initialisation is progressive, as PTQTP's planes are meant: plane k is sign(r) (0 -> +1) of
the residual r left by planes 1..k-1 at their mean-absolute scales.
"""

from __future__ import annotations

import math

import torch

__all__ = ["combinations", "solve_scales_k", "level_tables_k", "search_stats_k", "search_codes_k"]

MAX_PLANES = 4


def combinations(planes: int, device=None) -> torch.Tensor:
    """float64 [3^K, K]: every trit combination in the pinned order (c_1 most significant)."""
    idx = torch.arange(3**planes, device=device)
    digits = [(idx // 3 ** (planes - 1 - k)) % 3 - 1 for k in range(planes)]
    return torch.stack(digits, 1).to(torch.float64)


def solve_scales_k(gram: torch.Tensor, b: torch.Tensor, lam: torch.Tensor, config):
    """Ridge solve of the K scales per group from S^T S [g, K, K] and S^T w [g, K], float64.

    Returns ``(a [g, K], lam_new [g], bumped [g] bool)``: lambda grows where the condition
    number ||A||_F ||A^-1||_F of A = S^T S + lambda I reaches ``config.kappa_max``."""
    eye = torch.eye(gram.shape[1], dtype=torch.float64, device=gram.device)

    def cond(lam_):
        A = gram + lam_[:, None, None] * eye
        return A, torch.linalg.matrix_norm(A) * torch.linalg.matrix_norm(torch.linalg.inv(A))

    A, kappa = cond(lam)
    bumped = kappa >= config.kappa_max
    lam = torch.where(bumped, torch.clamp(lam * torch.sqrt(kappa / config.kappa_max), max=config.lambda_max), lam)
    A = gram + lam[:, None, None] * eye
    return torch.linalg.solve(A, b.unsqueeze(2)).squeeze(2), lam, bumped


def level_tables_k(a: torch.Tensor, combos: torch.Tensor, search_dtype: torch.dtype):
    """Per group: the 3^K - 1 sorted decision thresholds and the pinned combination of each
    sorted level (a run of equal levels maps to its first). An element exactly on a midpoint
    whose upper level's combination comes first goes up (the midpoint moves down one ulp)."""
    levels = a @ combos.t()
    levels, combo = torch.sort(levels, dim=1, stable=True)
    same = levels[:, 1:] == levels[:, :-1]
    if bool(same.any()):
        for k in range(1, levels.shape[1]):
            combo[:, k] = torch.where(same[:, k - 1], combo[:, k - 1], combo[:, k])
    mids = ((levels[:, :-1] + levels[:, 1:]) * 0.5).to(search_dtype)
    upper_first = ~same & (combo[:, 1:] < combo[:, :-1])
    mids = torch.where(upper_first, torch.nextafter(mids, torch.full_like(mids, -math.inf)), mids)
    return mids.contiguous(), combo


def _slots(w: torch.Tensor, mids: torch.Tensor) -> torch.Tensor:
    """int64 [g, width]: how many of its group's thresholds each element strictly exceeds."""
    return torch.searchsorted(mids, w.contiguous(), right=False)


def search_stats_k(w: torch.Tensor, mids: torch.Tensor, combo: torch.Tensor, combos: torch.Tensor):
    """(S^T S [g, K, K], S^T w [g, K]) of the nearest-level codes of ``w`` [g, width]."""
    idx = _slots(w, mids)
    g, L = combo.shape
    per_slot = torch.zeros(2, g, L, dtype=w.dtype, device=w.device)
    per_slot[0].scatter_add_(1, idx, torch.ones((), dtype=w.dtype, device=w.device).expand(w.shape))
    per_slot[1].scatter_add_(1, idx, w)
    per_combo = torch.zeros(2, g, L, dtype=torch.float64, device=w.device)
    per_combo.scatter_add_(2, combo.expand(2, -1, -1), per_slot.to(torch.float64))
    K = combos.shape[1]
    outer = (combos[:, :, None] * combos[:, None, :]).reshape(L, K * K)
    return (per_combo[0] @ outer).view(g, K, K), per_combo[1] @ combos


def search_codes_k(w: torch.Tensor, mids: torch.Tensor, combo: torch.Tensor, combos: torch.Tensor):
    """int8 [K, g, width]: the trits of the nearest level for every element of ``w``."""
    chosen = torch.gather(combo, 1, _slots(w, mids))
    return combos.to(torch.int8)[chosen].permute(2, 0, 1)


def _error(gram, b, a, wsq):
    quad = torch.einsum("gi,gij,gj->g", a, gram, a)
    return (wsq - 2 * (a * b).sum(1) + quad).clamp_min(0)


class _SegmentK:
    """Groups of one width (the full groups, or the tail group per row), as ``ptqtp._Segment``,
    with K planes."""

    def __init__(self, blocks: torch.Tensor, config, search_dtype: torch.dtype, planes: int):
        n, self.per_row, self.width = blocks.shape
        self.flat = blocks.reshape(-1, self.width).to(search_dtype)
        self.search_dtype, self.chunk, self.planes = search_dtype, config.chunk_groups, planes
        g, dev = self.flat.shape[0], blocks.device
        self.combos = combinations(planes, dev)
        self.a = torch.empty(g, planes, dtype=torch.float64, device=dev)
        self.lam = torch.full((g,), config.lambda_init, dtype=torch.float64, device=dev)
        self.gram = torch.empty(g, planes, planes, dtype=torch.float64, device=dev)
        self.b = torch.empty(g, planes, dtype=torch.float64, device=dev)
        self.wsq = torch.empty(g, dtype=torch.float64, device=dev)
        self.active = torch.ones(g, dtype=torch.bool, device=dev)
        for g0 in range(0, g, self.chunk):
            part = slice(g0, g0 + self.chunk)
            w = self.flat[part].to(torch.float64)
            r, cols = w.clone(), []
            for k in range(planes):  # progressive: each plane takes the residual of the ones before
                t = torch.where(r >= 0, 1.0, -1.0).to(torch.float64)
                self.a[part, k] = r.abs().mean(1)
                r -= self.a[part, k : k + 1] * t
                cols.append(t)
            S = torch.stack(cols, 2)  # [g, width, K]
            self.gram[part] = S.transpose(1, 2) @ S
            self.b[part] = (S * w.unsqueeze(2)).sum(1)
            self.wsq[part] = w.square().sum(1)
        self.err = _error(self.gram, self.b, self.a, self.wsq)
        self.a.fill_(1.0)  # as the two-plane path: the first round's change is measured from ones
        self.finite = bool(torch.isfinite(self.b).all())

    def step(self, config) -> float:
        ids = torch.nonzero(self.active).squeeze(1)
        if len(ids) == 0:
            return 0.0
        a_old = self.a[ids]
        a, lam, bumped = solve_scales_k(self.gram[ids], self.b[ids], self.lam[ids], config)
        delta = float((a - a_old).abs().max())
        self.a[ids], self.lam[ids] = a, lam
        moving = ~((a == a_old).all(1) & ~bumped)
        self.active[ids] = moving
        ids, a = ids[moving], a[moving]
        mids, combo = level_tables_k(a, self.combos, self.search_dtype)
        for i in range(0, len(ids), self.chunk):
            part = slice(i, i + self.chunk)
            gram, b = search_stats_k(self.flat[ids[part]], mids[part], combo[part], self.combos)
            self.gram[ids[part]], self.b[ids[part]] = gram, b
        self.err[ids] = _error(self.gram[ids], self.b[ids], a, self.wsq[ids])
        return delta

    def codes(self) -> torch.Tensor:
        """int8 [K, groups, width] from a last search with the final scales."""
        out = torch.empty(self.planes, *self.flat.shape, dtype=torch.int8, device=self.flat.device)
        for g0 in range(0, self.flat.shape[0], self.chunk):
            part = slice(g0, g0 + self.chunk)
            mids, combo = level_tables_k(self.a[part], self.combos, self.search_dtype)
            out[:, part] = search_codes_k(self.flat[part], mids, combo, self.combos)
        return out
