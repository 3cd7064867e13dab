"""Measure the streaming engine in Verilator against its cycle model (prints tables).

    python -m ptqtp.tools.bench_engine                       # SmolLM2's layer shapes, one build
    python -m ptqtp.tools.bench_engine --throttle 0.25 0.5   # memory at 25% and 50% of DW per cycle
    python -m ptqtp.tools.bench_engine --model ART.safetensors --vectors 4   # every linear of a model

Per layer shape (random trits and scales, m = 1): the cycles the core held the run, the
issued chunk-cycles (all lanes busy) and their share, against the model's compute and
stream cycles. With ``--throttle f`` the memory answers with a fixed pause pattern giving f
of the bus width per cycle (B bytes/cycle), and the layer's cycles are compared with
layer_bytes / B. ``--model`` runs every quantized linear of an artifact through one engine
build, weights from the model image in the simulated DRAM, each checked bit for bit.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ptqtp.formats.model_image import read_model_image, write_model_image
from ptqtp.golden import GoldenLayer, IntConfig
from ptqtp.hdl.engine_model import EngineParams
from ptqtp.workflows.budget import random_activations
from ptqtp.workflows.export import export_model_image
from ptqtp.workflows.report import markdown_table

#: SmolLM2-135M's linear shapes (out n, in d) per decoder block.
SMOLLM2 = {
    "q_proj": (576, 576),
    "k_proj": (192, 576),
    "v_proj": (192, 576),
    "o_proj": (576, 576),
    "gate_proj": (1536, 576),
    "up_proj": (1536, 576),
    "down_proj": (576, 1536),
}


def _engine(params: EngineParams):
    from ptqtp.hdl.engine import TritEngine
    from ptqtp.hdl.synth import to_verilog
    from ptqtp.sim.runner import ENGINE_TOP

    return to_verilog(TritEngine(params), name=ENGINE_TOP)


def _random_layer(rng, n: int, d: int, params: EngineParams) -> GoldenLayer:
    G = params.group_size
    d_pad = -(-d // G) * G
    t = rng.integers(-1, 2, (params.planes, n, d_pad)).astype(np.int8)
    t[:, :, d:] = 0
    return GoldenLayer(
        t, rng.standard_normal((params.planes, n, d_pad // G)), d, G, IntConfig(params.act_bits, params.scale_bits)
    )


def _batches(image, m: int, seed: int = 0):
    out = []
    for i, name in enumerate(image.layers):
        g = image.layers[name]
        out.append((name, g.quantize_input(random_activations(m, g.d, seed=seed + i))[0]))
    return out


def shapes_table(params: EngineParams, throttles: list[float], work: Path) -> str:
    from ptqtp.sim.runner import engine_config, image_runs, run_engine

    verilog = _engine(params)
    rng = np.random.default_rng(0)
    rows = []
    for name, (n, d) in SMOLLM2.items():
        image = read_model_image(
            write_model_image(work / name, {name: _random_layer(rng, n, d, params)}, params.layout)
        )
        runs, inputs, expected = image_runs(image, _batches(image, 1))
        model = params.run(n, image.layers[name].d_pad, 1, image.layers[name].planes)
        for f in [None, *throttles]:
            throttle = {} if f is None else {"mem_busy": 1 - f, "mem_period": 20}
            t0 = time.perf_counter()
            res = run_engine(verilog, image.blob_bytes(), runs, inputs, expected, engine_config(params, **throttle))
            c = res.counters
            bpc = None if f is None else f * params.data_width / 8
            mem = model.memory_cycles(bpc)
            rows.append(
                [
                    name,
                    f"{n}x{d}",
                    "full" if f is None else f"{f:.2f}",
                    "yes" if res.passed else "NO",
                    c["CYCLES"],
                    c["ISSUED"],
                    f"{c['ISSUED'] / c['CYCLES']:.1%}",
                    model.issue_cycles,
                    round(mem),
                    f"{c['CYCLES'] / max(model.issue_cycles, mem):.3f}",
                    model.bound(bpc),
                    f"{time.perf_counter() - t0:.1f}",
                ]
            )
            print(rows[-1], file=sys.stderr, flush=True)
    return markdown_table(
        [
            "layer",
            "n x d",
            "memory (x DW/cycle)",
            "bit-exact",
            "cycles",
            "issued",
            "lanes busy",
            "model compute",
            "model memory",
            "cycles / model",
            "bound",
            "sim s",
        ],
        rows,
    )


def model_run(
    params: EngineParams, artifact: Path, m: int, work: Path, layers: str = ".*", board: str | None = None
) -> str:
    """Every matching linear of an artifact on one build; with ``board`` the memory is
    throttled to that board's bytes per cycle and the cycles are compared with ``ptqtp plan``."""
    from ptqtp.sim.runner import engine_config, image_runs, run_engine
    from ptqtp.workflows.plan import LayerShape, load_boards, plan

    t0 = time.perf_counter()
    export_model_image(
        artifact, work / "model", params.layout, IntConfig(params.act_bits, params.scale_bits), layers, progress=False
    )
    image = read_model_image(work / "model")
    runs, inputs, expected = image_runs(image, _batches(image, m))
    throttle, b = {}, None
    if board:
        b = load_boards()[board]
        share = b.bytes_per_cycle / (params.data_width / 8)
        if share < 1:
            throttle = {"mem_busy": 1 - share, "mem_period": 20}
    t1 = time.perf_counter()
    res = run_engine(_engine(params), image.blob_bytes(), runs, inputs, expected, engine_config(params, **throttle))
    t2 = time.perf_counter()
    c = res.counters
    text = (
        f"{len(runs)} linears, m={m}, {image.blob.stat().st_size / 2**20:.1f} MiB image: "
        f"{'bit-exact' if res.passed else f'MISMATCH {res.first_mismatch}'}; {c['CYCLES']} cycles "
        f"({c['ISSUED']} issued, {c['ISSUED'] / c['CYCLES']:.1%} busy), simulated in {t2 - t1:.0f} s "
        f"({res.cycles_per_second:,.0f} cycles/s; image + golden {t1 - t0:.0f} s)"
    )
    if b is not None and m == 1:
        shapes = [LayerShape(e["name"], e["n"], e["d_pad"], e["planes"], e["offset"]) for e in image.entries]
        model = plan(shapes, params, b)["decode_cycles_per_token"]
        text += (
            f"\nthrottled to {b.key} ({b.bandwidth_gbs} GB/s at {b.fmax_mhz:g} MHz = {b.bytes_per_cycle:.2f} "
            f"B/cycle): measured {c['CYCLES']} cycles vs ptqtp plan {model:.0f} ({c['CYCLES'] / model:.3f}x)"
        )
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lanes", type=int, default=16)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--data-width", type=int, default=512)
    ap.add_argument("--vectors", type=int, default=4)
    ap.add_argument("--burst", type=int, default=64)
    ap.add_argument("--throttle", type=float, nargs="*", default=[], help="memory bandwidth as a share of DW/cycle")
    ap.add_argument("--model", type=Path, help="run every linear of this artifact instead of the shapes")
    ap.add_argument("--m", type=int, default=1, help="vectors per layer run with --model (default 1)")
    ap.add_argument("--layers", default=".*", help="regex of the artifact's layers with --model (default all)")
    ap.add_argument("--board", help="throttle the memory to this board's bandwidth (boards.json) with --model")
    args = ap.parse_args()
    params = EngineParams(
        lanes=args.lanes, rows=args.rows, data_width=args.data_width, vectors=args.vectors, burst=args.burst
    )
    print(
        f"engine P={params.lanes} R={params.rows} DW={params.data_width} M={params.vectors} burst={params.burst}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="ptqtp-bench-engine-") as tmp:
        if args.model:
            print(model_run(params, args.model, args.m, Path(tmp), args.layers, args.board))
        else:
            print(shapes_table(params, args.throttle, Path(tmp)))


if __name__ == "__main__":
    main()
