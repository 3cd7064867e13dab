"""Calibrated trit planes: GPTQ-style error feedback on PTQTP's grid (issue 10; K planes, issue 29).

Same format as PTQTP (K trit planes, default two, K scales per row and group), so the artifact,
golden model, RTL, kernels and HIL path take it unchanged. Per linear, with H = X^T X of
its calibration inputs:

1. damp H (0.01 mean diag), upper Cholesky factor U of H^-1 (GPTQ);
2. per group of G columns: fit PTQTP on the current, error-updated block to get each
   row's 3^K levels; quantize column by column to the nearest level and push the scaled
   error into the block's later columns;
3. refit (default; optional) the group's K scales by activation-aware ridge least squares
   (min ||(w - sum_k a_k t_k) X_g||, float64); push the remaining error into later groups.

The model driver that feeds it calibration data is ``ptqtp.models.calibrate``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from ._common import TritPlaneResult, check_weight, dequantize_planes, relative_error
from ._config import MethodConfig
from .kplanes import combinations
from .linalg import nearest_levels, refit_scales, upper_inverse_cholesky
from .ptqtp import PTQTPConfig, quantize_ptqtp

__all__ = ["PTQTPGPTQConfig", "gptq_trit_planes"]


@dataclass(frozen=True)
class PTQTPGPTQConfig(MethodConfig):
    """``ptqtp-gptq``: the PTQTP fit per group (``max_iters``, ``eps``, ``search_dtype``) with
    GPTQ error feedback (Hessian damping ``damp``) and the activation-aware scale ``refit``;
    ``planes`` K = 1..4 (``ptqtp-gptq-kK`` for K != 2); ``block_refit``: after each linear,
    refit all its scales at once to the float model's outputs from the quantized path's
    inputs (``linalg.refit_to_float_path``; the model driver ``ptqtp.models.calibrate`` runs
    the float block beside the quantized one for it)."""

    METHOD: ClassVar[str] = "ptqtp-gptq"

    max_iters: int = 50
    eps: float = 1e-4
    search_dtype: str = "float32"
    damp: float = 0.01
    refit: bool = True
    planes: int = 2
    block_refit: bool = False

    @property
    def method(self) -> str:
        return self.METHOD if self.planes == 2 else f"{self.METHOD}-k{self.planes}"

    def __post_init__(self) -> None:
        self.ptqtp_config()  # validates the PTQTP fields
        if not 0 <= self.damp < float("inf"):
            raise ValueError(f"damp must be >= 0 and finite, not {self.damp!r}")
        if not isinstance(self.refit, bool):
            raise ValueError(f"refit must be a bool, not {self.refit!r}")
        if not isinstance(self.block_refit, bool):
            raise ValueError(f"block_refit must be a bool, not {self.block_refit!r}")

    def ptqtp_config(self) -> PTQTPConfig:
        """The PTQTP fit each group starts from."""
        return PTQTPConfig(
            group_size=self.group_size,
            max_iters=self.max_iters,
            eps=self.eps,
            search_dtype=self.search_dtype,
            planes=self.planes,
        )


def gptq_trit_planes(
    weight: torch.Tensor, H: torch.Tensor, config: PTQTPGPTQConfig | None = None, name: str = "weight"
) -> TritPlaneResult:
    """Quantize ``weight`` (n x d) with GPTQ error feedback onto ``config.planes`` trit planes (module doc).

    ``config.refit`` (step 3): on SmolLM2 it took BBC perplexity from 49.98 to 39.66; on correlated
    Gaussian inputs it is slightly worse (0.0970 vs 0.0937 relative output error), so it
    stays an option.
    """
    config = config or PTQTPGPTQConfig()
    fit_config = config.ptqtp_config()
    check_weight(weight, name)
    if H.shape != (weight.shape[1], weight.shape[1]):
        raise ValueError(f"{name}: H must be {weight.shape[1]} x {weight.shape[1]}, not {tuple(H.shape)}")
    t0 = time.perf_counter()
    n, d = weight.shape
    G = config.group_size
    ng = -(-d // G)
    W = weight.detach().to(torch.float64).clone()
    W[:, torch.diag(H) == 0] = 0
    Hd = H.to(torch.float64)
    U = upper_inverse_cholesky(Hd, config.damp)
    K = config.planes
    combos = combinations(K, W.device).to(torch.int64)  # [3^K, K] in the pinned order
    codes = torch.zeros(K, n, ng * G, dtype=torch.int8, device=W.device)
    scales = torch.zeros(K, n, ng, dtype=torch.float64, device=W.device)
    iterations = 0
    for g in range(ng):
        c0, c1 = g * G, min(d, (g + 1) * G)
        entering = W[:, c0:c1].clone()  # the group as the error-updated matrix hands it over
        blk = entering.clone()
        fit = quantize_ptqtp(blk, fit_config, name=f"{name}[group {g}]")
        iterations += fit.iterations
        a = fit.scales[:, :, 0].t().contiguous()  # [n, K]
        at_turn = torch.empty_like(blk)
        pair = torch.empty(n, c1 - c0, dtype=torch.long, device=W.device)
        Ub = U[c0:c1, c0:c1]
        for j in range(c1 - c0):
            w = blk[:, j]
            at_turn[:, j] = w
            pair[:, j], q = nearest_levels(w, a)
            blk[:, j + 1 :] -= ((w - q) / Ub[j, j]).unsqueeze(1) * Ub[j, j + 1 :].unsqueeze(0)
        t = combos[pair].to(torch.float64)  # [n, width, K]
        if config.refit:
            a = refit_scales(entering, t, Hd[c0:c1, c0:c1])
        q = (t * a.unsqueeze(1)).sum(2)
        err = (at_turn - q) / torch.diag(Ub).unsqueeze(0)
        W[:, c1:] -= err @ U[c0:c1, c1:]
        codes[:, :, c0:c1] = t.permute(2, 0, 1).to(torch.int8)
        scales[:, :, g] = a.t()
    rel = relative_error(weight, dequantize_planes(codes, scales, G, d, torch.float64))
    return TritPlaneResult(
        codes=codes,
        scales=scales,
        in_features=d,
        group_size=G,
        method=config.method,
        iterations=iterations,
        rel_error=rel,
        seconds=time.perf_counter() - t0,
    )
