"""docs/RESULTS.md from the commands' own ``--json`` output: no figure typed by hand.

python -m ptqtp.tools.results record NAME [--title T] -- COMMAND ARGS...
    run COMMAND (a ``ptqtp`` command, ``./run.sh``, or anything else), adding
    ``--json FILE`` to ptqtp commands; keep its JSON, the command line, the date, the
    machine, the wall time and the last lines it printed in docs/results/NAME.json
python -m ptqtp.tools.results
    write docs/RESULTS.md from every docs/results/*.json (sorted by name)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["machine", "record", "render", "headline", "readme_table", "update_readme", "main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
_PTQTP = ("ptqtp", ".venv/bin/ptqtp", "./run.sh", "run.sh")


def machine() -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    mem = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def _takes_json(cmd: list[str]) -> bool:
    return bool(cmd) and (
        Path(cmd[0]).name in {Path(c).name for c in _PTQTP}
        or (
            len(cmd) >= 3
            and cmd[1] == "-m"
            and cmd[2]
            in (
                "ptqtp.tools.cli",
                "ptqtp.tools.bench_sim",
                "ptqtp.tools.bench_decoder_formats",
                "ptqtp.tools.bench_decoder_hdl",
                "ptqtp.tools.bench_token",
                "ptqtp.tools.bench_token_hdl",
            )
        )
    )


def record(name: str, cmd: list[str], title: str | None = None, folder: Path = RESULTS) -> dict:
    """Run ``cmd`` and keep what it measured in ``folder/NAME.json``; returns the entry."""
    with tempfile.TemporaryDirectory(prefix="ptqtp-results-") as tmp:
        out_json = Path(tmp) / "out.json"
        full = cmd + (["--json", str(out_json)] if _takes_json(cmd) else [])
        t0 = time.perf_counter()
        proc = subprocess.run(full, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        data = json.loads(out_json.read_text()) if out_json.exists() else None
    # the command's own output first: set-up chatter on stderr must not hide its summary
    out_lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    lines = out_lines or [ln for ln in proc.stderr.splitlines() if ln.strip()]
    slowest = _durations(lines)
    entry = {
        "name": name,
        "title": title or name,
        "command": shlex.join(cmd),
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "wall_s": round(wall, 1),
        "exit_code": proc.returncode,
        "tail": lines[-6:],
        "durations": slowest,
        "record": data,
    }
    folder.mkdir(parents=True, exist_ok=True)
    tmp_path = folder / f".{name}.json.tmp"
    tmp_path.write_text(json.dumps(entry, indent=1, default=str) + "\n")
    tmp_path.replace(folder / f"{name}.json")
    return entry


def _durations(lines: list[str]) -> list[str]:
    """pytest's ``--durations`` block, if the output has one."""
    start = next((i for i, ln in enumerate(lines) if "slowest" in ln and "durations" in ln), None)
    if start is None:
        return []
    block = []
    for ln in lines[start + 1 :]:
        if ln.startswith("="):
            break
        block.append(ln)
    return block


def _table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return "\n".join(
        ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        + ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    )


def _body(rec) -> str | None:
    """The table a command's JSON deserves; None for a shape we do not know."""
    if isinstance(rec, dict) and "steps" in rec:  # ptqtp demo
        return (
            _table(
                ["step", "seconds", "facts"],
                [
                    [
                        s["step"],
                        s["seconds"],
                        ", ".join(f"{k}={v}" for k, v in s.items() if k not in ("step", "seconds")),
                    ]
                    for s in rec["steps"]
                ],
            )
            + f"\n\nTotal {rec.get('seconds', '?')} s; every path bit-exact: {rec.get('all_bit_exact')}."
        )
    soc = _soc_summary(rec)
    if soc:
        return soc
    if isinstance(rec, dict) and "ecp5" in rec:  # ptqtp hdl
        e = rec["ecp5"]
        rows = [[k, e.get(k)] for k in ("LUT", "FF", "DSP", "BRAM", "LUTRAM", "CARRY")]
        rows += [[f"Fmax seed {s} (MHz)", f] for s, f in (rec.get("fmax_by_seed") or {}).items()]
        return f"{rec.get('summary', '')}\n\n" + _table(["ECP5 (LFE5U-85F)", "value"], rows)
    if isinstance(rec, dict) and "runs" in rec and "cycles_per_s" in rec:  # ptqtp sim
        return (
            _table(
                ["layer", "n x d", "m", "cycles", "model cycles", "lanes busy", "bit-exact"],
                [
                    [r["layer"], r["shape"], r["m"], r["cycles"], r["model_cycles"], f"{r['busy']:.1%}", r["bit_exact"]]
                    for r in rec["runs"]
                ],
            )
            + f"\n\n{rec['cycles']:,} cycles simulated in {rec['wall_s']:.1f} s: {rec['cycles_per_s']:,.0f} cycles/s."
        )
    if isinstance(rec, list) and rec and isinstance(rec[0], dict) and "decode_tokens_per_s" in rec[0]:  # ptqtp plan
        return _table(
            ["board", "packing", "GB/s", "MHz", "decode tok/s", "prefill tok/s", "MB/token"],
            [
                [
                    p["board"],
                    p["engine"]["packing"],
                    p["bandwidth_gbs"],
                    p["fmax_mhz"],
                    round(p["decode_tokens_per_s"], 1),
                    round(p["prefill_tokens_per_s"], 1),
                    round(p["bytes_per_token"] / 1e6, 2),
                ]
                for p in rec
            ],
        )
    if isinstance(rec, dict):
        flat = [[k, v] for k, v in rec.items() if isinstance(v, (int, float, str, bool))]
        return _table(["field", "value"], flat) if flat else None
    return None


def _soc_summary(rec) -> str | None:
    """One line for a ``ptqtp soc build`` or ``soc sim`` record, else None."""
    if isinstance(rec, dict) and "bitstream" in rec and "clocks" in rec:  # ptqtp soc build
        use = rec["resources"]
        by_seed = rec.get("fmax_by_seed") or {}
        clocks = "; ".join(
            f"{c.replace('$glbnet$', '')} target {v['target_mhz']:g} MHz: "
            + " / ".join(f"{by_seed[s].get(c, 0):.1f}" for s in by_seed)
            + f" MHz (seeds {', '.join(map(str, by_seed))})"
            for c, v in rec["clocks"].items()
            if v["target_mhz"] >= 50
        )
        return (
            f"LUT4 {use['TRELLIS_COMB'][0]}/{use['TRELLIS_COMB'][1]}, FF {use['TRELLIS_FF'][0]}, "
            f"BRAM {use.get('DP16KD', [0])[0]}, DSP {use.get('MULT18X18D', [0])[0]}; {clocks}; "
            f"{rec['durations_s']['total']:.0f} s"
        )
    if isinstance(rec, dict) and "runs" in rec and "peak_bytes_per_cycle" in rec:  # ptqtp soc sim
        t = rec["total"]
        return (
            f"{len(rec['runs'])} layers bit-exact: {rec['bit_exact']}; weight stream {t['bytes_per_cycle']:.2f} of "
            f"{rec['peak_bytes_per_cycle']} bytes/cycle = {t['of_peak']:.1%} of the DRAM's peak"
        )
    return None


def headline(entry: dict) -> str:
    """One line for the README's table."""
    rec = entry.get("record")
    soc = _soc_summary(rec)
    if soc:
        return soc
    if isinstance(rec, dict) and "steps" in rec:
        return f"{rec.get('seconds')} s in all; every path bit-exact: {rec.get('all_bit_exact')}"
    if isinstance(rec, dict) and "max_model_error" in rec:  # tools/bench_token.py
        t = rec["tokens"][0]
        return (
            f"context {t['context']}: {t['rtl_cycles']:,} cycles on the RTL, the model {t['model_cycles']:,} "
            f"({t['model_error']:+.2%}); every token bit-exact with golden-int: {rec['all_bit_exact']}"
        )
    if isinstance(rec, dict) and "rtl" in rec.get("runs", {}):  # ptqtp generate --backend rtl
        r = rec["runs"]["rtl"]
        return (
            f"{len(r['ids'])} tokens generated on the RTL ({len(r['steps'])} steps with the prompt), every step "
            f"bit-exact with golden-int: {r['bit_exact']}; {r['cycles_per_token']:,.0f} cycles per generated token"
        )
    if isinstance(rec, dict) and "lut_share" in rec:  # tools/bench_token_hdl.py
        seeds = rec.get("fmax_by_seed") or {}
        fmax = " / ".join(f"{f:.1f}" if f else "-" for f in seeds.values())
        return (
            f"LUT {rec['LUT']} ({rec['lut_share']:.0%} of the LFE5U-85F), FF {rec['FF']}, BRAM {rec['BRAM']}, "
            f"DSP {rec['DSP']}; Fmax {fmax} MHz (seeds {', '.join(map(str, seeds))})"
        )
    if isinstance(rec, dict) and "ecp5" in rec:
        e, seeds = rec["ecp5"], rec.get("fmax_by_seed") or {}
        fmax = " / ".join(f"{f:.1f}" if f else "-" for f in seeds.values())
        return f"LUT {e['LUT']}, FF {e['FF']}, BRAM {e['BRAM']}, DSP {e['DSP']}" + (
            f"; Fmax {fmax} MHz (seeds {', '.join(map(str, seeds))})" if seeds else ""
        )
    if isinstance(rec, dict) and "points" in rec and "chosen" in rec:  # ptqtp dse --quality
        parts = []
        for board in dict.fromkeys(p["board"] for p in rec["points"]):
            best = rec["chosen"].get(board)
            parts.append(
                f"{board}: {best['method']} ({best['packing']}, {best['engine_planes']}-plane engine), "
                f"perplexity {best['perplexity']:.2f} at {best['tokens_per_s']:.2f} tok/s"
                if best
                else f"{board}: no allocation fast enough"
            )
        return "; ".join(parts)
    if isinstance(rec, dict) and "cycles_per_s" in rec:
        return f"{rec['cycles_per_s']:,.0f} simulated cycles/s; bit-exact: {rec['bit_exact']}"
    if isinstance(rec, dict) and "engines" in rec:  # tools/bench_sim.py
        parts = [
            f"{e['engine'].split(' M')[0]}: {e['compiled_cycles_per_s'] / 1e6:.2f} M cycles/s compiled"
            + (f" vs {e['cocotb_cycles_per_s'] / 1e3:.1f} k cocotb ({e['speedup']}x)" if e.get("speedup") else "")
            + f", same cycles: {e['same_results_and_cycles']}"
            for e in rec["engines"]
        ]
        if "one_token" in rec:
            t = rec["one_token"]
            parts.append(f"one token {t['token_wall_s']} s, bit-exact: {t['logits_bit_exact']}")
        if "hil" in rec:
            h = rec["hil"]
            parts.append(f"HIL {h['tokens']} tokens {h['wall_s']} s, bit-exact: {h['bit_exact_vs_golden']}")
        if "ranks" in rec:
            parts.append(f"2 ranks {rec['ranks']['speedup']}x")
        return "; ".join(parts)
    if isinstance(rec, list) and rec and isinstance(rec[0], dict) and "whole_token" in rec[0]:  # ptqtp plan
        parts = []
        for p in rec:
            ctx = "512" if "512" in p["whole_token"] else next(iter(p["whole_token"]))
            w = p["whole_token"][ctx]
            parts.append(
                f"{p['board']} {p['engine']['packing']}: {w['token_tokens_per_s']:.1f} tok/s "
                f"({w['tokens_per_s_per_gbs']:.1f} per GB/s) at context {ctx}"
            )
            if "token_core" in p:
                t = p["token_core"].get(ctx) or next(iter(p["token_core"].values()))
                parts[-1] += (
                    f", the token core as built {t['tokens_per_s']:.2f} ({t['tokens_per_s_per_gbs']:.2f} per GB/s)"
                )
        return "; ".join(parts) + "; ztachip (whole tokens): 8 tok/s at 1.2 GB/s = 6.7 per GB/s"
    if isinstance(rec, list) and rec and isinstance(rec[0], dict) and "fmax_min" in rec[0]:  # bench_decoder_hdl
        return "; ".join(
            f"{r['unit']}: LUT {r['LUT']}, DSP {r['DSP']}, BRAM {r['BRAM']}, Fmax >= {r['fmax_min']:.1f} MHz "
            f"over {len(r['fmax_by_seed'])} seeds"
            for r in rec
        )
    if isinstance(rec, list) and rec and isinstance(rec[0], dict) and "perplexity" in rec[0]:  # ptqtp eval
        return "; ".join(
            f"{r.get('method') or r['what'] + ' ' + r['format']} {r['perplexity']:.4g}"
            + (f" ({r['bits']:.3g} b/w)" if r.get("bits", 32) < 32 else "")
            + (f" = {r['vs_float']:.4f} x float" if "vs_float" in r else "")
            for r in rec
        )
    last = entry["tail"][-1] if entry.get("tail") else ""
    return f"{last.strip('= ')} (wall {entry['wall_s']} s)"


def readme_table(folder: Path = RESULTS) -> str:
    rows = []
    for path in sorted(folder.glob("*.json")):
        e = json.loads(path.read_text())
        rows.append([e["title"], headline(e), f"`{e['command']}`", e["date"]])
    return _table(["figure", "measured", "command", "date"], rows)


def update_readme(readme: Path, folder: Path = RESULTS) -> bool:
    """Replace the README's block between the results markers; False if it has none."""
    text = readme.read_text()
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    readme.write_text(f"{head}{begin}\n{readme_table(folder)}\n{end}{rest.split(end, 1)[1]}")
    return True


def render(folder: Path = RESULTS) -> str:
    """RESULTS.md's text from every entry in ``folder``."""
    parts = [
        "# Results",
        "",
        "Generated by `python -m ptqtp.tools.results` from `docs/results/*.json`, which "
        "`python -m ptqtp.tools.results record NAME -- COMMAND` writes from the command's own `--json` "
        "output. Do not edit by hand: record again and regenerate.",
        "",
    ]
    for path in sorted(folder.glob("*.json")):
        e = json.loads(path.read_text())
        m = e["machine"]
        parts += [
            f"## {e['title']}",
            "",
            f"`{e['command']}`",
            "",
            f"{e['date']}; {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}; "
            f"wall {e['wall_s']} s; exit code {e['exit_code']}.",
            "",
        ]
        body = _body(e.get("record"))
        parts += [body if body else "```\n" + "\n".join(e["tail"]) + "\n```", ""]
        rec = e.get("record")
        paths = rec.get("critical_path_by_seed") if isinstance(rec, dict) else None
        if paths:
            parts += ["Worst path per nextpnr seed (the design names it runs through, delay so far):", ""]
            for sd, path in paths.items():
                parts.append(f"- seed {sd}: " + " -> ".join(f"{q['through']} {q['ns']} ns" for q in path))
            parts += [""]
        if e.get("durations"):
            parts += ["Slowest tests (`--durations`):", "", "```\n" + "\n".join(e["durations"]) + "\n```", ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["record"]:
        if "--" not in argv:
            print("usage: python -m ptqtp.tools.results record NAME [--title T] -- COMMAND ...", file=sys.stderr)
            return 2
        cut = argv.index("--")
        p = argparse.ArgumentParser(prog="results record")
        p.add_argument("name")
        p.add_argument("--title")
        args = p.parse_args(argv[1:cut])
        entry = record(args.name, argv[cut + 1 :], args.title)
        print(f"{RESULTS / (args.name + '.json')}: exit {entry['exit_code']}, {entry['wall_s']} s")
        return entry["exit_code"]
    p = argparse.ArgumentParser(
        prog="python -m ptqtp.tools.results", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "RESULTS.md")
    args = p.parse_args(argv)
    args.output.write_text(render())
    wrote = [str(args.output)] + (["README.md's results table"] if update_readme(ROOT / "README.md") else [])
    print(f"wrote {', '.join(wrote)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
