"""``ptqtp export``, ``plan``, ``dse``, ``budget``, ``hdl``, ``sim``: the hardware side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ptqtp.formats.atomic import atomic_write
from ptqtp.workflows.plan import HOST_SIDE, Board, LayerShape, load_boards, plan
from ptqtp.workflows.report import markdown_table, random_activations

# torch-dependent modules (artifacts, budget, export) are imported inside the commands
# that need them: `hdl` and `sim` start without torch.
from ._common import (
    bench_arg,
    engine_args,
    engine_params,
    int_config,
    join_ranks,
    json_arg,
    layer_args,
    pick_layer,
    positive,
    positive_rate,
    regex,
    samples_arg,
    share,
    write_json,
)


def register(sub) -> None:
    e = sub.add_parser(
        "export",
        description="Write the model image of an artifact for the engine below: every layer's "
        "region in the engine's stream layout, weights.bin + manifest.json (docs/SPEC.md "
        "section 6.5). The engine reads it from DRAM, or holds it in ROM (ptqtp hdl --rom).",
    )
    e.add_argument("artifact", type=Path, help="packed artifact (.safetensors)")
    e.add_argument(
        "-o", "--output", "--model-image", dest="output", type=Path, required=True, help="model image folder to write"
    )
    e.add_argument("--layers", type=regex, default=".*", help="regex of layer names to export (default: all)")
    engine_args(e)
    json_arg(e, "the per-layer rows")
    b = sub.add_parser(
        "budget",
        description="Relative output error of float trit planes, + S-bit scales, + A-bit "
        "activations (the golden model), on random LLM-like inputs.",
    )
    layer_args(b, 64)
    b.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    json_arg(b, "the rows")
    h = sub.add_parser(
        "hdl",
        description="Generate the engine's self-contained Verilog from its parameters (any layer "
        "at run time) and report ECP5 resources against the LFE5U-85F (Yosys synth_ecp5) "
        "and nextpnr-ecp5 Fmax, one place-and-route per --seed. --rom IMAGE: resident "
        "weights, the model image in on-chip ROM instead of the AXI master.",
    )
    h.add_argument("-o", "--output", type=Path, required=True, help="Verilog file to write")
    h.add_argument("--rom", type=Path, metavar="IMAGE", help="model image folder (ptqtp export) to hold in ROM")
    h.add_argument("--engine", action="store_true", help=argparse.SUPPRESS)  # the only design now; accepted
    engine_args(h)
    h.add_argument("--no-synth", action="store_true", help="only write the Verilog, skip Yosys and nextpnr")
    h.add_argument("--no-fmax", action="store_true", help="skip place-and-route (nextpnr-ecp5)")
    h.add_argument("--timeout", type=positive, default=3600, help="seconds per tool step (default 3600)")
    json_arg(h, "the summary and synthesis report")
    h.add_argument("--freq", type=positive_rate, default=100.0, help="nextpnr target frequency in MHz (default 100)")
    h.add_argument(
        "--seed",
        type=int,
        nargs="+",
        default=[1],
        help="nextpnr placement seeds, one place-and-route each (default 1; Fmax varies by seed)",
    )
    sm = sub.add_parser(
        "sim",
        description="Build the engine in Verilator (cached by a hash of its Verilog), put the "
        "chosen layers' model image in its simulated DRAM, run a batch through each and compare "
        "every output with the golden model: on the compiled C++ harness (default) or the cocotb "
        "bench with cocotbext-axi (--bench cocotb; the same outputs and cycles).",
    )
    sm.add_argument("source", type=Path, help="packed artifact (.safetensors) or model image folder (ptqtp export)")
    sm.add_argument("--layers", type=regex, default=".*", help="regex of the layers to run (default: all)")
    samples_arg(sm, 1, "per layer, run in batches of M")
    sm.add_argument("--inputs", type=Path, help=".npy of float activations (m, d) to use instead (layers of that d)")
    sm.add_argument("--stall", type=share, default=0.0, help="probability of back-pressure per cycle on both streams")
    sm.add_argument("--mem-busy", type=share, default=0.0, help="share of cycles the memory pauses (default 0)")
    sm.add_argument("--seed", type=int, default=0, help="seed of the random inputs and stalls (default 0)")
    sm.add_argument(
        "--waves",
        type=Path,
        help="write the waveform here: NAME.vcd.gz (gzip-compressed VCD) or NAME.vcd; with --bench "
        "cocotb also NAME.fst (needs the lz4 headers)",
    )
    sm.add_argument(
        "--from", dest="wave_from", type=int, default=0, metavar="C", help="first cycle of --waves (default 0)"
    )
    sm.add_argument("--to", dest="wave_to", type=int, metavar="C", help="last cycle of --waves (default: the end)")
    sm.add_argument(
        "--clock-mhz", type=positive_rate, default=100.0, help="clock for the throughput figure (default 100)"
    )
    engine_args(sm)
    bench_arg(sm)
    json_arg(sm, "the verdict and cycle counts")
    pl = sub.add_parser(
        "plan",
        description="The engine's cycle model per layer (compute- or bandwidth-bound) for decode "
        "(m = 1) and prefill (m = M), bytes per token, and the share of the board's "
        "bandwidth used. Boards and their sources: ptqtp/workflows/boards.json.",
    )
    pl.add_argument("artifact", type=Path, help="packed artifact (.safetensors)")
    pl.add_argument("--board", action="append", help="board key (repeatable; default: every board)")
    pl.add_argument("--bandwidth", type=positive_rate, help="memory bandwidth in GB/s instead of a board (with --fmax)")
    pl.add_argument("--fmax", type=positive_rate, help="engine clock in MHz (with --bandwidth)")
    pl.add_argument(
        "--context",
        type=positive,
        nargs="+",
        default=[128, 512, 1024],
        help="KV-cache lengths for the whole-token figures (default 128 512 1024)",
    )
    pl.add_argument(
        "--decoder-lanes",
        type=positive,
        default=16,
        help="element operations a cycle of the decoder's vector unit (default 16)",
    )
    json_arg(pl, "the plans")
    engine_args(pl, both_packings=True)
    pl.set_defaults(func=cmd_plan)
    ds = sub.add_parser(
        "dse",
        description="Synthesise every (P, R, M, DW) for the LFE5U-85F (Yosys + nextpnr-ecp5, cached by "
        "the Verilog's hash), apply the plan's cycle model on every board, pick per board "
        "the configuration with the most decode tokens/s that fits, and write dse.md, "
        "dse.json, roofline.png and pareto.png to --out.",
    )
    ds.add_argument("artifact", type=Path, help="packed artifact (.safetensors)")
    ds.add_argument("--lanes", type=positive, nargs="+", help="P values (default 16 32 64)")
    ds.add_argument("--rows", type=positive, nargs="+", help="R values (default 1 2 4)")
    ds.add_argument("--vectors", type=positive, nargs="+", help="M values (default 4)")
    ds.add_argument("--data-width", type=positive, nargs="+", help="DW values (default 128 512)")
    ds.add_argument(
        "--quality",
        type=Path,
        metavar="ROWS.json",
        help="instead of the synthesis sweep: the perplexity of each allocation in ROWS.json (`ptqtp eval --json`, "
        "methods and --bits-per-weight budgets) against whole-token tokens/s per board and packing, on one engine "
        "(--lanes/--rows/--vectors/--data-width, one value each; default the engine's defaults, whose fit dse "
        "measured) at each board's clock; writes quality.md, quality.json and quality_front.png",
    )
    ds.add_argument(
        "--target-tps",
        type=float,
        default=None,
        help="with --quality: per board, the allocation with the lowest perplexity at this many tokens/s or more",
    )
    ds.add_argument(
        "--context", type=positive, default=512, help="with --quality: the context tokens are planned at (default 512)"
    )
    ds.add_argument("--board", action="append", help="board key (repeatable; default: every board)")
    ds.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    ds.add_argument(
        "--distributed",
        action="store_true",
        help="run as one rank of torch.distributed (torchrun --nproc_per_node N [--nnodes ...] -m ptqtp.tools.cli "
        "dse ... --distributed): points are shared out round robin, each synthesised once (cached by hash on "
        "its machine, so a rerun redoes only what a dead rank left), rank 0 writes the results",
    )
    ds.add_argument("-o", "--output", type=Path, default=Path("out/dse"), help="output folder (default out/dse)")
    json_arg(ds, "the sweep and the best point per board (also OUTPUT/dse.json)")
    ds.set_defaults(func=cmd_dse)
    e.set_defaults(func=cmd_export)
    b.set_defaults(func=cmd_budget)
    h.set_defaults(func=cmd_hdl)
    sm.set_defaults(func=cmd_sim)


def cmd_export(args) -> int:
    from ptqtp.workflows.export import MODEL_IMAGE_HEADERS, export_model_image

    params = engine_params(args)
    rows = export_model_image(args.artifact, args.output, params.layout, int_config(args), args.layers)
    print(markdown_table(MODEL_IMAGE_HEADERS, rows))
    total = (args.output / "weights.bin").stat().st_size
    print(
        f"{len(rows)} layers, {total / 2**20:.1f} MiB for the engine P={params.lanes} R={params.rows} "
        f"planes={params.planes} offset={params.offset} DW={params.data_width} packing={params.packing} "
        f"in {args.output}"
    )
    write_json(args.json, [dict(zip(MODEL_IMAGE_HEADERS, r)) for r in rows])
    return 0


def _artifact_shapes(artifact: Path) -> tuple[list[LayerShape], set[int]]:
    """The artifact's linears as the plan sees them, and their group sizes (one load)."""
    layers = _load_artifact(artifact).layers
    shapes = [LayerShape(name, l.out_features, l.d_pad, l.planes, l.offsets is not None) for name, l in layers.items()]
    return shapes, {l.group_size for l in layers.values()}


def _layer_shapes(artifact: Path) -> list[LayerShape]:
    return _artifact_shapes(artifact)[0]


def _decoder_arch(artifact: Path):
    """The integer decoder's view of the artifact's model (``ptqtp.hf_config``); ``ValueError``
    saying why there is none (no model config, or a model the decoder does not support)."""
    import json

    from ptqtp.formats.artifact import artifact_metadata
    from ptqtp.golden_decoder import DecoderArch

    raw = artifact_metadata(artifact).get("ptqtp.hf_config")
    if not raw:
        raise ValueError("the artifact records no model config")
    return DecoderArch.from_hf(json.loads(raw))


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
    layers, groups = _artifact_shapes(args.artifact)
    if len(groups) == 1:  # the engine is built for the model's G
        params = replace(params, group_size=groups.pop())
    if (args.bandwidth is None) != (args.fmax is None):
        raise ValueError("--bandwidth and --fmax go together")
    if args.bandwidth is not None:
        chosen = [Board("custom", f"{args.bandwidth:g} GB/s at {args.fmax:g} MHz", args.bandwidth, args.fmax)]
    else:
        chosen = _boards(args.board)
    plans = [plan(layers, replace(params, packing=pk), b) for b in chosen for pk in packings]
    for p in plans:  # what these figures rest on
        p["fmax_source"] = "given (--fmax)" if args.fmax is not None else "assumed (boards.json)"
        p["fit_checked"] = False
    print(
        f"{args.artifact.name}: {len(layers)} linears on the engine P={params.lanes} R={params.rows} "
        f"M={params.vectors} DW={params.data_width}; the linears alone (on the host today: {HOST_SIDE}):"
    )
    print(
        markdown_table(
            [
                "board",
                "packing",
                "GB/s peak x DRAM efficiency",
                "MHz",
                "decode tok/s",
                "prefill tok/s",
                "MB/token",
                "bandwidth used",
                "compute ceiling tok/s",
            ],
            [
                [
                    p["board"],
                    p["engine"]["packing"],
                    f"{p['bandwidth_gbs']:g} x {p['dram_efficiency']:.0%}",
                    f"{p['fmax_mhz']:g} ({p['fmax_source'].split(' ')[0]})",
                    round(p["decode_tokens_per_s"], 1),
                    round(p["prefill_tokens_per_s"], 1),
                    round(p["bytes_per_token"] / 1e6, 2),
                    f"{p['bandwidth_used']:.0%}",
                    round(p["compute_bound_tokens_per_s"], 1),
                ]
                for p in plans
            ],
        )
    )
    for b in chosen:
        print(f"DRAM efficiency of {b.key}: {b.dram_efficiency:.0%}, {b.efficiency_source}")
    for p in plans:
        if not p["fits_memory"]:
            print(
                f"NOTE: {p['board']} ({p['engine']['packing']}): the linears' "
                f"{p['bytes_per_token'] / 2**20:.1f} MiB do not fit its {p['memory_mb']} MiB of memory; "
                "its tok/s is what the engine would do, not what the board can"
            )
    if len(chosen) == 1:
        print(
            markdown_table(
                ["layer kind", "packing", "layers", "decode kcycles/token", "bound", "MB/token"],
                [
                    [
                        k,
                        p["engine"]["packing"],
                        v["layers"],
                        round(v["decode_cycles"] / 1e3, 1),
                        v["bound"],
                        round(v["bytes"] / 1e6, 2),
                    ]
                    for p in plans
                    for k, v in p["kinds"].items()
                ],
            )
        )
    print(
        "Clocks are assumptions or given, not synthesised here, and the fit of this configuration on each board's "
        "FPGA is not checked: `ptqtp hdl` synthesises one configuration, `ptqtp dse` sweeps and checks fit."
    )
    _whole_token_plans(args, layers, params, chosen, packings, plans)
    write_json(args.json, plans)
    return 0


def _token_core_plans(args, arch, layers, chosen, packings, plans, group_size) -> None:
    """The token core as built (docs/DECODER.md): its cycle model over the program it runs."""
    from ptqtp.workflows.plan import token_core_plan

    ref = 512 if 512 in args.context else args.context[-1]
    try:
        rows = []
        for p, (b, pk) in zip(plans, [(b, pk) for b in chosen for pk in packings]):
            p["token_core"] = {str(c): token_core_plan(arch, layers, b, c, pk, group_size) for c in args.context}
            t = p["token_core"]
            rows.append(
                [b.key, pk]
                + [round(t[str(c)]["tokens_per_s"], 2) for c in args.context]
                + [round(t[str(ref)]["tokens_per_s_per_gbs"], 2)]
            )
    except ValueError as e:
        print(f"token core: not planned ({e})")
        return
    print(
        "the token core as built (one element a cycle or slower in its vector units and attention; the RTL's cycles):"
    )
    print(
        markdown_table(
            ["board", "packing"] + [f"tok/s @ {c}" for c in args.context] + [f"tok/s per GB/s @ {ref}"],
            rows,
        )
    )


def _whole_token_plans(args, layers, params, chosen, packings, plans) -> bool:
    """Print every byte and cycle of a decoded token (the integer decoder's formats) per board
    and context, and add them to ``plans`` as ``whole_token``; False (and a note) for a model
    the decoder does not support."""
    from dataclasses import replace

    from ptqtp.golden_decoder import DecoderFormat
    from ptqtp.workflows.plan import ZTACHIP, DecoderUnit, whole_token_plan

    try:
        arch = _decoder_arch(args.artifact)
    except ValueError as e:
        print(f"whole token: not planned ({e})")
        return False
    fmt, unit = DecoderFormat(act_bits=params.act_bits), DecoderUnit(lanes=args.decoder_lanes)
    ref = 512 if 512 in args.context else args.context[-1]  # the context issue 27's target is set at
    rows = []
    for p, (b, pk) in zip(plans, [(b, pk) for b in chosen for pk in packings]):
        p["whole_token"] = {
            str(c): whole_token_plan(layers, replace(params, packing=pk), b, arch, fmt, c, unit) for c in args.context
        }
        w = p["whole_token"]
        rows.append(
            [b.key, pk]
            + [round(w[str(c)]["token_tokens_per_s"], 2) for c in args.context]
            + [round(w[str(ref)]["tokens_per_s_per_gbs"], 2), round(w[str(ref)]["token_bytes"] / 1e6, 1)]
        )
    print(
        f"whole token on the engine and the decoder units ({fmt.describe()}; vector unit {unit.lanes} lanes, "
        f"lm_head {unit.lm_macs} MACs/cycle):"
    )
    print(
        markdown_table(
            ["board", "packing"]
            + [f"tok/s @ {c}" for c in args.context]
            + [f"tok/s per GB/s @ {ref}", f"MB/token @ {ref}"],
            rows,
        )
    )
    _token_core_plans(args, arch, layers, chosen, packings, plans, params.group_size)
    per_gbs = ZTACHIP["tokens_per_s"] / ZTACHIP["bandwidth_gbs"]
    print(
        f"reference: ztachip {ZTACHIP['tokens_per_s']:g} tok/s at {ZTACHIP['bandwidth_gbs']:g} GB/s = "
        f"{per_gbs:.1f} tok/s per GB/s, whole tokens ({ZTACHIP['source']})"
    )
    if len(plans) == len(packings):  # one board: where the bytes and cycles go
        print(
            markdown_table(
                ["part", "packing", "context", "MB/token", "kcycles/token", "bound"],
                [
                    [k, p["engine"]["packing"], c, round(v["bytes"] / 1e6, 3), round(v["cycles"] / 1e3, 1), v["bound"]]
                    for p in plans
                    for c in [ref]
                    for k, v in p["whole_token"][str(c)]["parts"].items()
                ],
            )
        )
    return True


def cmd_dse(args) -> int:
    import time

    from ptqtp.workflows import dse

    if args.quality is not None:
        return _quality_dse(args)
    if args.target_tps is not None:
        raise ValueError("--target-tps chooses among --quality's allocations; give --quality ROWS.json")
    args.lanes, args.rows = args.lanes or [16, 32, 64], args.rows or [1, 2, 4]
    args.vectors, args.data_width = args.vectors or [4], args.data_width or [128, 512]
    layers = _layer_shapes(args.artifact)
    boards = _boards(args.board)
    points = [
        dse.DesignPoint(P, R, M, DW)
        for P in args.lanes
        for R in args.rows
        for M in args.vectors
        for DW in args.data_width
    ]
    for p in points:
        p.params().check_layer(max(l.n for l in layers), max(l.d_pad for l in layers), 2, False)
    rank, world = 0, 1
    if args.distributed:
        rank, world, _, leave = join_ranks()
    synth = {}
    for i, p in enumerate(points, 1):
        if (i - 1) % world != rank:
            continue
        t0 = time.perf_counter()
        rep = synth[p] = dse.synthesise(p, seed=args.seed)
        fmax = f"{rep['fmax_mhz']:.1f} MHz" if rep.get("fmax_mhz") else rep.get("fmax_error", "no Fmax")
        dse.progress(
            f"[{i}/{len(points)}] {p.label}: LUT {rep['ecp5']['LUT']} FF {rep['ecp5']['FF']} "
            f"BRAM {rep['ecp5']['BRAM']} DSP {rep['ecp5']['DSP']}, {fmax} "
            f"({'cached' if rep.get('cached') else f'{time.perf_counter() - t0:.0f} s'})"
        )
    if args.distributed:
        import torch.distributed as dist

        shares: list = [None] * world
        dist.all_gather_object(shares, synth)
        leave()
        if rank != 0:
            return 0
        synth = {p: share[p] for p in points for share in shares if p in share}
    args.output.mkdir(parents=True, exist_ok=True)
    rows = dse.explore(layers, synth, boards)
    best = dse.best_per_board(rows)
    front = set(dse.pareto_front(synth))
    sweep = markdown_table(
        ["P", "R", "M", "DW", "LUT", "FF", "BRAM", "DSP", "Fmax MHz", "peak Gtrit/s", "Pareto"],
        [
            [
                p.lanes,
                p.rows,
                p.vectors,
                p.data_width,
                *(dse.used_resources(r["ecp5"])[k] for k in ("LUT", "FF", "BRAM", "DSP")),
                round(r["fmax_mhz"], 1) if r.get("fmax_mhz") else "-",
                round(dse.peak_trits_per_s(p, r["fmax_mhz"]) / 1e9, 2) if r.get("fmax_mhz") else "-",
                "yes" if p in front else "",
            ]
            for p, r in sorted(synth.items())
        ],
    )
    board_rows = []
    for b in boards:
        r = best.get(b.key)
        if r is None:
            board_rows.append([b.key, b.bandwidth_gbs, "nothing fits", *["-"] * 7])
            continue
        pl, res = r["plan"], r["resources"]
        board_rows.append(
            [
                b.key,
                b.bandwidth_gbs,
                r["point"].label,
                f"{res['LUT']} / {res['FF']} / {res['BRAM']} / {res['DSP']}",
                f"{r['fmax_mhz']:g}" + ("" if b.family == "ecp5" else " (assumed)"),
                round(pl["decode_tokens_per_s"], 1),
                round(pl["prefill_tokens_per_s"], 1),
                "/".join(sorted({k["bound"] for k in pl["kinds"].values()})),
                f"{pl['bandwidth_used']:.0%}",
                round(pl["bytes_per_token"] / 1e6, 1),
            ]
        )
    boards_md = markdown_table(
        [
            "board",
            "GB/s",
            "best config",
            "LUT / FF / BRAM / DSP (ECP5 netlist)",
            "MHz",
            "decode tok/s",
            "prefill tok/s",
            "bound (decode)",
            "bandwidth used",
            "MB/token",
        ],
        board_rows,
    )
    roof = dse.plot_roofline(args.output / "roofline.png", layers, boards, best)
    par = dse.plot_pareto(args.output / "pareto.png", synth)
    head = (
        f"{args.artifact.name}: {len(layers)} linears; on the host: {HOST_SIDE}. Fit on AMD parts: ECP5 netlist "
        f"as a proxy (LUT6 >= LUT4, RAMB36 = 2 x DP16KD); ECP5 boards run at each point's own Fmax (seed "
        f"{args.seed}), others at the clock assumed in boards.json."
    )
    text = (
        f"{head}\n\n## Sweep (LFE5U-85F)\n\n{sweep}\n\n## Best per board\n\n{boards_md}\n\n"
        f"![roofline]({roof.name})\n\n![pareto]({par.name})\n"
    )
    atomic_write(args.output / "dse.md", lambda t: t.write_text(text))
    record = {
        "sweep": [{"point": vars(p), **r} for p, r in sorted(synth.items())],
        "best": {
            k: {**{x: y for x, y in r.items() if x != "point"}, "point": vars(r["point"])} for k, r in best.items()
        },
    }
    write_json(args.output / "dse.json", record)
    write_json(args.json, record)
    print(text)
    print(f"wrote {args.output / 'dse.md'}, dse.json, {roof.name}, {par.name}")
    return 0


def _load_artifact(path: Path):
    from ptqtp.formats.artifact import load_artifact

    return load_artifact(path)


def cmd_budget(args) -> int:
    from ptqtp.workflows.budget import budget_sweep

    name, layer = pick_layer(args.artifact, args.layer)
    rows, headers = budget_sweep(layer, random_activations(args.samples, layer.in_features, args.seed))
    print(f"{name}: relative output error of the integer datapath, {args.samples} random vectors")
    print(markdown_table(headers, rows))
    write_json(args.json, {"layer": name, "samples": args.samples, "rows": [dict(zip(headers, r)) for r in rows]})
    return 0


def cmd_hdl(args) -> int:
    from ptqtp.hdl.engine import TritEngine  # Amaranth and Yosys: heavy, optional
    from ptqtp.hdl.synth import fit_lines, synth_report, to_verilog

    params = engine_params(args)
    rom = None
    if args.rom is not None:
        from ptqtp.workflows.simulate import engine_image

        rom = engine_image(args.rom, params).blob_bytes()
    top = "trit_engine"
    text = to_verilog(TritEngine(params, rom=rom), name=top)
    summary = (
        f"engine P={params.lanes} R={params.rows} planes={params.planes} offset={params.offset} "
        f"M={params.vectors} DW={params.data_width} A={params.act_bits} S={params.scale_bits} "
        f"ACC={params.acc_bits} max d={params.max_d} packing={params.packing}; "
        + (f"weights in ROM from {args.rom}" if rom else "any layer at run time")
    )
    atomic_write(args.output, lambda tmp: tmp.write_text(text))
    print(f"{args.output}: {summary}", flush=True)
    record = {"verilog": str(args.output), "summary": summary, "engine": vars(params)}
    if not args.no_synth:

        def resources(e, flow):  # printed before place and route starts
            print(
                f"ECP5: LUT {e['LUT']}  FF {e['FF']}  DSP(MULT18X18D) {e['DSP']}  BRAM(DP16KD) {e['BRAM']}  "
                f"LUTRAM {e['LUTRAM']}  CARRY {e['CARRY']} (LUT mapping: {flow})"
            )
            print(fit_lines(e)[1], flush=True)

        rep = synth_report(
            text,
            top=top,
            fmax=not args.no_fmax,
            freq_mhz=args.freq,
            seeds=args.seed,
            timeout=args.timeout,
            progress=lambda m: print(m, file=sys.stderr, flush=True),
            on_resources=resources,
        )
        for seed, fmax in rep.get("fmax_by_seed", {}).items():
            print(
                f"Fmax {fmax:.1f} MHz (nextpnr-ecp5, target {args.freq:g} MHz, seed {seed})"
                if fmax
                else f"seed {seed}: place and route failed: {rep['fmax_errors'][seed]}"
            )
        record |= {"fits_lfe5u_85f": fit_lines(rep["ecp5"])[0], **rep, "seeds": args.seed, "target_mhz": args.freq}
    write_json(args.json, record)
    return 0


def cmd_sim(args) -> int:
    from ptqtp.workflows.simulate import simulate_layers  # Amaranth, Verilator, cocotb: heavy, optional

    rep = simulate_layers(
        args.source,
        engine_params(args),
        args.layers,
        args.samples,
        inputs=args.inputs,
        stall=args.stall,
        mem_busy=args.mem_busy,
        seed=args.seed,
        waves=args.waves,
        window=(args.wave_from, args.wave_to if args.wave_to is not None else 1 << 62),
        bench=args.bench,
        progress=lambda m: print(m, file=sys.stderr, flush=True),
    )
    print(
        markdown_table(
            ["layer", "n x d", "m", "cycles", "model cycles", "lanes busy", "bit-exact"],
            [
                [r["layer"], r["shape"], r["m"], r["cycles"], r["model_cycles"], f"{r['busy']:.1%}", r["bit_exact"]]
                for r in rep["runs"]
            ],
        )
    )
    verdict = "MATCH" if rep["bit_exact"] else f"MISMATCH ({rep['mismatches']}; first {rep['first_mismatch']})"
    total = rep["cycles"]
    print(
        f"{verdict}: {len(rep['runs'])} runs on one engine build ({rep['bench']} bench), every output against "
        "the golden model"
    )
    print(
        f"{total:,} cycles = {total / args.clock_mhz / 1e3:.3f} ms at {args.clock_mhz:g} MHz; simulation "
        f"{rep['wall_s']:.2f} s = {rep['cycles_per_s']:,.0f} cycles/s"
    )
    if args.waves:
        print(f"waveform: {args.waves}")
    write_json(args.json, rep)
    return 0 if rep["bit_exact"] else 1


def _quality_dse(args) -> int:
    import json

    from ptqtp.golden_decoder import DecoderFormat
    from ptqtp.hdl.engine_model import EngineParams
    from ptqtp.workflows import quality

    given = {"lanes": args.lanes, "rows": args.rows, "vectors": args.vectors, "data_width": args.data_width}
    many = sorted(k for k, v in given.items() if v and len(v) > 1)
    if many:
        raise ValueError(f"--quality plans one engine: give one value of --{many[0].replace('_', '-')}")
    layers, groups = _artifact_shapes(args.artifact)
    if len(groups) != 1:
        raise ValueError(f"{args.artifact}: layers of group sizes {sorted(groups)}; the engine has one G")
    params = EngineParams(**{k: v[0] for k, v in given.items() if v}, group_size=groups.pop())
    try:
        rows = json.loads(args.quality.read_text())
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "method" in r for r in rows):
            raise ValueError("not a list of rows with a method each")
        for r in rows:
            if not isinstance(r.get("perplexity"), (int, float)):
                raise ValueError(f"row {r['method']!r} has no perplexity")
    except (OSError, ValueError) as e:
        raise ValueError(f"{args.quality}: not `ptqtp eval --json` rows ({e})") from None
    try:
        arch = _decoder_arch(args.artifact)
    except ValueError as e:
        raise ValueError(f"{args.artifact}: no whole token to plan ({e})") from None
    boards = _boards(args.board)
    fmt = DecoderFormat(act_bits=params.act_bits)
    points, refs = quality.quality_points(rows, layers, params, boards, arch, fmt, args.context)
    if not points:
        raise ValueError(f"{args.quality}: no row the engine runs (trit-plane methods, or budgets with their planes)")
    args.output.mkdir(parents=True, exist_ok=True)
    engine = f"P{params.lanes} R{params.rows} M{params.vectors} DW{params.data_width}"
    lines = [
        f"Perplexity against whole-token decode tokens/s at context {args.context}: engine {engine} with a one- "
        f"or two-plane datapath (K planes in passes) at each board's clock (boards.json; fit measured by "
        f"`ptqtp dse`), integer decoder {fmt.describe()}.",
        "",
    ]
    chosen = {}
    for b in boards:
        front = quality.quality_front(points, b.key)
        lines += [
            f"### {b.key} ({b.bandwidth_gbs:g} GB/s, {b.fmax_mhz:g} MHz): the front",
            "",
            markdown_table(
                [
                    "allocation",
                    "packing",
                    "engine planes",
                    "bits/weight (eval row)",
                    "perplexity",
                    "tok/s",
                    "tok/s per GB/s",
                    "MB/token (linears)",
                ],
                [
                    [
                        p["method"],
                        p["packing"],
                        p["engine_planes"],
                        round(p["bits"], 3) if p["bits"] else "-",
                        round(p["perplexity"], 2),
                        round(p["tokens_per_s"], 2),
                        round(p["tokens_per_s_per_gbs"], 2),
                        f"{p['token_bytes'] / 1e6:.1f} ({p['linear_bytes'] / 1e6:.1f})",
                    ]
                    for p in front
                ],
            ),
            "",
        ]
        if args.target_tps is not None:
            best = chosen[b.key] = quality.best_under_target(points, b.key, args.target_tps)
            lines.append(
                f"At {args.target_tps:g} tok/s or more: "
                + (
                    f"**{best['method']}** ({best['packing']}, {best['engine_planes']}-plane engine), perplexity "
                    f"{best['perplexity']:.2f} at "
                    f"{best['tokens_per_s']:.2f} tok/s"
                    if best
                    else "no allocation is fast enough"
                )
            )
            lines.append("")
    if refs:
        lines.append(
            "References (not on the engine): " + ", ".join(f"{r['method']} {r['perplexity']:.2f}" for r in refs)
        )
    text = "\n".join(lines)
    print(text)
    figure = quality.plot_quality_front(
        args.output / "quality_front.png", points, refs, [b.key for b in boards], args.context
    )
    atomic_write(args.output / "quality.md", lambda t: t.write_text(text + "\n"))
    result = {"engine": vars(params), "context": args.context, "points": points, "references": refs, "chosen": chosen}
    write_json(args.output / "quality.json", result)
    print(f"wrote {args.output / 'quality.md'}, {figure}")
    write_json(args.json, result)
    return 0
