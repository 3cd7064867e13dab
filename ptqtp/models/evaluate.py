"""Perplexity, and a comparison of methods on one model and text."""

from __future__ import annotations

import copy
import dataclasses
import math
import time

import torch
from tqdm import tqdm

from ptqtp.methods import MethodConfig, PTQTPConfig, get_method, quantize, resolve_config

from .calibrate import calibrated_quantize
from .data import SELF_CALIB_TEXT, self_generated_ids
from .hf import QuantReport, is_conv1d, quantizable_linears, quantize_model, weight_of

__all__ = ["perplexity", "fake_quantize_model", "compare_methods"]


@torch.inference_mode()
def perplexity(
    model, tokenizer, text: str, context: int | None = None, max_tokens: int = 8192, progress: bool = False
) -> float:
    """exp(mean NLL) over non-overlapping windows of ``context`` tokens (default: the model's
    maximum, at most 2048) of the first ``max_tokens`` tokens of ``text``."""
    limit = getattr(model.config, "max_position_embeddings", 2048) or 2048
    context = min(context or limit, limit, 2048)
    ids = tokenizer(text, return_tensors="pt").input_ids[0][:max_tokens]
    if len(ids) < 2:
        raise ValueError("the text has fewer than 2 tokens")
    nll, count = 0.0, 0
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(ids) - 1, context), desc="perplexity", unit="window", disable=not progress):
        window = ids[start : start + context].unsqueeze(0).to(device)
        if window.shape[1] < 2:
            break
        logits = model(window).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], window[0, 1:], reduction="sum")
        nll += float(loss)
        count += window.shape[1] - 1
    return math.exp(nll / count)


def fake_quantize_model(model, method: str | MethodConfig, config: MethodConfig | None = None, progress: bool = False):
    """Replace block linear weights by their dequantization in place (evaluation only, e.g. RTN)."""
    config = resolve_config(method, config)
    report = QuantReport()
    t0 = time.perf_counter()
    for name, module in quantizable_linears(model):
        w = weight_of(module).detach()
        r = quantize(w, config, name=name)
        w_hat = r.dequantize(module.weight.dtype)
        module.weight.data.copy_(w_hat.t() if is_conv1d(module) else w_hat)
        report.layers[name] = r
    report.seconds = time.perf_counter() - t0
    return report


def compare_methods(
    model,
    tokenizer,
    text: str,
    methods=("fp", "ptqtp", "ternary", "rtn2", "rtn3", "rtn4"),
    config=None,
    context: int = 1024,
    max_tokens: int = 8192,
    progress: bool = True,
    rotate: int | str | None = None,
    mixed: dict | None = None,
    overrides: dict | None = None,
    online: bool = False,
    self_calibrate: bool = False,
) -> list[dict]:
    """One row per method: perplexity, bits/weight, quantization time, mean layer error.
    ``config`` sets the group size of every method (its own parameters where it is that
    method's config). ``rotate``: a residual rotation (``ptqtp.models.rotate.rotation``'s
    spec; an int is a random one's seed) fused into every model first (the FP row then
    shows that it keeps the function). ``mixed``: ``{"bits_per_weight": B or [B, ...],
    "packing", "choices", "fisher"}``: each trit-plane method's sensitivities are measured
    once (``ptqtp.models.allocate.Sensitivity``), then it runs at every budget (rows
    ``METHOD@B``) with a plane count per layer; the row's bits are the allocation's and its
    time includes the measurement. ``overrides``: config fields set on every method whose config has them
    (e.g. ``{"block_refit": True}``). ``online``: an online Hadamard rotation of every
    down_proj's input (``ptqtp.models.rotate.online_hadamard``). ``self_calibrate``: the
    calibrated methods and the sensitivities use the FP model's own samples
    (``ptqtp.models.data.self_generated_ids``, drawn once, timed into each such row) instead
    of the BBC calibration split: no calibration data."""
    config = config or PTQTPConfig()
    rotated = copy.deepcopy(model)
    if rotate is not None:
        from .rotate import rotate_residual

        rotate_residual(rotated, seed=rotate)
    if online:
        from .rotate import online_hadamard

        online_hadamard(rotated)
    own_ids, own_s = None, 0.0
    if self_calibrate:
        t0 = time.perf_counter()
        own_ids = self_generated_ids(rotated, tokenizer)
        own_s = time.perf_counter() - t0
        if progress:
            print(f"[eval] self-generated calibration: {tuple(own_ids.shape)} tokens in {own_s:.1f} s", flush=True)
    budgets = mixed.get("bits_per_weight") if mixed else None
    budgets = [budgets] if isinstance(budgets, (int, float)) else budgets
    rows = []

    def finish(m, row):
        row["perplexity"] = perplexity(m, tokenizer, text, context, max_tokens)
        rows.append(row)
        if progress:
            print(f"[eval] {row['method']}: ppl {row['perplexity']:.2f}", flush=True)

    for method in methods:
        if method == "fp":
            finish(
                copy.deepcopy(rotated),
                {
                    "method": method,
                    "rotate": rotate,
                    "bits": 32.0,
                    "bound": 32.0,
                    "seconds": 0.0,
                    "layer_error": 0.0,
                    "weights": 0,
                },
            )
            continue
        spec = get_method(method)
        cfg = resolve_config(method, config)
        fields = {f.name for f in dataclasses.fields(cfg)}
        cfg = dataclasses.replace(cfg, **{k: v for k, v in (overrides or {}).items() if k in fields})
        runs: list = [(method, None, 0.0)]
        if budgets and hasattr(cfg, "planes"):
            from .allocate import PLANE_CHOICES, Sensitivity

            t0 = time.perf_counter()
            sens = Sensitivity.measure(
                rotated,
                tokenizer,
                cfg,
                mixed.get("choices", PLANE_CHOICES),
                mixed.get("fisher", True),
                progress=progress,
                ids=own_ids,
                source=SELF_CALIB_TEXT if self_calibrate else None,
            )
            measured = time.perf_counter() - t0 + own_s
            runs = [(f"{method}@{b:g}", sens.allocate(b, mixed.get("packing", "base3"))[0], measured) for b in budgets]
        for name, alloc, extra_s in runs:
            m = copy.deepcopy(rotated)
            planes = None if alloc is None else alloc.planes
            if spec.calibrated:
                own = False if own_ids is None else own_ids
                rep, _ = calibrated_quantize(m, tokenizer, cfg, progress=progress, planes=planes, self_generated=own)
                extra_s += own_s if alloc is None else 0.0  # the sampling, once per row
            elif spec.packable:
                rep = quantize_model(m, cfg, progress=progress, planes=planes)
            else:
                rep = fake_quantize_model(m, cfg)
            bits, bound = spec.bits_per_weight(config.group_size)
            row = {"method": name, "rotate": rotate}
            if alloc is not None:
                bits = bound = alloc.bits_per_weight
                row.update(planes=alloc.planes, predicted_loss_increase=alloc.predicted)
            row.update(
                bits=bits,
                bound=bound,
                seconds=rep.seconds + extra_s,
                layer_error=rep.mean_rel_error,
                weights=rep.weights,
            )
            finish(m, row)
            del m
    return rows
