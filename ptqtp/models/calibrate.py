"""The model driver of the calibrated methods: calibration activations, block by block.

One forward per calibration segment captures block 0's hidden states and, for every
block, the other arguments the model passes it (masks, position embeddings: they differ
between sliding-window and full-attention blocks). Then, per block and per group of
linears that share an input, the block runs on the current states with its own captured
arguments and hooks that accumulate H = sum x x^T, each linear is quantized with its
method (``ptqtp.methods``), and the block's outputs on the quantized path become the next
block's inputs (GPTQ's ``opt.py`` driver, apart from its ``gptq.py``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import asdict

import torch
from tqdm import tqdm

from ptqtp.formats.artifact import pack_layer
from ptqtp.formats.checkpoint import BLOCK_PATTERN
from ptqtp.methods import (
    REGISTRY,
    MethodConfig,
    PT2Config,
    PTQTPGPTQConfig,
    dequantize_planes,
    method_of,
    quantize,
    relative_error,
    resolve_config,
)
from ptqtp.methods.linalg import refit_to_float_path

from .data import BBC_CALIB_TEXT, SELF_CALIB_TEXT, calibration_ids, self_generated_ids
from .hf import QuantReport, is_conv1d, layer_config, set_module, trit_module, weight_of

__all__ = ["calibrate_model", "calibrated_quantize", "decoder_blocks"]


def calibrated_quantize(
    model,
    tokenizer,
    method: str | MethodConfig,
    config: MethodConfig | None = None,
    segments: int | None = None,
    length: int | None = None,
    seed: int = 0,
    progress: bool = True,
    text: str | None = None,
    text_name: str | None = None,
    planes: dict[str, int] | None = None,
    self_generated: torch.Tensor | bool = False,
):
    """Run :func:`calibrate_model` with the method's calibration set (``Method.calibration``,
    overridable) from ``text`` (named ``text_name`` in the record; default the BBC
    calibration split), or, with ``self_generated``, from the model's own samples
    (``ptqtp.models.data.self_generated_ids``: no calibration data; pass the ids when they
    were sampled already, e.g. for a sensitivity). ``method``/``config`` as in ``quantize``;
    ``planes`` as in :func:`calibrate_model`.
    Returns ``(report, metadata)``, the metadata being the ``ptqtp.calibration`` header entry
    that records how it was calibrated."""
    config = resolve_config(method, config)
    spec = method_of(config)
    if not spec.calibrated:
        calibrated = sorted(m.name for m in REGISTRY.values() if m.calibrated)
        raise ValueError(f"calibrated methods are {calibrated}, not {spec.name!r}")
    segments = segments or spec.calibration["segments"]
    length = length or spec.calibration["length"]
    if text is not None and self_generated is not False:
        raise ValueError("give a calibration text or self-generated calibration, not both")
    if isinstance(self_generated, torch.Tensor):
        ids = self_generated
        segments, length = ids.shape
    elif self_generated:
        ids = self_generated_ids(model, tokenizer, segments, length, seed)
    else:
        ids = calibration_ids(tokenizer, segments, length, seed, text)
    report = calibrate_model(model, ids, config, progress=progress, planes=planes)
    source = SELF_CALIB_TEXT if self_generated is not False else None
    record = {
        "method": spec.name,
        "text": source or (BBC_CALIB_TEXT if text is None else (text_name or "user text")),
        "segments": segments,
        "length": length,
        "seed": seed,
        "damp": config.damp,
    }
    if isinstance(config, PT2Config):
        record["pt2"] = asdict(config)
    return report, {"ptqtp.calibration": json.dumps(record)}


def _block_linears(block: torch.nn.Module):
    """Groups of linears (and GPT-2 Conv1Ds) of one decoder block that share an input, in
    forward order; linears of unknown roles each form their own group, in module order."""
    names = [n for n, m in block.named_modules() if isinstance(m, torch.nn.Linear) or is_conv1d(m)]
    order = (("q_proj", "k_proj", "v_proj"), ("o_proj",), ("gate_proj", "up_proj"), ("down_proj",))
    groups = [[n for n in names if n.rsplit(".", 1)[-1] in stage] for stage in order]
    if not any(groups):
        return [[n] for n in names]
    rest = [n for n in names if not any(n in g for g in groups)]
    return [g for g in groups if g] + [[n] for n in rest]


def _linear_inputs(block, names, h, rest, kw) -> dict:
    """The inputs (float32, [tokens, d]) of the linears ``names`` of ``block`` on one segment."""
    got: dict = {}

    def grab(name):
        def fn(module, args, out):
            got[name] = args[0].reshape(-1, args[0].shape[-1]).to(torch.float32)

        return fn

    hooks = [block.get_submodule(n).register_forward_hook(grab(n)) for n in names]
    try:
        block(h, *rest, **kw)
    finally:
        for hk in hooks:
            hk.remove()
    return got


def decoder_blocks(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """(name, module list) of the model's decoder blocks: the ModuleList whose children are
    ``...layers.N`` / ``...h.N`` / ``...blocks.N`` (``BLOCK_PATTERN``)."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and BLOCK_PATTERN.search(f"{name}.0.") is not None:
            return name, module
    raise ValueError(f"{type(model).__name__}: no decoder block list (…layers / h / blocks) found")


def _capture_block_inputs(model, blocks, input_ids: torch.Tensor):
    """Per segment: block 0's hidden states, and for every block the other positional and
    keyword arguments the model passes it (attention masks, position embeddings, ...), from
    one forward that stops before the last block runs. Each block gets its own, so models
    whose blocks differ (sliding-window and full attention) are calibrated as they run."""

    class _Stop(Exception):
        pass

    states, per_block = [], []
    current: list = []

    def grab(b):
        def fn(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            rest = args[1:] if args else ()
            current.append((rest, {k: v for k, v in kwargs.items() if k != "hidden_states"}))
            if b == 0:
                states.append(hidden)
            if b == len(blocks) - 1:
                raise _Stop

        return fn

    handles = [blk.register_forward_pre_hook(grab(b), with_kwargs=True) for b, blk in enumerate(blocks)]
    try:
        for seq in input_ids:
            current = []
            try:
                model(seq.unsqueeze(0), use_cache=False)
            except _Stop:
                pass
            if len(current) != len(blocks):
                raise RuntimeError(f"captured the inputs of {len(current)} of {len(blocks)} blocks")
            per_block.append(current)
    finally:
        for h in handles:
            h.remove()
    return states, [[seg[b] for seg in per_block] for b in range(len(blocks))]


@torch.inference_mode()
def calibrate_model(
    model,
    input_ids: torch.Tensor,
    config: MethodConfig | None = None,
    progress: bool = True,
    planes: dict[str, int] | None = None,
):
    """Quantize every decoder-block linear with a calibrated method (``config``'s, default
    ``PTQTPGPTQConfig()``), block by block, each linear's Hessian accumulated from calibration
    activations on the quantized path. Every block is replayed with the arguments the model
    really passes it (captured once, :func:`_capture_block_inputs`). Returns a
    :class:`ptqtp.models.hf.QuantReport`; the model's linears become ``TritPlaneLinear`` (a
    uniform-grid baseline such as ``gptq4`` leaves them as linears with the dequantized weights).
    ``input_ids``: [segments, length] tokens. ``planes``: a plane count per layer name
    (mixed precision, ``ptqtp.models.allocate``) overriding the config's."""
    config = config or PTQTPGPTQConfig()
    method = method_of(config)
    if not method.calibrated:
        raise ValueError(f"calibrate_model takes a calibrated method, not {method.name!r}")
    prefix, blocks = decoder_blocks(model)
    report = QuantReport()
    t0 = time.perf_counter()
    states, inputs = _capture_block_inputs(model, blocks, input_ids)
    bar = tqdm(range(len(blocks)), desc=f"calibrated quantization ({method.name})", unit="block", disable=not progress)
    refit = bool(getattr(config, "block_refit", False))
    fp_states = list(states) if refit else None
    for b in bar:
        block = blocks[b]
        fp_block = copy.deepcopy(block) if refit else None  # the float block, before its linears change
        for group in _block_linears(block):
            H: dict = {}
            C: dict = {}
            for i, (h, (rest, kw)) in enumerate(zip(states, inputs[b])):
                xq = _linear_inputs(block, group, h, rest, kw)
                for n, x in xq.items():
                    # float32 products per segment (4x faster than float64 here), summed in float64
                    H[n] = H.get(n, 0) + (x.t() @ x).to(torch.float64)
                if refit:
                    xf = _linear_inputs(fp_block, group, fp_states[i], rest, kw)
                    for n, x in xq.items():
                        C[n] = C.get(n, 0) + (x.t() @ xf[n]).to(torch.float64)
            for n in group:
                lin = block.get_submodule(n)
                full = f"{prefix}.{b}.{n}"
                r = quantize(weight_of(lin), layer_config(config, planes, full), name=full, hessian=H[n])
                if refit:
                    w = weight_of(fp_block.get_submodule(n)).detach()
                    scales = refit_to_float_path(r.codes, r.in_features, r.group_size, H[n], C[n], w)
                    w_refit = dequantize_planes(r.codes, scales, r.group_size, r.in_features)
                    r = dataclasses.replace(r, scales=scales, rel_error=relative_error(w, w_refit))
                w_hat = r.dequantize(lin.weight.dtype)
                lin.weight.copy_(w_hat.t() if is_conv1d(lin) else w_hat)
                report.layers[full] = r
        outs = [block(h, *rest, **kw) for h, (rest, kw) in zip(states, inputs[b])]
        states = [o[0] if isinstance(o, tuple) else o for o in outs]
        if refit:
            outs = [fp_block(h, *rest, **kw) for h, (rest, kw) in zip(fp_states, inputs[b])]
            fp_states = [o[0] if isinstance(o, tuple) else o for o in outs]
    for name, r in report.layers.items():
        if not method.packable:  # a uniform-grid baseline: the linears keep the dequantized weights
            break
        lin = model.get_submodule(name)
        set_module(
            model, name, trit_module(pack_layer(r, name), r.in_features, r.group_size, lin.bias, lin.weight.device)
        )
    report.seconds = time.perf_counter() - t0
    return report
