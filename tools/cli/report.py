"""``ptqtp report``: a Markdown report with figures for an artifact (and a DSE run)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ._common import choose_layer, json_arg, samples_arg, write_json


def register(sub) -> None:
    r = sub.add_parser(
        "report",
        description="Write OUT/report.md with PNG figures: the per-layer weight error as a "
        "histogram and by block index, one layer's A x S error budget as a heat "
        "map, with --dse DIR (from `ptqtp dse`) the resource/Fmax sweep, and with --quality DIR (from "
        "`ptqtp dse --quality`) the perplexity against tokens/s front.",
    )
    r.add_argument("artifact", type=Path, help="packed artifact (.safetensors)")
    r.add_argument("--layer", help="layer name (default: the first)")
    samples_arg(r, 64, "for the error budget")
    r.add_argument("--dse", type=Path, help="a `ptqtp dse` output folder (its dse.json) to include")
    r.add_argument("--quality", type=Path, help="a `ptqtp dse --quality` output folder (its quality.json) to include")
    r.add_argument("-o", "--output", type=Path, default=Path("out/report"), help="output folder (default out/report)")
    json_arg(r, "the report's figures and numbers")
    r.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from ptqtp.formats.artifact import load_artifact
    from ptqtp.golden import IntConfig
    from ptqtp.workflows import figures
    from ptqtp.workflows.budget import budget_sweep
    from ptqtp.workflows.report import markdown_table, random_activations

    if args.dse is not None and not (args.dse / "dse.json").is_file():  # before anything is written
        raise FileNotFoundError(
            f"{args.dse / 'dse.json'}: no DSE results there; run `ptqtp dse ARTIFACT --output {args.dse}` first"
        )
    if args.quality is not None and not (args.quality / "quality.json").is_file():
        raise FileNotFoundError(
            f"{args.quality / 'quality.json'}: no quality front there; run "
            f"`ptqtp dse ARTIFACT --quality ROWS.json --output {args.quality}` first"
        )
    art = load_artifact(args.artifact)
    records = [layer.info for layer in art.layers.values()]
    if not records:
        raise ValueError(f"{args.artifact}: no quantized layers to report on")
    name, layer = choose_layer(art.layers, args.layer)
    rows, headers = budget_sweep(layer, random_activations(args.samples, layer.in_features))
    budget = [dict(zip(headers, r)) for r in rows]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    # everything is made in a staging folder beside the output and moved in at the end:
    # a failure leaves no half report behind
    work = Path(tempfile.mkdtemp(prefix=f".{args.output.name}-", dir=args.output.parent))
    try:
        figs = {
            "error histogram": figures.error_histogram(work / "error_hist.png", records),
            "error by layer": figures.error_by_layer(work / "error_by_layer.png", records),
            "error budget": figures.budget_heatmap(
                work / "budget.png", budget, layer=name, default=(IntConfig().act_bits, IntConfig().scale_bits)
            ),
        }
        errors = sorted(float(r["rel_error"]) for r in records)
        worst = sorted(records, key=lambda r: -float(r["rel_error"]))[:5]
        parts = [
            f"# {args.artifact.name}",
            f"{len(records)} quantized layers, method {records[0]['method']}; relative weight error median "
            f"{errors[len(errors) // 2]:.4f}, max {errors[-1]:.4f}.",
            "![error histogram](error_hist.png)",
            "![error by layer](error_by_layer.png)",
            "Largest errors:\n\n"
            + markdown_table(
                ["layer", "out x in", "rel. error"],
                [[r["name"], f"{r['out_features']}x{r['in_features']}", float(r["rel_error"])] for r in worst],
            ),
            f"## Error budget of {name} ({args.samples} random LLM-like vectors)",
            markdown_table(headers, rows),
            "![error budget](budget.png)",
        ]
        if args.dse is not None:
            from ptqtp.workflows import dse

            record = json.loads((args.dse / "dse.json").read_text())
            synth = {dse.DesignPoint(**e["point"]): e for e in record["sweep"]}
            figs["resources and Fmax"] = dse.plot_pareto(work / "pareto.png", synth)
            parts += ["## Engine resources and Fmax (`ptqtp dse`)", "![pareto](pareto.png)"]
        if args.quality is not None:
            from ptqtp.workflows import quality

            record = json.loads((args.quality / "quality.json").read_text())
            boards = list(dict.fromkeys(p["board"] for p in record["points"]))
            figs["quality front"] = quality.plot_quality_front(
                work / "quality_front.png", record["points"], record["references"], boards, record["context"]
            )
            parts += [
                "## Perplexity against whole-token tokens/s (`ptqtp dse --quality`)",
                "![quality front](quality_front.png)",
            ]
        (work / "report.md").write_text("\n\n".join(parts) + "\n")
        args.output.mkdir(exist_ok=True)
        for f in sorted(work.iterdir(), key=lambda f: f.name == "report.md"):  # report.md last
            os.replace(f, args.output / f.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    figs = {k: args.output / v.name for k, v in figs.items()}
    print(f"wrote {args.output / 'report.md'} with {', '.join(p.name for p in figs.values())}")
    write_json(
        args.json,
        {
            "artifact": str(args.artifact),
            "layers": len(records),
            "budget_layer": name,
            "budget": budget,
            "figures": {k: str(v) for k, v in figs.items()},
        },
    )
    return 0
