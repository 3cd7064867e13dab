"""The model driver of the calibrated methods: calibration activations, block by block.

For each decoder block, the inputs of block 0 are captured once (hidden states and the
keyword arguments the model passes); then, per group of linears that share an input, the
block runs on the current states with hooks that accumulate H = sum x x^T, each linear is
quantized with its method (``ptqtp.methods``), and the block's outputs on the quantized
path become the next block's inputs (GPTQ's ``opt.py`` driver, apart from its ``gptq.py``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import torch
from tqdm import tqdm

from ptqtp.formats.artifact import pack_layer
from ptqtp.methods import REGISTRY, MethodConfig, PT2Config, PTQTPGPTQConfig, method_of, quantize, resolve_config

from .data import BBC_CALIB_TEXT, calibration_ids
from .hf import QuantReport, set_module, trit_module

__all__ = ["calibrate_model", "calibrated_quantize"]


def calibrated_quantize(model, tokenizer, method: str | MethodConfig, config: MethodConfig | None = None,
                        segments: int | None = None, length: int | None = None, seed: int = 0,
                        progress: bool = True):
    """Run :func:`calibrate_model` with the method's calibration set (``Method.calibration``,
    overridable) from the BBC calibration split. ``method``/``config`` as in ``quantize``.
    Returns ``(report, metadata)``, the metadata being the ``ptqtp.calibration`` header entry
    that records how it was calibrated."""
    config = resolve_config(method, config)
    spec = method_of(config)
    if not spec.calibrated:
        calibrated = sorted(m.name for m in REGISTRY.values() if m.calibrated)
        raise ValueError(f"calibrated methods are {calibrated}, not {spec.name!r}")
    segments = segments or spec.calibration["segments"]
    length = length or spec.calibration["length"]
    report = calibrate_model(model, calibration_ids(tokenizer, segments, length, seed), config, progress=progress)
    record = {"method": spec.name, "text": BBC_CALIB_TEXT, "segments": segments, "length": length, "seed": seed,
              "damp": config.damp}
    if isinstance(config, PT2Config):
        record["pt2"] = asdict(config)
    return report, {"ptqtp.calibration": json.dumps(record)}


def _block_linears(block: torch.nn.Module):
    """Groups of linears of one decoder block that share an input, in forward order."""
    names = [n for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)]
    order = (("q_proj", "k_proj", "v_proj"), ("o_proj",), ("gate_proj", "up_proj"), ("down_proj",))
    groups = [[n for n in names if n.rsplit(".", 1)[-1] in stage] for stage in order]
    rest = [n for n in names if not any(n in g for g in groups)]
    return [g for g in groups if g] + [[n] for n in rest]


@torch.inference_mode()
def calibrate_model(model, input_ids: torch.Tensor, config: MethodConfig | None = None, progress: bool = True):
    """Quantize every decoder-block linear with a calibrated method (``config``'s, default
    ``PTQTPGPTQConfig()``), block by block, each linear's Hessian accumulated from calibration
    activations on the quantized path. Returns a :class:`ptqtp.models.hf.QuantReport`; the
    model's linears become ``TritPlaneLinear``. ``input_ids``: [segments, length] tokens."""
    config = config or PTQTPGPTQConfig()
    method = method_of(config)
    if not method.calibrated:
        raise ValueError(f"calibrate_model takes a calibrated method, not {method.name!r}")
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
    bar = tqdm(range(len(blocks)), desc=f"calibrated quantization ({method.name})", unit="block", disable=not progress)
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
                r = quantize(lin.weight, config, name=full, hessian=H[n])
                lin.weight.copy_(r.dequantize(lin.weight.dtype))
                report.layers[full] = r
        outs = [block(h, **kw) for h, kw in zip(states, kwargs)]
        states = [o[0] if isinstance(o, tuple) else o for o in outs]
    for name, r in report.layers.items():
        lin = model.get_submodule(name)
        set_module(model, name, trit_module(pack_layer(r, name), r.in_features, r.group_size, lin.bias,
                                              lin.weight.device))
    report.seconds = time.perf_counter() - t0
    return report
