"""The main job: the whole toolkit on the shipped model, one report (Markdown and JSON).

quantize SmolLM2 -> artifact -> model image for the engine -> engine Verilog + synthesis
(cached by hash, overlapping the steps after it) -> golden / Triton / engine RTL bit for
bit on one layer's real activations -> perplexity with every linear on the golden model
(the RTL's arithmetic) -> every linear on ONE engine simulation for a token, logits bit for
bit with golden. Each step's seconds go to the report: where the time went.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ptqtp.formats.artifact import load_artifact
from ptqtp.golden import GoldenLayer, IntConfig
from ptqtp.hdl.engine_model import EngineParams
from ptqtp.methods import PTQTPConfig
from ptqtp.models.data import bbc_text, default_model
from ptqtp.models.evaluate import perplexity
from ptqtp.models.hf import load_quantized, quantize_model, save_quantized
from ptqtp.runtime.backends import GoldenBackend
from ptqtp.runtime.compare import compare_layer
from ptqtp.runtime.hil import attach_backend, cycles_per_token, hil_evaluate

from .report import markdown_table

__all__ = ["run_pipeline"]


def _step(log: list, name: str, t0: float, **facts) -> None:
    entry = {"step": name, "seconds": round(time.perf_counter() - t0, 1), **facts}
    log.append(entry)
    print(f"[main] {name}: {json.dumps({k: v for k, v in entry.items() if k != 'step'})}", file=sys.stderr, flush=True)


PROMPT = "The BBC reported on Monday that"
RTL_CAPACITY = 512  # the token core the main job and ``generate --backend rtl`` build (one cached build)


def _capture_inputs(model, layer_name: str, ids: torch.Tensor) -> np.ndarray:
    """The activations that reach ``layer_name`` during a forward pass over ``ids``."""
    seen = []
    handle = model.get_submodule(layer_name).register_forward_hook(lambda m, a, out: seen.append(a[0].detach()))
    with torch.inference_mode():
        model(ids)
    handle.remove()
    return seen[0].reshape(-1, seen[0].shape[-1]).double().numpy()


def _whole_tokens(weights, prompt: list[int], torch_model, tok, n: int) -> dict:
    """Greedy tokens on the golden integer decoder and on the float model with the same planes."""
    from ptqtp.golden_decoder import GoldenDecoder
    from ptqtp.workflows.generate import generate_int, generate_torch

    dec = GoldenDecoder(weights, capacity=len(prompt) + n)
    a = generate_int(dec, prompt, n)["ids"]
    b = generate_torch(torch_model, prompt, n)["ids"]
    agree = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return {"tokens": len(a), "text": tok.decode(a), "agree_with_float_model": f"{agree}/{len(a)}", "ids": a}


def _rtl_tokens(weights, prompt: list[int], tok, n: int, golden_ids: list[int]) -> dict:
    """The first ``n`` golden tokens again, on the token core's RTL in Verilator."""
    from ptqtp.golden_decoder import GoldenDecoder
    from ptqtp.workflows.token import RtlDecoder, continue_on_rtl, token_params

    params = token_params(weights.arch, capacity=RTL_CAPACITY)
    rtl = RtlDecoder(weights, params)
    r = continue_on_rtl(rtl, GoldenDecoder(weights, capacity=RTL_CAPACITY), prompt, n)
    return {
        "tokens": n,
        "text": tok.decode(r["ids"]),
        "same_tokens_as_golden_generation": r["ids"] == golden_ids[:n],
        "bit_exact_with_golden": r["bit_exact"],
        "cycles_per_token": round(r["cycles_per_token"]),
        "rtl_seconds": round(r["seconds"], 1),
        "build_and_load_seconds": round(rtl.setup_seconds, 1),
    }


def run_pipeline(
    out: Path,
    layer: str = "model.layers.0.self_attn.q_proj",
    params: EngineParams | None = None,
    eval_tokens: int = 1024,
    hil_tokens: int = 256,
    samples: int = 8,
    fmax: bool = False,
    engine_tokens: int = 4,
    decoder_tokens: int = 8,
    rtl_tokens: int = 4,
) -> dict:
    """Run every stage; returns the report dict (also written to ``out/report.json`` and ``.md``)."""
    from concurrent.futures import ThreadPoolExecutor

    from ptqtp.hdl.engine import TritEngine  # Amaranth, Yosys, cocotb: heavy, optional
    from ptqtp.hdl.synth import cached_synth_report, to_verilog
    from ptqtp.runtime.engine import EngineBackend
    from ptqtp.workflows.export import export_model_image

    params = params or EngineParams()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log: list[dict] = []
    t_all = t0 = time.perf_counter()
    verilog = to_verilog(TritEngine(params), name="trit_engine")
    (out / "trit_engine.v").write_text(verilog)
    # Yosys runs in its own process beside the steps below (two cores); cached by the Verilog's hash.
    pool = ThreadPoolExecutor(1)
    synth_job = pool.submit(cached_synth_report, verilog, top="trit_engine", fmax=fmax, generic=False)
    _step(
        log,
        "engine Verilog (synthesis started beside the next steps)",
        t0,
        P=params.lanes,
        R=params.rows,
        M=params.vectors,
        DW=params.data_width,
        ACC=params.acc_bits,
        packing=params.packing,
    )

    t0 = time.perf_counter()
    model, tok = default_model()
    text = bbc_text("eval")
    ppl_fp = perplexity(model, tok, text, 512, eval_tokens)
    _step(log, "load SmolLM2-135M-Instruct (dequantized Q4_1 GGUF) + FP perplexity", t0, ppl_fp=round(ppl_fp, 3))

    t0 = time.perf_counter()
    config = PTQTPConfig()
    report = quantize_model(model, "ptqtp", config, progress=False)
    artifact = save_quantized(model, out / "smollm2-ptqtp.safetensors", report, config)
    ppl_q = perplexity(model, tok, text, 512, eval_tokens)
    _step(
        log,
        "quantize (PTQTP) + artifact + perplexity",
        t0,
        layers=len(report.layers),
        weights=report.weights,
        quant_seconds=round(report.seconds, 1),
        mean_layer_error=round(report.mean_rel_error, 4),
        ppl_ptqtp=round(ppl_q, 3),
        artifact_mib=round(artifact.stat().st_size / 2**20, 1),
    )

    t0 = time.perf_counter()
    image_rows = export_model_image(
        artifact, out / "image", params.layout, IntConfig(params.act_bits, params.scale_bits), progress=False
    )
    _step(
        log,
        "model image for the engine",
        t0,
        layers=len(image_rows),
        mib=round((out / "image" / "weights.bin").stat().st_size / 2**20, 1),
    )

    t0 = time.perf_counter()
    packed = load_artifact(artifact).layers[layer]
    golden = GoldenLayer.from_packed(packed)
    ids = tok(text, return_tensors="pt").input_ids[:, :samples]
    torch_model = load_quantized(artifact)  # the saved artifact, loaded once for the rest
    x = _capture_inputs(torch_model, layer, ids)
    cmp_rows = compare_layer(packed, x, golden, ("golden", "triton", "rtl"), {"rtl": {"params": params}})
    exact = all(r["first_mismatch"] == "-" for r in cmp_rows)
    _step(log, "golden / Triton / engine RTL on real activations", t0, layer=layer, vectors=len(x), bit_exact=exact)

    t0 = time.perf_counter()
    with GoldenBackend() as gold:
        hil = hil_evaluate(torch_model, gold, ".*", tok, text, hil_tokens, hil_tokens, progress=False)
    _step(
        log,
        "every linear on the golden model (the RTL's arithmetic): perplexity",
        t0,
        tokens=hil_tokens,
        ppl_torch=round(hil["ppl_torch"], 3),
        ppl_golden=round(hil["ppl_hil"], 3),
        **{f"logits_{k}": round(v, 5) for k, v in hil["logits_vs_torch"].items()},
    )

    t0 = time.perf_counter()
    engine_ids = ids[:, :engine_tokens]
    golden_model = copy.deepcopy(torch_model)
    attach_backend(golden_model, GoldenBackend())
    engine_model = copy.deepcopy(torch_model)
    with EngineBackend(params) as engine:
        names = attach_backend(engine_model, engine)
        with torch.inference_mode():
            engine_exact = torch.equal(engine_model(engine_ids).logits, golden_model(engine_ids).logits)
        cycles = cycles_per_token(engine, names)
    _step(
        log,
        "every linear on ONE engine simulation (compiled harness; weights from the model image in simulated DRAM)",
        t0,
        layers=len(names),
        tokens=engine_ids.shape[1],
        logits_bit_exact=engine_exact,
        cycles_per_token=round(cycles["total"]),
        sim_cycles_per_s=round(cycles["total"] * engine_ids.shape[1] / (time.perf_counter() - t0)),
    )

    from ptqtp.formats.decoder_weights import decoder_weights

    t0 = time.perf_counter()
    weights, prompt = decoder_weights(artifact), tok(PROMPT).input_ids  # both decoders' (read once)
    gen = _whole_tokens(weights, prompt, torch_model, tok, decoder_tokens)
    golden_ids = gen.pop("ids")
    _step(log, "whole tokens on the golden integer decoder (every op in integers) vs the float model", t0, **gen)

    t0 = time.perf_counter()
    rtl = _rtl_tokens(weights, prompt, tok, rtl_tokens, golden_ids) if rtl_tokens else {}
    if rtl:
        _step(
            log,
            "whole tokens on the token core's RTL (Verilator; prompt prefilled on golden-int, its KV cache handed "
            "to the simulated DRAM) vs the golden integer decoder",
            t0,
            **rtl,
        )

    t0 = time.perf_counter()
    synth = synth_job.result()
    pool.shutdown()
    _step(
        log,
        "engine synthesis (Yosys synth_ecp5; waited for)",
        t0,
        cached=synth.get("cached", False),
        **synth["ecp5"],
        fmax_mhz=synth["fmax_mhz"],
        lut_mapping=synth["lut_mapping"],
    )

    total = round(time.perf_counter() - t_all, 1)
    result = {
        "steps": log,
        "compare": cmp_rows,
        "all_bit_exact": exact and engine_exact and rtl.get("bit_exact_with_golden", True),
        "engine_cycles_per_token": cycles,
        "engine": vars(params),
        "seconds": total,
    }
    (out / "report.json").write_text(json.dumps(result, indent=2, default=str))
    md = [
        "# ptqtp main job",
        "",
        "Model: SmolLM2-135M-Instruct (FP = dequantized Q4_1 GGUF); text: BBC eval split; "
        f"engine P={params.lanes} R={params.rows} M={params.vectors} DW={params.data_width}.",
        "",
    ]
    md += [
        markdown_table(
            ["step", "seconds", "facts"],
            [
                [e["step"], e["seconds"], ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("step", "seconds"))]
                for e in log
            ],
        )
    ]
    md += ["", f"Total {total} s.", "", f"## {layer}: every path on {len(x)} real activation vectors", ""]
    md += [
        markdown_table(
            ["path", "bit-exact vs golden", "first mismatch", "rel. error vs float64", "seconds"],
            [
                [r["path"], r["bit_exact"], r["first_mismatch"], r["rel_error"], round(r["seconds"], 2)]
                for r in cmp_rows
            ],
        )
    ]
    (out / "report.md").write_text("\n".join(md) + "\n")
    return result
