"""``ptqtp soc verilog|build|sim``: the LiteX system-on-chip around the engine."""

from __future__ import annotations

import sys
from pathlib import Path

from ptqtp.workflows.report import markdown_table

from ._common import engine_args, engine_params, json_arg, positive, positive_rate, regex, samples_arg, write_json


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def register(sub) -> None:
    from ptqtp.soc.system import BOARDS

    s = sub.add_parser(
        "soc",
        description="A LiteX system-on-chip around the engine: LiteDRAM for the weights, UARTBone or "
        "Etherbone to the host, no soft CPU (docs/SOC.md). verilog: write a board's SoC Verilog, CSR map and "
        "soc.json; build: bitstream and report for an ECP5 board (yosys, nextpnr-ecp5, ecppack from PyPI); sim: "
        "an artifact's layers through the whole SoC in Verilator (LiteDRAM's controller and SDRAM model), "
        "bit-exact against the golden model, with the measured DRAM efficiency.",
    )
    s.add_argument("action", choices=("verilog", "build", "sim"), help="what to do (see above)")
    s.add_argument("artifact", type=Path, nargs="?", help="sim: packed artifact (.safetensors)")
    s.add_argument(
        "--board",
        choices=list(BOARDS),
        help="verilog, build: the board (build: ecpix5 or ulx3s); sim: sim-sdr (default) or sim-ddr3",
    )
    s.add_argument("-o", "--output", type=Path, help="verilog, build: output folder (default out/soc-BOARD)")
    s.add_argument(
        "--seeds",
        type=positive,
        nargs="+",
        default=[1],
        help="build: nextpnr placement seeds; the first makes the bitstream and must meet timing, every one "
        "is reported (default 1)",
    )
    s.add_argument("--timeout", type=positive, default=3600, help="build: seconds each tool may take (default 3600)")
    s.add_argument(
        "--sys-clk-mhz",
        type=positive_rate,
        help="build: the SoC's system clock, engine included (default: the board's, ecpix5 60, ulx3s 50)",
    )
    s.add_argument("--layers", type=regex, default=r"layers\.0\.", help="sim: regex of the layers (default block 0's)")
    samples_arg(s, 1, "sim: per layer; one keeps the engine waiting on the weight stream")
    s.add_argument("--seed", type=int, default=0, help="sim: seed of the random inputs (default 0)")
    s.add_argument(
        "--backdoor",
        action="store_true",
        help="sim: start the simulator with the model image already in its DRAM (a sim-only backdoor; "
        "the default writes it over the bridge as a board is loaded, about 4 cycles a byte)",
    )
    json_arg(s, "the report (build, sim) or the SoC's configuration (verilog)")
    engine_args(s)
    s.set_defaults(func=cmd_soc)


def cmd_soc(args) -> int:
    from ptqtp.soc.system import BOARDS

    simulated = [n for n, b in BOARDS.items() if b.simulated]
    if args.action == "sim":
        if args.artifact is None:
            raise ValueError("soc sim needs an artifact: ptqtp soc sim ART [--board sim-sdr|sim-ddr3]")
        args.board = args.board or "sim-sdr"
        if args.board not in simulated:
            raise ValueError(f"soc sim runs a simulated board ({', '.join(simulated)}), not {args.board!r}")
        return cmd_sim(args)
    if args.artifact is not None:
        raise ValueError(f"soc {args.action} takes no artifact (only soc sim does)")
    if args.board is None:
        raise ValueError(f"soc {args.action} needs --board ({', '.join(BOARDS)})")
    if args.action == "build" and args.board in simulated:
        raise ValueError(f"board {args.board!r} is simulated: `ptqtp soc sim ART --board {args.board}` runs it")
    return cmd_verilog(args) if args.action == "verilog" else cmd_build(args)


def _params(args):
    """The engine the user asked for; the board sets its data width and burst."""
    return engine_params(args)


def cmd_verilog(args) -> int:
    from ptqtp.soc.simulate import generate

    out = args.output or Path(f"out/soc-{args.board}")
    config = generate(args.board, out, _params(args))
    write_json(args.json, config)
    print(
        f"{out}: ptqtp_soc.v, ptqtp_engine.v, csr.json, soc.json ({config['board']}, {config['memory']} "
        f"{config['module']}, engine DW={config['engine']['data_width']})"
    )
    return 0


def cmd_build(args) -> int:
    from ptqtp.soc.bitstream import build_bitstream

    out = args.output or Path(f"out/soc-{args.board}")
    rep = build_bitstream(
        args.board,
        out,
        _params(args),
        tuple(args.seeds),
        args.timeout,
        _progress,
        args.sys_clk_mhz * 1e6 if args.sys_clk_mhz else None,
    )
    print(f"bitstream: {rep['bitstream']}")
    print(
        markdown_table(
            ["resource", "used", "available", "share"],
            [[k, u, a, f"{u / a:.0%}"] for k, (u, a) in rep["resources"].items()],
        )
    )
    print()
    print(
        markdown_table(
            ["clock", "target MHz", "Fmax MHz by seed", "met (seed 1)"],
            [
                [
                    c,
                    v["target_mhz"],
                    ", ".join(f"{rep['fmax_by_seed'][s].get(c, 0):.1f}" for s in rep["fmax_by_seed"]),
                    v["met"],
                ]
                for c, v in rep["clocks"].items()
            ],
        )
    )
    mem = rep["memory"]
    print(
        f"memory: {mem['type']} {mem['module']}, peak {mem['peak_bytes_per_s'] / 1e6:.0f} MB/s; "
        f"host link {rep['link']}; {rep['durations_s']['total']:.0f} s"
    )
    write_json(args.json, rep)
    return 0


def cmd_sim(args) -> int:
    from ptqtp.workflows.soc import simulate_soc

    rep = simulate_soc(
        args.artifact, args.board, args.layers, args.samples, args.seed, _params(args), _progress, args.backdoor
    )
    print(
        markdown_table(
            ["layer", "n x d", "planes", "cycles", "weight bytes", "bytes/cycle", "of peak", "bit-exact"],
            [
                [
                    r["layer"],
                    r["shape"],
                    r["planes"],
                    r["cycles"],
                    r["bytes"],
                    f"{r['bytes_per_cycle']:.3f}",
                    f"{r['of_peak']:.1%}",
                    r["bit_exact"],
                ]
                for r in rep["runs"]
            ],
        )
    )
    t = rep["total"]
    verdict = (
        "MATCH" if rep["bit_exact"] else f"MISMATCH ({rep['mismatches']} layers; ERRORS {rep['counters']['ERRORS']})"
    )
    print(
        f"{verdict}: {len(rep['runs'])} layers through the {rep['board']} SoC ({rep['memory']} {rep['module']} "
        f"behind LiteDRAM), every output against the golden model"
    )
    print(
        f"weight stream: {t['bytes_per_cycle']:.3f} of {rep['peak_bytes_per_cycle']} bytes/cycle = "
        f"{t['of_peak']:.1%} of peak"
    )
    print(
        f"simulation: {rep['sim_cycles'] or 0:,} cycles (DRAM loaded {rep['dram_loaded']}, the runs, the "
        f"host's polling) in {rep['wall_s']:.1f} s = {rep['sim_cycles_per_s']:,.0f} cycles/s"
    )
    write_json(args.json, rep)
    return 0 if rep["bit_exact"] else 1
