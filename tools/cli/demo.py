"""``ptqtp demo``: the main job on the shipped model, or the quick sample report."""

from __future__ import annotations

import time
from pathlib import Path

from ptqtp.workflows.pipeline import run_pipeline
from ptqtp.workflows.sample import sample_report

from ._common import config_args, config_from_args


def register(sub) -> None:
    d = sub.add_parser("demo", description="On the shipped SmolLM2: quantize, write the artifact and one layer's hardware "
                                   "image, generate Verilog with a synthesis summary, compare golden / Triton / RTL "
                                   "bit for bit on real activations, run a short hardware-in-the-loop perplexity; "
                                   "one report (Markdown and JSON). --sample runs the quick sample-matrix report.")
    d.add_argument("-o", "--output", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    d.add_argument("--sample", action="store_true", help="only the quick report on the built-in sample matrix")
    d.add_argument("--fmax", action="store_true", help="also place and route for Fmax (adds minutes)")
    config_args(d)
    d.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    if args.sample:
        print(sample_report(args.output, config_from_args(args)))
        print(f"artifact: {args.output / 'artifact.safetensors'}\nreport:   {args.output / 'report.md'}")
        return 0
    t0 = time.perf_counter()
    result = run_pipeline(args.output, fmax=args.fmax)
    print((args.output / "report.md").read_text())
    print(f"report: {args.output / 'report.md'} and report.json ({time.perf_counter() - t0:.0f} s)")
    return 0 if result["all_bit_exact"] else 1
