"""``ptqtp export``, ``plan``, ``dse``, ``budget``, ``hdl``, ``sim``: the hardware side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ptqtp.formats.atomic import atomic_write
from ptqtp.formats.hwimage import read_image
from ptqtp.hdl.engine_model import EngineParams
from ptqtp.workflows.plan import HOST_SIDE, Board, LayerShape, load_boards, plan
from ptqtp.workflows.report import markdown_table, random_activations

# torch-dependent modules (artifacts, budget, export) are imported inside the commands
# that need them: `hdl` and `sim` start without torch.

from ._common import engine_args, engine_params, int_args, int_config, json_arg, layer_args, pick_layer, positive, \
    write_json


def register(sub) -> None:
    e = sub.add_parser("export", description="-o OUT: one folder per layer (docs/SPEC.md section 4): plane1/2.hex, "
                                   "scale1/2.hex, layer.json. --model-image DIR: every layer in the streaming "
                                   "engine's memory order, weights.bin + manifest.json (section 6).")
    e.add_argument("artifact", type=Path, help="packed artifact (.safetensors)")
    e.add_argument("-o", "--out", type=Path, help="output folder (one sub-folder per layer)")
    e.add_argument("--model-image", type=Path, help="write the model image for the engine below into this folder")
    e.add_argument("--layers", default=".*", help="regex of layer names to export (default: all)")
    int_args(e, lanes=None, lanes_help=f"default 64 for -o, the engine's {EngineParams.lanes} for --model-image, "
                                       f"as `ptqtp plan` and `ptqtp hdl --engine`")
    engine_args(e)
    json_arg(e, "the per-layer rows")
    b = sub.add_parser("budget", description="Relative output error of float trit planes, + S-bit scales, + A-bit "
                                   "activations (the golden model), on random LLM-like inputs.")
    layer_args(b, 64, "random input vectors")
    b.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    json_arg(b, "the rows")
    h = sub.add_parser("hdl", description="IMAGE: the per-layer accelerator (weights and scales in on-chip ROMs). --engine: "
                                   "the weight-streaming engine, elaborated from its parameters alone. Writes "
                                   "self-contained Verilog and reports ECP5 resources against the LFE5U-85F (Yosys "
                                   "synth_ecp5 and generic synth) and nextpnr-ecp5 Fmax.")
    h.add_argument("image", type=Path, nargs="?", help="hardware image folder (from ptqtp export); omit with --engine")
    h.add_argument("-o", "--output", type=Path, required=True, help="Verilog file to write")
    h.add_argument("--engine", action="store_true", help="the streaming engine instead of a layer's accelerator")
    int_args(h, lanes=16)
    engine_args(h)
    h.set_defaults(rows=None)  # R: 1 for a layer image, EngineParams' default for --engine
    h.add_argument("--no-synth", action="store_true", help="only write the Verilog, skip Yosys and nextpnr")
    h.add_argument("--no-fmax", action="store_true", help="skip place-and-route (nextpnr-ecp5)")
    h.add_argument("--timeout", type=positive, default=3600, help="seconds per tool step (default 3600)")
    json_arg(h, "the summary and synthesis report")
    h.add_argument("--freq", type=float, default=100.0, help="nextpnr target frequency in MHz (default 100)")
    h.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1; Fmax varies by seed)")
    sm = sub.add_parser("sim", description="Build the accelerator for a hardware image (cached by a hash of its Verilog), "
                                    "stream input vectors through it and compare every output with the golden model.")
    sm.add_argument("image", type=Path, help="hardware image folder (from ptqtp export)")
    sm.add_argument("--rows", type=positive, default=1, help="parallel row units R (default 1)")
    sm.add_argument("--vectors", type=positive, default=8, help="random LLM-like input vectors (default 8)")
    sm.add_argument("--inputs", type=Path, help=".npy of float activations (m, d) to use instead of random ones")
    sm.add_argument("--stall", type=float, default=0.0, help="probability of a stall per cycle on both streams")
    sm.add_argument("--seed", type=int, default=0, help="seed of the random inputs and stalls (default 0)")
    sm.add_argument("--waves", type=Path, help="write the waveform here: NAME.fst (FST; needs the lz4 headers), "
                                               "NAME.vcd.gz (gzip-compressed VCD) or NAME.vcd")
    sm.add_argument("--clock-mhz", type=float, default=100.0, help="clock for the throughput figure (default 100)")
    json_arg(sm, "the verdict and cycle counts")
    pl = sub.add_parser("plan", description="The engine's cycle model per layer (compute- or bandwidth-bound) for decode "
                                    "(m = 1) and prefill (m = M), bytes per token, and the share of the board's "
                                    "bandwidth used. Boards and their sources: ptqtp/workflows/boards.json.")
    pl.add_argument("artifact", type=Path, help="packed artifact (.safetensors)")
    pl.add_argument("--board", action="append", help="board key (repeatable; default: every board)")
    pl.add_argument("--bandwidth", type=float, help="memory bandwidth in GB/s instead of a board (with --fmax)")
    pl.add_argument("--fmax", type=float, help="engine clock in MHz (with --bandwidth)")
    json_arg(pl, "the plans")
    int_args(pl, lanes=16)
    engine_args(pl)
    pl.set_defaults(func=cmd_plan, packing=None)  # both packings unless --packing names one
    ds = sub.add_parser("dse", description="Synthesise every (P, R, M, DW) for the LFE5U-85F (Yosys + nextpnr-ecp5, cached by "
                                    "the Verilog's hash), apply the plan's cycle model on every board, pick per board "
                                    "the configuration with the most decode tokens/s that fits, and write dse.md, "
                                    "dse.json, roofline.png and pareto.png to --out.")
    ds.add_argument("artifact", type=Path, help="packed artifact (.safetensors)")
    ds.add_argument("--lanes", type=positive, nargs="+", default=[16, 32, 64], help="P values (default 16 32 64)")
    ds.add_argument("--rows", type=positive, nargs="+", default=[1, 2, 4], help="R values (default 1 2 4)")
    ds.add_argument("--vectors", type=positive, nargs="+", default=[4], help="M values (default 4)")
    ds.add_argument("--data-width", type=positive, nargs="+", default=[128, 512], help="DW values (default 128 512)")
    ds.add_argument("--board", action="append", help="board key (repeatable; default: every board)")
    ds.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    ds.add_argument("--out", type=Path, default=Path("out/dse"), help="output folder (default out/dse)")
    ds.set_defaults(func=cmd_dse)
    e.set_defaults(func=cmd_export)
    b.set_defaults(func=cmd_budget)
    h.set_defaults(func=cmd_hdl)
    sm.set_defaults(func=cmd_sim)


def cmd_export(args) -> int:
    from ptqtp.workflows.export import EXPORT_HEADERS, MODEL_IMAGE_HEADERS, export_layers, export_model_image

    if (args.out is None) == (args.model_image is None):
        raise ValueError("give -o OUT (per-layer hardware images) or --model-image DIR (one of them)")
    if args.model_image is not None:
        params = engine_params(args)
        rows = export_model_image(args.artifact, args.model_image, params.layout, int_config(args), args.layers)
        print(markdown_table(MODEL_IMAGE_HEADERS, rows))
        total = (args.model_image / "weights.bin").stat().st_size
        print(f"{len(rows)} layers, {total / 2**20:.1f} MiB for the engine P={params.lanes} R={params.rows} "
              f"planes={params.planes} offset={params.offset} DW={params.data_width} packing={params.packing} "
              f"in {args.model_image}")
        write_json(args.json, [dict(zip(MODEL_IMAGE_HEADERS, r)) for r in rows])
        return 0
    lanes = 64 if args.lanes is None else args.lanes
    rows = export_layers(args.artifact, args.out, lanes, int_config(args), args.layers)
    print(markdown_table(EXPORT_HEADERS, rows))
    print(f"{len(rows)} layer images (P={lanes}, A={args.act_bits}, S={args.scale_bits}) in {args.out}")
    write_json(args.json, [dict(zip(EXPORT_HEADERS, r)) for r in rows])
    return 0


def _layer_shapes(artifact: Path) -> list[LayerShape]:
    return [LayerShape(name, l.out_features, l.d_pad, l.planes, l.offsets is not None)
            for name, l in _load_artifact(artifact).layers.items()]


def _boards(keys: list[str] | None) -> list[Board]:
    boards = load_boards()
    unknown = sorted(set(keys or []) - set(boards))
    if unknown:
        raise ValueError(f"unknown boards {unknown}; known: {', '.join(boards)}")
    return [boards[k] for k in (keys or boards)]


def cmd_plan(args) -> int:
    from dataclasses import replace

    packings = ("2bit", "base3") if args.packing is None else (args.packing,)
    params = engine_params(argparse.Namespace(**{**vars(args), "packing": packings[0]}))
    layers = _layer_shapes(args.artifact)
    if (args.bandwidth is None) != (args.fmax is None):
        raise ValueError("--bandwidth and --fmax go together")
    if args.bandwidth is not None:
        chosen = [Board("custom", f"{args.bandwidth:g} GB/s at {args.fmax:g} MHz", args.bandwidth, args.fmax)]
    else:
        chosen = _boards(args.board)
    plans = [plan(layers, replace(params, packing=pk), b) for b in chosen for pk in packings]
    print(f"{args.artifact.name}: {len(layers)} linears on the engine P={params.lanes} R={params.rows} "
          f"M={params.vectors} DW={params.data_width}; on the host: {HOST_SIDE}")
    print(markdown_table(["board", "packing", "GB/s", "MHz", "decode tok/s", "prefill tok/s", "MB/token",
                          "bandwidth used", "compute ceiling tok/s"],
                         [[p["board"], p["engine"]["packing"], p["bandwidth_gbs"], p["fmax_mhz"],
                           round(p["decode_tokens_per_s"], 1), round(p["prefill_tokens_per_s"], 1),
                           round(p["bytes_per_token"] / 1e6, 2), f"{p['bandwidth_used']:.0%}",
                           round(p["compute_bound_tokens_per_s"], 1)] for p in plans]))
    if len(chosen) == 1:
        print(markdown_table(["layer kind", "packing", "layers", "decode kcycles/token", "bound", "MB/token"],
                             [[k, p["engine"]["packing"], v["layers"], round(v["decode_cycles"] / 1e3, 1), v["bound"],
                               round(v["bytes"] / 1e6, 2)] for p in plans for k, v in p["kinds"].items()]))
    write_json(args.json, plans)
    return 0


def cmd_dse(args) -> int:
    import time

    from ptqtp.workflows import dse

    layers = _layer_shapes(args.artifact)
    boards = _boards(args.board)
    points = [dse.DesignPoint(P, R, M, DW) for P in args.lanes for R in args.rows for M in args.vectors
              for DW in args.data_width]
    for p in points:
        p.params().check_layer(max(l.n for l in layers), max(l.d_pad for l in layers), 2, False)
    args.out.mkdir(parents=True, exist_ok=True)
    synth = {}
    for i, p in enumerate(points, 1):
        t0 = time.perf_counter()
        rep = synth[p] = dse.synthesise(p, seed=args.seed)
        fmax = f"{rep['fmax_mhz']:.1f} MHz" if rep.get("fmax_mhz") else rep.get("fmax_error", "no Fmax")
        dse.progress(f"[{i}/{len(points)}] {p.label}: LUT {rep['ecp5']['LUT']} FF {rep['ecp5']['FF']} "
                     f"BRAM {rep['ecp5']['BRAM']} DSP {rep['ecp5']['DSP']}, {fmax} "
                     f"({'cached' if rep.get('cached') else f'{time.perf_counter() - t0:.0f} s'})")
    rows = dse.explore(layers, synth, boards)
    best = dse.best_per_board(rows)
    front = set(dse.pareto_front(synth))
    sweep = markdown_table(
        ["P", "R", "M", "DW", "LUT", "FF", "BRAM", "DSP", "Fmax MHz", "peak Gtrit/s", "Pareto"],
        [[p.lanes, p.rows, p.vectors, p.data_width, *(dse.used_resources(r["ecp5"])[k] for k in ("LUT", "FF", "BRAM", "DSP")),
          round(r["fmax_mhz"], 1) if r.get("fmax_mhz") else "-",
          round(dse.peak_trits_per_s(p, r["fmax_mhz"]) / 1e9, 2) if r.get("fmax_mhz") else "-",
          "yes" if p in front else ""] for p, r in sorted(synth.items())])
    board_rows = []
    for b in boards:
        r = best.get(b.key)
        if r is None:
            board_rows.append([b.key, b.bandwidth_gbs, "nothing fits", *["-"] * 7])
            continue
        pl, res = r["plan"], r["resources"]
        board_rows.append([b.key, b.bandwidth_gbs, r["point"].label,
                           f"{res['LUT']} / {res['FF']} / {res['BRAM']} / {res['DSP']}",
                           f"{r['fmax_mhz']:g}" + ("" if b.family == "ecp5" else " (assumed)"),
                           round(pl["decode_tokens_per_s"], 1), round(pl["prefill_tokens_per_s"], 1),
                           "/".join(sorted({k["bound"] for k in pl["kinds"].values()})),
                           f"{pl['bandwidth_used']:.0%}", round(pl["bytes_per_token"] / 1e6, 1)])
    boards_md = markdown_table(["board", "GB/s", "best config", "LUT / FF / BRAM / DSP (ECP5 netlist)", "MHz",
                                "decode tok/s", "prefill tok/s", "bound (decode)", "bandwidth used", "MB/token"],
                               board_rows)
    roof = dse.plot_roofline(args.out / "roofline.png", layers, boards, best)
    par = dse.plot_pareto(args.out / "pareto.png", synth)
    head = (f"{args.artifact.name}: {len(layers)} linears; on the host: {HOST_SIDE}. Fit on AMD parts: ECP5 netlist "
            f"as a proxy (LUT6 >= LUT4, RAMB36 = 2 x DP16KD); ECP5 boards run at each point's own Fmax (seed "
            f"{args.seed}), others at the clock assumed in boards.json.")
    text = f"{head}\n\n## Sweep (LFE5U-85F)\n\n{sweep}\n\n## Best per board\n\n{boards_md}\n\n" \
           f"![roofline]({roof.name})\n\n![pareto]({par.name})\n"
    atomic_write(args.out / "dse.md", lambda t: t.write_text(text))
    record = {"sweep": [{"point": vars(p), **r} for p, r in sorted(synth.items())],
              "best": {k: {**{x: y for x, y in r.items() if x != "point"}, "point": vars(r["point"])}
                       for k, r in best.items()}}
    write_json(args.out / "dse.json", record)
    print(text)
    print(f"wrote {args.out / 'dse.md'}, dse.json, {roof.name}, {par.name}")
    return 0


def _load_artifact(path: Path):
    from ptqtp.formats.artifact import load_artifact

    return load_artifact(path)


def cmd_budget(args) -> int:
    from ptqtp.workflows.budget import budget_sweep

    name, layer = pick_layer(args.artifact, args.layer)
    rows, headers = budget_sweep(layer, random_activations(args.vectors, layer.in_features, args.seed))
    print(f"{name}: relative output error of the integer datapath, {args.vectors} random vectors")
    print(markdown_table(headers, rows))
    write_json(args.json, {"layer": name, "vectors": args.vectors, "rows": [dict(zip(headers, r)) for r in rows]})
    return 0


def cmd_hdl(args) -> int:
    from ptqtp.hdl.engine import TritEngine  # Amaranth and Yosys: heavy, optional
    from ptqtp.hdl.synth import fit_lines, synth_report, to_verilog
    from ptqtp.hdl.top import TritMatmul, cycles_per_vector

    if args.engine == (args.image is not None):
        raise ValueError("give a hardware image folder or --engine (one of them)")
    if args.engine:
        params = engine_params(args)
        top = "trit_engine"
        text = to_verilog(TritEngine(params), name=top)
        summary = (f"streaming engine P={params.lanes} R={params.rows} planes={params.planes} offset={params.offset} "
                   f"M={params.vectors} DW={params.data_width} A={params.act_bits} S={params.scale_bits} "
                   f"ACC={params.acc_bits} max d={params.max_d} packing={params.packing}; any layer at run time")
    else:
        image = read_image(args.image)
        top = "trit_matmul"
        dut = TritMatmul.from_golden(image.golden(), image.lanes, args.rows or 1)
        text = to_verilog(dut)
        p = dut.params
        summary = (f"{image.meta.name} {p.n}x{p.d_pad}, P={p.lanes} R={p.rows} A={p.act_bits} S={p.scale_bits} "
                   f"ACC={p.acc_bits}; {cycles_per_vector(p)} cycles/vector")
    atomic_write(args.output, lambda tmp: tmp.write_text(text))
    print(f"{args.output}: {summary}", flush=True)
    if not args.no_synth:
        def resources(e, flow):  # printed before place and route starts
            print(f"ECP5: LUT {e['LUT']}  FF {e['FF']}  DSP(MULT18X18D) {e['DSP']}  BRAM(DP16KD) {e['BRAM']}  "
                  f"LUTRAM {e['LUTRAM']}  CARRY {e['CARRY']} (LUT mapping: {flow})")
            print(fit_lines(e)[1], flush=True)

        rep = synth_report(text, top=top, fmax=not args.no_fmax, freq_mhz=args.freq, seed=args.seed,
                           timeout=args.timeout, progress=lambda m: print(m, file=sys.stderr, flush=True),
                           on_resources=resources)
        if rep.get("fmax_mhz"):
            print(f"Fmax {rep['fmax_mhz']:.1f} MHz (nextpnr-ecp5, target {args.freq:g} MHz, seed {args.seed})")
        elif "fmax_error" in rep:
            print(f"place and route failed: {rep['fmax_error']}")
        write_json(args.json, {"verilog": str(args.output), "summary": summary, "fits_lfe5u_85f": fit_lines(
            rep["ecp5"])[0], **rep, "seed": args.seed, "target_mhz": args.freq})
    else:
        write_json(args.json, {"verilog": str(args.output), "summary": summary})
    return 0


def cmd_sim(args) -> int:
    from ptqtp.hdl.synth import to_verilog  # Amaranth, Verilator, cocotb: heavy, optional
    from ptqtp.hdl.top import TritMatmul
    from ptqtp.sim.runner import run_bench

    image = read_image(args.image)
    golden = image.golden()
    x = np.load(args.inputs) if args.inputs else random_activations(args.vectors, golden.d, args.seed)
    x_q, _ = golden.quantize_input(x)
    dut = TritMatmul.from_golden(golden, image.lanes, args.rows)
    print(f"building and simulating {image.meta.name} ({golden.n}x{golden.d}, P={dut.params.lanes}, "
          f"R={args.rows}) in Verilator...", file=sys.stderr)
    res = run_bench(golden, to_verilog(dut), x_q, image.lanes, args.rows, in_stall=args.stall, out_stall=args.stall,
                    seed=args.seed, waves=args.waves)
    verdict = "MATCH" if res.passed else f"MISMATCH ({res.mismatches}; first {res.first_mismatch})"
    per_vec, macs = res.median_period, res.trit_macs_per_cycle(golden)
    print(f"{verdict}: {res.vectors} vectors x {golden.n} rows, bit-exact against the golden model")
    print(f"cycles/vector: measured {per_vec} (median), model {res.model_cycles}; {macs:.1f} trit MACs/cycle = "
          f"{macs * args.clock_mhz / 1e3:.2f} GMAC/s at {args.clock_mhz:g} MHz")
    print(f"simulation: {res.sim_cycles} cycles in {res.wall_s:.2f} s = {res.cycles_per_second:,.0f} cycles/s")
    if args.waves:
        print(f"waveform: {args.waves}")
    write_json(args.json, {"layer": image.meta.name, "n": golden.n, "d": golden.d, "lanes": image.lanes,
                           "rows": args.rows, "bit_exact": res.passed, "vectors": res.vectors,
                           "mismatches": res.mismatches, "first_mismatch": res.first_mismatch,
                           "cycles_per_vector": res.cycles_per_vector, "model_cycles": res.model_cycles,
                           "sim_cycles": res.sim_cycles, "wall_s": res.wall_s, "trit_macs_per_cycle": macs})
    return 0 if res.passed else 1