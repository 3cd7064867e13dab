"""``ptqtp demo``: the main job on the shipped model, or the quick sample report."""

from __future__ import annotations

import time
from pathlib import Path

from ptqtp.workflows.pipeline import run_pipeline
from ptqtp.workflows.sample import sample_report

from ._common import config_args, config_from_args, json_arg, write_json


def register(sub) -> None:
    d = sub.add_parser(
        "demo",
        description="On the shipped SmolLM2: quantize, write the artifact and the engine's model "
        "image, generate the engine's Verilog and synthesise it (cached), compare golden / "
        "Triton / engine RTL bit for bit on real activations, a perplexity with every "
        "linear on the golden model, and every linear on one engine simulation for a "
        "token; one report (Markdown and JSON) with where the time went. --sample runs "
        "the quick sample-matrix report.",
    )
    d.add_argument("-o", "--output", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    d.add_argument("--sample", action="store_true", help="only the quick report on the built-in sample matrix")
    d.add_argument("--fmax", action="store_true", help="also place and route for Fmax (adds minutes)")
    json_arg(d, "the report")
    config_args(d)
    d.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    if args.sample:
        print(sample_report(args.output, config_from_args(args)))
        print(f"artifact: {args.output / 'artifact.safetensors'}\nreport:   {args.output / 'report.md'}")
        return 0
    t0 = time.perf_counter()
    result = run_pipeline(args.output, fmax=args.fmax)
    write_json(args.json, result)
    print((args.output / "report.md").read_text())
    print(f"report: {args.output / 'report.md'} and report.json ({time.perf_counter() - t0:.0f} s)")
    return 0 if result["all_bit_exact"] else 1
