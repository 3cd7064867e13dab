"""PT^2-LLM (arXiv 2510.03267): one asymmetric ternary plane per row and block, W ~ a T + m.

As released by its authors (issue 9), per row and block of G input columns:

- ITF (Iterative Ternary Fitting): init m = mean w, D = 0.75 mean|w - m|, T by threshold,
  a = sum T (w - m) / sum |T|; then up to ``max_rounds`` rounds of a row-wise least-squares
  fit of (a, m) followed by T = argmin_t |w - (m + a t)| (ties -1, 0, +1), until T stops
  changing. Data-free; ``pt2_itf`` on a whole weight is ``quantize(w, "pt2-itf")``.
- AGA (Activation-aware Grid Alignment): T frozen, (a, m) re-solved per row against the
  block's input covariance C (min ||(w - a t - m) X||, 2x2 normal equations, float64).
- GPTQ-style error propagation across blocks (damped inverse Hessian), each block
  ternarised jointly from the error-updated weights.
- SSR (Structural Similarity-based Reordering): blocks are the G not-yet-quantized columns
  most similar (cosine) to the mean unit column of the remaining ones. The permutation is
  stored as ``tp_perm`` and applied to activations (x_perm = x[:, perm]).

Scope notes (docs/SPEC.md): the SSR order is computed once from the original weights
(so one Cholesky factor serves the whole layer); GPTAQ's asymmetric term is not implemented.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from ._common import TritPlaneResult, check_weight, relative_error
from ._config import MethodConfig, check_positive_int
from .linalg import upper_inverse_cholesky

__all__ = ["PT2ITFConfig", "PT2Config", "itf", "aga", "ssr_order", "pt2_itf", "pt2_calibrated"]


@dataclass(frozen=True)
class PT2ITFConfig(MethodConfig):
    """``pt2-itf``, PT^2-LLM's data-free ternary fit (the authors' defaults).

    Parameters
    ----------
    group_size: block width G (input columns per (a, m) pair).
    max_rounds: the most ITF rounds.
    threshold: the init's D = threshold * mean |w - m|.
    """

    METHOD: ClassVar[str] = "pt2-itf"

    max_rounds: int = 100
    threshold: float = 0.75

    def __post_init__(self):
        super().__post_init__()
        check_positive_int("max_rounds", self.max_rounds)
        if not 0 < self.threshold < float("inf"):
            raise ValueError(f"threshold must be positive and finite, not {self.threshold!r}")


@dataclass(frozen=True)
class PT2Config(PT2ITFConfig):
    """``pt2``, PT^2-LLM with calibration: ITF plus (the authors' defaults)

    Parameters
    ----------
    damp: Hessian damping, a fraction of mean diag H.
    aga: run Activation-aware Grid Alignment.
    ssr: run Structural Similarity-based Reordering (except on ``ssr_skip`` layers).
    ssr_skip: layer-name suffixes SSR skips (the authors skip down projections).
    """

    METHOD: ClassVar[str] = "pt2"

    damp: float = 0.01
    aga: bool = True
    ssr: bool = True
    ssr_skip: tuple = ("down_proj",)

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.damp < float("inf"):
            raise ValueError(f"damp must be >= 0 and finite, not {self.damp!r}")


def _fit(w: torch.Tensor, t: torch.Tensor, a: torch.Tensor, count: float):
    """Row-wise least squares of w ~ a t + m; rows with constant t keep their a (den = 0)."""
    st, stt, sw, stw = t.sum(1), (t * t).sum(1), w.sum(1), (t * w).sum(1)
    den = stt - st * st / count
    a = torch.where(den > 0, (stw - st * sw / count) / torch.where(den > 0, den, 1.0), a)
    return a, (sw - a * st) / count


def _nearest(w: torch.Tensor, a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """argmin over t in (-1, 0, 1) of |w - (m + a t)|, the first of equal errors."""
    levels = torch.stack((m - a, m, m + a), dim=-1)  # [rows, 3]
    err = (w.unsqueeze(-1) - levels.unsqueeze(1)).abs()  # [rows, cols, 3]
    return err.argmin(-1).to(torch.float64) - 1


def itf(w: torch.Tensor, max_rounds: int = 100, threshold: float = 0.75):
    """ITF on the rows of ``w`` [rows, cols] (one block each), float64.

    Returns ``(t float64 [rows, cols] in {-1, 0, 1}, a [rows], m [rows], rounds)``; rounds
    counts least-squares fits until no row's T changed (a row whose T is fixed stays fixed).
    """
    w = w.to(torch.float64)
    count = float(w.shape[1])
    m = w.mean(1)
    wc = w - m[:, None]
    D = threshold * wc.abs().mean(1, keepdim=True)
    t = (wc > D).to(torch.float64) - (wc < -D).to(torch.float64)
    nz = t.abs().sum(1)
    a = torch.where(nz > 0, (t * wc).sum(1) / nz.clamp(min=1), torch.zeros_like(m))
    active = torch.arange(w.shape[0], device=w.device)
    rounds = 0
    for rounds in range(1, max_rounds + 1):  # noqa: B007 - returned: the rounds taken
        wa, ta = w[active], t[active]
        a_new, m_new = _fit(wa, ta, a[active], count)
        a[active], m[active] = a_new, m_new
        t_new = _nearest(wa, a_new, m_new)
        changed = (t_new != ta).any(1)
        t[active] = t_new
        if not bool(changed.any()):
            break
        active = active[changed]
    else:  # out of rounds: the rows whose T still moved get (a, m) fitted to their last T
        a[active], m[active] = _fit(w[active], t[active], a[active], count)
    return t, a, m, rounds


def aga(w: torch.Tensor, t: torch.Tensor, a: torch.Tensor, m: torch.Tensor, C: torch.Tensor):
    """(a, m) per row minimising (w - a t - m)^T C (w - a t - m), float64; rows whose 2x2
    system is singular keep the given a, m."""
    w, t, C = w.to(torch.float64), t.to(torch.float64), C.to(torch.float64)
    tC = t @ C
    c1 = C.sum(0)
    A11, A12, A22 = (tC * t).sum(1), tC.sum(1), c1.sum()
    b1, b2 = (tC * w).sum(1), w @ c1
    det = A11 * A22 - A12 * A12
    ok = det > 1e-12 * (A11 * A22).abs()
    safe = torch.where(ok, det, 1.0)
    return torch.where(ok, (A22 * b1 - A12 * b2) / safe, a), torch.where(ok, (A11 * b2 - A12 * b1) / safe, m)


def ssr_order(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """SSR column order (int64 [d]): repeatedly the G remaining columns with the highest cosine
    to the mean unit column of the remaining ones (ascending index within a block)."""
    W = weight.detach().to(torch.float64)
    norms = torch.linalg.norm(W, dim=0)
    u = W / torch.where(norms > 0, norms, 1.0)
    left = torch.ones(W.shape[1], dtype=torch.bool, device=W.device)
    total = u.sum(1)
    order = []
    while bool(left.any()):
        idx = torch.nonzero(left).squeeze(1)
        score = total @ u[:, idx]  # cosine up to the common factor 1 / ||total||
        take = idx[torch.sort(torch.argsort(score, descending=True, stable=True)[:group_size]).values]
        order.append(take)
        left[take] = False
        total = total - u[:, take].sum(1)
    return torch.cat(order)


def _result(codes, a, m, d, G, perm, rounds, weight, seconds, method) -> TritPlaneResult:
    r = TritPlaneResult(
        codes=codes,
        scales=a.unsqueeze(0),
        offsets=m,
        perm=perm,
        in_features=d,
        group_size=G,
        method=method,
        iterations=rounds,
    )
    r.rel_error = relative_error(weight, r.dequantize(torch.float64))
    r.seconds = seconds
    return r


def _blocks(d: int, G: int):
    return [(c0, min(d, c0 + G)) for c0 in range(0, d, G)]


def pt2_itf(weight: torch.Tensor, config: PT2ITFConfig | None = None, name: str = "weight") -> TritPlaneResult:
    """Data-free PT^2 (method ``pt2-itf``): ITF on every row and block (no calibration, no reordering)."""
    config = config or PT2ITFConfig()
    check_weight(weight, name)
    t0 = time.perf_counter()
    n, d = weight.shape
    G = config.group_size
    ng = -(-d // G)
    W = weight.detach().to(torch.float64)
    codes = torch.zeros(1, n, ng * G, dtype=torch.int8, device=W.device)
    a = torch.zeros(n, ng, dtype=torch.float64, device=W.device)
    m = torch.zeros_like(a)
    full = d // G
    rounds = 0
    parts = [(0, full, W[:, : full * G].reshape(n * full, G))] if full else []
    if d % G:
        parts.append((full, ng, W[:, full * G :]))
    for g0, g1, blk in parts:
        t, ab, mb, r = itf(blk, config.max_rounds, config.threshold)
        rounds = max(rounds, r)
        k = g1 - g0
        codes[0, :, g0 * G : g0 * G + t.shape[1] * k] = t.reshape(n, -1).to(torch.int8)
        a[:, g0:g1], m[:, g0:g1] = ab.reshape(n, k), mb.reshape(n, k)
    return _result(codes, a, m, d, G, None, rounds, weight, time.perf_counter() - t0, "pt2-itf")


def pt2_calibrated(
    weight: torch.Tensor,
    H: torch.Tensor,
    config: PT2Config | None = None,
    reorder: bool | None = None,
    name: str = "weight",
) -> TritPlaneResult:
    """PT^2 with calibration: SSR order, ITF + AGA per block, GPTQ error propagation.

    ``H``: d x d input second moments (sum of x x^T; any positive scale). ``reorder``
    overrides ``config.ssr``; by default SSR runs unless ``name`` ends with one of
    ``config.ssr_skip`` (the authors skip down projections).
    """
    config = config or PT2Config()
    check_weight(weight, name)
    n, d = weight.shape
    if H.shape != (d, d):
        raise ValueError(f"{name}: H must be {d} x {d}, not {tuple(H.shape)}")
    if not bool(torch.isfinite(H).all()):
        raise ValueError(f"{name}: the calibration Hessian has NaN/Inf values")
    t0 = time.perf_counter()
    G = config.group_size
    ng = -(-d // G)
    if reorder is None:
        reorder = config.ssr and not name.endswith(tuple(config.ssr_skip))
    perm = ssr_order(weight, G) if reorder else None
    W = weight.detach().to(torch.float64).clone()
    Hd = H.to(torch.float64)
    if perm is not None:
        W, Hd = W[:, perm], Hd[perm][:, perm]
    W[:, torch.diag(Hd) == 0] = 0
    U = upper_inverse_cholesky(Hd, config.damp)
    codes = torch.zeros(1, n, ng * G, dtype=torch.int8, device=W.device)
    a = torch.zeros(n, ng, dtype=torch.float64, device=W.device)
    m = torch.zeros_like(a)
    rounds = 0
    for g, (c0, c1) in enumerate(_blocks(d, G)):
        blk = W[:, c0:c1]
        t, ab, mb, r = itf(blk, config.max_rounds, config.threshold)
        rounds = max(rounds, r)
        if config.aga:
            ab, mb = aga(blk, t, ab, mb, Hd[c0:c1, c0:c1])
        E = blk - (ab[:, None] * t + mb[:, None])
        # GPTQ's column-by-column updates with the block's codes fixed, in one triangular solve
        err = torch.linalg.solve_triangular(U[c0:c1, c0:c1], E, upper=True, left=False)
        W[:, c1:] -= err @ U[c0:c1, c1:]
        codes[0, :, c0:c1] = t.to(torch.int8)
        a[:, g], m[:, g] = ab, mb
    return _result(codes, a, m, d, G, perm, rounds, weight, time.perf_counter() - t0, "pt2")
