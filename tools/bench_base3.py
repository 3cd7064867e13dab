"""Base-3 against 2-bit weight packing on the streaming engine (prints tables).

    python -m ptqtp.tools.bench_base3 ART.safetensors                    # model image bytes, both packings
    python -m ptqtp.tools.bench_base3 ART.safetensors --verilator        # + decode cycles in Verilator
    python -m ptqtp.tools.bench_base3 ART.safetensors --synth            # + ECP5 LUTs and Fmax (minutes)

Bytes: every quantized linear of the artifact exported as a model image for each packing
(``weights.bin`` sizes, so alignment and padding count). Verilator: the linears matching
``--layers`` run once (m = 1, decode) on one build per packing with the memory giving each
``--throttle`` share of the bus per cycle; the same layers, activations and bandwidth for
both, every output checked bit for bit against the golden model. Synthesis: the engine of
each packing and the base-3 unpacker alone (Yosys + nextpnr-ecp5 on an LFE5U-85F, cached).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from ptqtp.formats.model_image import read_model_image
from ptqtp.golden import IntConfig
from ptqtp.hdl.engine_model import EngineParams
from ptqtp.workflows.export import export_model_image
from ptqtp.workflows.report import markdown_table

from .bench_engine import _batches, _engine

PACKINGS = ("2bit", "base3")


def image_bytes(artifact: Path, params: EngineParams, work: Path, layers: str = ".*") -> dict[str, int]:
    """weights.bin bytes of the artifact's model image for each packing."""
    out = {}
    for pk in PACKINGS:
        folder = work / f"image-{pk}"
        export_model_image(
            artifact,
            folder,
            replace(params, packing=pk).layout,
            IntConfig(params.act_bits, params.scale_bits),
            layers,
            progress=False,
        )
        out[pk] = (folder / "weights.bin").stat().st_size
    return out


def decode_cycles(artifact: Path, params: EngineParams, work: Path, layers: str, throttles: list[float]) -> list[list]:
    """Rows (packing, memory share, cycles, bit-exact) from Verilator, m = 1."""
    from ptqtp.sim.runner import engine_config, image_runs, run_engine

    rows = []
    for pk in PACKINGS:
        p = replace(params, packing=pk)
        folder = work / f"sim-{pk}"
        export_model_image(artifact, folder, p.layout, IntConfig(p.act_bits, p.scale_bits), layers, progress=False)
        image = read_model_image(folder)
        runs, inputs, expected = image_runs(image, _batches(image, 1))
        verilog = _engine(p)
        for f in throttles:
            throttle = {} if f >= 1 else {"mem_busy": 1 - f, "mem_period": 20}
            res = run_engine(verilog, image.blob_bytes(), runs, inputs, expected, engine_config(p, **throttle))
            rows.append([pk, f, res.counters["CYCLES"], res.passed, len(runs)])
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def synthesis(params: EngineParams, seeds: list[int]) -> list[list]:
    """Rows (what, LUT4, CCU2C, FF, DSP, Fmax MHz per seed) for each packing's engine and the
    base-3 unpacker alone (resources only)."""
    from ptqtp.hdl.base3 import Base3Unpacker
    from ptqtp.hdl.engine import TritEngine
    from ptqtp.hdl.synth import cached_synth_report, to_verilog

    def row(what, rep, fmax):
        e = rep[0]["ecp5"]
        return [
            what,
            e["LUT"] + 2 * e.get("LUTRAM", 0),
            e["CARRY"],
            e["FF"],
            e["DSP"],
            " / ".join(f"{r['fmax_mhz']:.1f}" for r in rep) if fmax else "",
            rep[0]["lut_mapping"],
        ]

    rows = []
    for pk in PACKINGS:
        verilog = to_verilog(TritEngine(replace(params, packing=pk)), name="trit_engine")
        reps = [
            cached_synth_report(verilog, top="trit_engine", fmax=True, generic=False, timeout=3600, seed=seed)
            for seed in seeds
        ]
        rows.append(row(f"engine, {pk}", reps, True))
        print(rows[-1], file=sys.stderr, flush=True)
    unpacker = Base3Unpacker(replace(params, packing="base3").layout)
    rep = cached_synth_report(
        to_verilog(unpacker, name="base3_unpacker"), top="base3_unpacker", fmax=False, generic=False, timeout=3600
    )
    rows.append(row("base-3 unpacker alone (decoder, gearbox, scale section, FIFOs)", [rep], False))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifact", type=Path, help="packed artifact (.safetensors)")
    ap.add_argument("--lanes", type=int, default=64)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--data-width", type=int, nargs="+", default=[128, 512], help="DW values for the bytes table")
    ap.add_argument("--verilator", action="store_true", help="measure decode cycles in Verilator (first DW)")
    ap.add_argument("--layers", default=r"model\.layers\.0\.", help="regex of the linears simulated (default block 0)")
    ap.add_argument(
        "--throttle",
        type=float,
        nargs="+",
        default=[1.0, 0.5],
        help="memory bandwidth as a share of DW/cycle (default 1.0 0.5)",
    )
    ap.add_argument("--synth", action="store_true", help="synthesise both engines (first DW) and the unpacker")
    ap.add_argument("--seed", type=int, nargs="+", default=[1, 2, 3], help="nextpnr placement seeds (default 1 2 3)")
    args = ap.parse_args()
    base = EngineParams(
        lanes=args.lanes,
        rows=args.rows,
        vectors=4,
        data_width=args.data_width[0],
        burst=min(64, 32768 // args.data_width[0]),
    )
    with tempfile.TemporaryDirectory(prefix="ptqtp-bench-base3-") as tmp:
        rows = []
        for dw in args.data_width:
            p = replace(base, data_width=dw, burst=min(64, 32768 // dw))
            b = image_bytes(args.artifact, p, Path(tmp) / f"dw{dw}")
            rows.append([f"P{p.lanes} R{p.rows} DW{dw}", b["2bit"], b["base3"], f"{b['base3'] / b['2bit']:.4f}"])
        print("weight bytes per token (model image, every quantized linear)")
        print(markdown_table(["engine", "2bit bytes", "base3 bytes", "base3 / 2bit"], rows))
        if args.verilator:
            sims = decode_cycles(args.artifact, base, Path(tmp), args.layers, args.throttle)
            cyc = {(r[0], r[1]): r for r in sims}
            print(
                f"\ndecode (m = 1) of the linears matching {args.layers!r} on P{base.lanes} R{base.rows} "
                f"DW{base.data_width}, Verilator"
            )
            print(
                markdown_table(
                    ["memory (x DW/cycle)", "bytes/cycle", "2bit cycles", "base3 cycles", "speed-up", "bit-exact"],
                    [
                        [
                            f,
                            f * base.data_width / 8,
                            cyc["2bit", f][2],
                            cyc["base3", f][2],
                            f"{cyc['2bit', f][2] / cyc['base3', f][2]:.3f}x",
                            "yes" if cyc["2bit", f][3] and cyc["base3", f][3] else "NO",
                        ]
                        for f in args.throttle
                    ],
                )
            )
        if args.synth:
            print(
                f"\nLFE5U-85F, P{base.lanes} R{base.rows} M{base.vectors} DW{base.data_width} (LUT4 counts LUTRAM "
                f"as two; CCU2C: carry cells of two LUT4s each)"
            )
            print(
                markdown_table(
                    ["netlist", "LUT4", "CCU2C", "FF", "DSP", f"Fmax MHz (seeds {args.seed})", "LUT mapping"],
                    synthesis(base, args.seed),
                )
            )


if __name__ == "__main__":
    main()
