"""Simulation speed of the engine: the compiled harness against the cocotb bench, side by side
in one run (prints tables; ``--json FILE`` for docs/results).

    python -m ptqtp.tools.bench_sim                         # P16R4 and P64R4, SmolLM2 block 0's shapes
    python -m ptqtp.tools.bench_sim --model ART             # + one token through every linear of ART
    python -m ptqtp.tools.bench_sim --model ART --hil 256   # + hil --backend rtl over 256 tokens
    python -m ptqtp.tools.bench_sim --model ART --ranks 64  # + 1 against 2 torchrun ranks, 64 tokens

Per engine: block 0's seven linears (random trits, m = 1) as one job, on both benches, each
checked against the golden model; simulated cycles per second (median of ``--repeat``
compiled runs and of ``--cocotb-repeat`` cocotb runs, builds excluded and timed apart).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ptqtp.formats.model_image import read_model_image, write_model_image
from ptqtp.hdl.engine_model import EngineParams
from ptqtp.workflows.budget import random_activations
from ptqtp.workflows.report import markdown_table

from .bench_engine import SMOLLM2, _engine, _random_layer


def _block_job(params: EngineParams, folder: Path):
    from ptqtp.sim.runner import image_runs

    rng = np.random.default_rng(0)
    layers = {k: _random_layer(rng, n, d, params) for k, (n, d) in SMOLLM2.items()}
    img = read_model_image(write_model_image(folder, layers, params.layout))
    batches = [
        (k, g.quantize_input(random_activations(1, g.d, seed=i))[0]) for i, (k, g) in enumerate(img.layers.items())
    ]
    return img, image_runs(img, batches)


def engine_speed(params: EngineParams, repeat: int, cocotb_repeat: int) -> dict:
    from ptqtp.sim.compiled import _ports, build_harness, run_engine_compiled
    from ptqtp.sim.runner import build, engine_config, run_engine

    verilog = _engine(params)
    cfg = engine_config(params)
    with tempfile.TemporaryDirectory() as tmp:
        img, (runs, inputs, expected) = _block_job(params, Path(tmp) / "img")
        blob = img.blob_bytes()
        t0 = time.perf_counter()
        build_harness(verilog, _ports(verilog, cfg))
        compiled_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        build(verilog)
        cocotb_build = time.perf_counter() - t0
        fast = [run_engine_compiled(verilog, blob, runs, inputs, expected, cfg) for _ in range(repeat)]
        slow = [run_engine(verilog, blob, runs, inputs, expected, cfg) for _ in range(cocotb_repeat)]
    ref = (slow or fast)[0]
    same = all(r.passed and r.counters == ref.counters and r.sim_cycles == ref.sim_cycles for r in fast + slow)
    c_fast = statistics.median(r.cycles_per_second for r in fast)
    c_slow = statistics.median(r.cycles_per_second for r in slow) if slow else float("nan")
    return {
        "engine": f"P{params.lanes} R{params.rows} M{params.vectors} DW{params.data_width}",
        "cycles": fast[0].sim_cycles,
        "compiled_cycles_per_s": round(c_fast),
        "cocotb_cycles_per_s": round(c_slow) if slow else None,
        "speedup": round(c_fast / c_slow, 1) if slow else None,
        "compiled_build_s": round(compiled_build, 1),
        "cocotb_build_s": round(cocotb_build, 1),
        "same_results_and_cycles": same,
    }


def one_token(artifact: Path, params: EngineParams) -> dict:
    """Every linear of one token (the first of the BBC text) on the compiled engine, logits
    against the golden model's; wall time without and with the build."""
    import copy

    import torch

    from ptqtp.models.data import bbc_text, load_tokenizer
    from ptqtp.models.hf import load_quantized
    from ptqtp.runtime.backends import GoldenBackend
    from ptqtp.runtime.engine import EngineBackend
    from ptqtp.runtime.hil import attach_backend

    model = load_quantized(artifact)
    tok = load_tokenizer(None, artifact, model.config.to_dict())
    ids = tok(bbc_text("eval"), return_tensors="pt").input_ids[:, :1]
    golden = copy.deepcopy(model)
    attach_backend(golden, GoldenBackend())
    with EngineBackend(params) as engine, torch.inference_mode():
        names = attach_backend(model, engine)
        t0 = time.perf_counter()
        first = model(ids).logits  # builds (or finds) the harness, loads the image, runs
        with_build = time.perf_counter() - t0
        before = sum(engine.cycles.values())
        t0 = time.perf_counter()
        second = model(ids).logits
        wall = time.perf_counter() - t0
        cycles = sum(engine.cycles.values()) - before
        exact = torch.equal(first, golden(ids).logits) and torch.equal(first, second)
    return {
        "layers": len(names),
        "token_cycles": cycles,
        "token_wall_s": round(wall, 2),
        "first_token_wall_s": round(with_build, 1),
        "cycles_per_s": round(cycles / wall),
        "logits_bit_exact": exact,
    }


def _hil(artifact: Path, tokens: int, context: int, ranks: int, parts: Path) -> dict:
    out = parts.with_suffix(".json")
    base = ["hil", str(artifact.resolve()), "--layers", ".*", "--backend", "rtl", "--tokens", str(tokens)]
    base += ["--context", str(context), "--parts", str(parts), "--json", str(out)]
    exe = Path(sys.executable).parent
    if ranks > 1:
        cmd = [str(exe / "torchrun"), "--standalone", "--nproc_per_node", str(ranks), "-m", "ptqtp.tools.cli"]
        cmd += [*base, "--distributed"]
    else:
        cmd = [sys.executable, "-m", "ptqtp.tools.cli", *base]
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=parts.parent
    )
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)}:\n{proc.stderr[-3000:]}")
    rep = json.loads(out.read_text())
    rep["wall_s"] = round(wall, 1)
    return rep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default="16x4,64x4", help="PxR engines to time (default 16x4,64x4)")
    ap.add_argument("--repeat", type=int, default=5, help="compiled runs per engine (median; default 5)")
    ap.add_argument("--cocotb-repeat", type=int, default=1, help="cocotb runs per engine (median; default 1)")
    ap.add_argument("--model", type=Path, help="artifact: also time one token through every linear")
    ap.add_argument("--hil", type=int, default=0, metavar="TOKENS", help="also hil --backend rtl over TOKENS tokens")
    ap.add_argument("--context", type=int, default=256, help="context of --hil (default 256)")
    ap.add_argument("--ranks", type=int, default=0, metavar="TOKENS", help="also 1 against 2 ranks over TOKENS tokens")
    ap.add_argument("--json", type=Path, help="write the results here ('-' for stdout)")
    args = ap.parse_args(argv)
    result: dict = {"engines": []}
    for spec in args.engines.split(","):
        P, R = (int(v) for v in spec.lower().split("x"))
        result["engines"].append(engine_speed(EngineParams(lanes=P, rows=R), args.repeat, args.cocotb_repeat))
    rows = result["engines"]
    print("## Simulated cycles per second: block 0's seven linears (m = 1), one job\n")
    print(markdown_table(list(rows[0]), [list(r.values()) for r in rows]))
    if args.model:
        result["one_token"] = one_token(args.model, EngineParams())
        print("\n## One token, every linear on the compiled engine (P16 R4)\n")
        print(markdown_table(list(result["one_token"]), [list(result["one_token"].values())]))
    with tempfile.TemporaryDirectory() as tmp:
        if args.model and args.hil:
            rep = _hil(args.model, args.hil, args.context, 1, Path(tmp) / "hil")
            result["hil"] = {
                k: rep.get(k)
                for k in ("tokens", "context", "windows", "ppl_hil", "ppl_golden", "bit_exact_vs_golden", "wall_s")
            } | {"cycles_per_token": round(rep["cycles_per_token"]["total"])}
            result["hil"]["tokens_per_s"] = round(args.hil / rep["wall_s"], 2)
            print(f"\n## hil --backend rtl, every linear, {args.hil} tokens, context {args.context}\n")
            print(markdown_table(list(result["hil"]), [list(result["hil"].values())]))
        if args.model and args.ranks:
            one = _hil(args.model, args.ranks, 64, 1, Path(tmp) / "r1")
            two = _hil(args.model, args.ranks, 64, 2, Path(tmp) / "r2")
            same = all(one[k] == two[k] for k in ("ppl_hil", "window_nll", "ppl_golden", "bit_exact_vs_golden"))
            result["ranks"] = {
                "tokens": args.ranks,
                "windows": one["windows"],
                "one_process_s": one["wall_s"],
                "two_processes_s": two["wall_s"],
                "speedup": round(one["wall_s"] / two["wall_s"], 2),
                "same_perplexity_and_windows": same,
            }
            print(f"\n## hil --backend rtl over {args.ranks} tokens (context 64): 1 against 2 torchrun ranks\n")
            print(markdown_table(list(result["ranks"]), [list(result["ranks"].values())]))
    if args.json:
        text = json.dumps(result, indent=1)
        print(text) if str(args.json) == "-" else args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
