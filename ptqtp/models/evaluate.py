"""Perplexity, and a comparison of methods on one model and text."""

from __future__ import annotations

import copy
import math
import time

import torch
from tqdm import tqdm

from ptqtp.methods import MethodConfig, PTQTPConfig, get_method, quantize, resolve_config

from .calibrate import calibrated_quantize
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
) -> list[dict]:
    """One row per method: perplexity, bits/weight, quantization time, mean layer error.
    ``config`` sets the group size of every method (its own parameters where it is that
    method's config). ``rotate``: a residual rotation (``ptqtp.models.rotate.rotation``'s
    spec; an int is a random one's seed) fused into every model first (the FP row then
    shows that it keeps the function). ``mixed``: ``ptqtp.models.allocate.mixed_planes``'s
    keyword arguments (``bits_per_weight``, ``packing``, ``choices``, ``fisher``); the
    trit-plane methods then take a plane count per layer, and their row's bits are the
    allocation's."""
    config = config or PTQTPConfig()
    rows = []
    for method in methods:
        m = copy.deepcopy(model)
        if rotate is not None:
            from .rotate import rotate_residual

            rotate_residual(m, seed=rotate)
        row = {"method": method, "rotate": rotate}
        if method == "fp":
            row.update(bits=32.0, bound=32.0, seconds=0.0, layer_error=0.0, weights=0)
        else:
            spec = get_method(method)
            planes, alloc = None, None
            cfg = resolve_config(method, config)
            if mixed and hasattr(cfg, "planes"):
                from .allocate import mixed_planes

                fit = cfg.ptqtp_config() if hasattr(cfg, "ptqtp_config") else cfg
                alloc, _ = mixed_planes(m, tokenizer, fit, progress=progress, **mixed)
                planes = alloc.planes
            if spec.calibrated:
                rep, _ = calibrated_quantize(m, tokenizer, method, config, progress=progress, planes=planes)
            elif spec.packable:
                rep = quantize_model(m, method, config, progress=progress, planes=planes)
            else:
                rep = fake_quantize_model(m, method, config)
            bits, bound = spec.bits_per_weight(config.group_size)
            if alloc is not None:
                bits = bound = alloc.bits_per_weight
                row["planes"] = alloc.planes
            row.update(bits=bits, bound=bound, seconds=rep.seconds, layer_error=rep.mean_rel_error, weights=rep.weights)
        row["perplexity"] = perplexity(m, tokenizer, text, context, max_tokens)
        rows.append(row)
        if progress:
            print(f"[eval] {method}: ppl {row['perplexity']:.2f}", flush=True)
        del m
    return rows
