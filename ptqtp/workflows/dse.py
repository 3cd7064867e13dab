"""Design-space exploration of the streaming engine (``ptqtp dse``).

Each design point (P, R, M, DW) is synthesised for the LFE5U-85F (Yosys synth_ecp5 and
nextpnr-ecp5; cached by the Verilog's hash in :func:`ptqtp.hdl.synth.cached_synth_report`)
and fed to ``ptqtp plan``'s cycle model on every board. Per board the point with the most
decode tokens/s that fits the FPGA wins (ties: fewer LUTs).

Clocks: an ECP5 board runs each point at that point's own nextpnr Fmax; other families run
at the board's assumed clock (``boards.json``), since only ECP5 is synthesised here. Fit on
AMD parts uses the ECP5 netlist as a conservative proxy: a LUT6 holds any LUT4 (LUTRAM
counted as two LUTs), two 18 Kb DP16KD fit one RAMB36, one DSP48 covers an 18x18 multiply.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from ptqtp.hdl.engine_model import EngineParams

from .figures import pyplot
from .plan import Board, LayerShape, plan

__all__ = [
    "DesignPoint",
    "synthesise",
    "used_resources",
    "peak_trits_per_s",
    "fits",
    "explore",
    "best_per_board",
    "pareto_front",
    "plot_roofline",
    "plot_pareto",
]


@dataclass(frozen=True, order=True)
class DesignPoint:
    lanes: int
    rows: int
    vectors: int
    data_width: int

    @property
    def label(self) -> str:
        return f"P{self.lanes} R{self.rows} M{self.vectors} DW{self.data_width}"

    def params(self) -> EngineParams:
        # Bursts of up to 64 beats, never crossing AXI's 4 KB boundary.
        return EngineParams(
            lanes=self.lanes,
            rows=self.rows,
            vectors=self.vectors,
            data_width=self.data_width,
            burst=min(64, 32768 // self.data_width),
        )


def synthesise(point: DesignPoint, seed: int = 1, timeout: int = 3600) -> dict:
    """ECP5 resources and nextpnr Fmax of the engine at ``point`` (cached)."""
    from ptqtp.hdl.engine import TritEngine  # Amaranth and Yosys: heavy, optional
    from ptqtp.hdl.synth import cached_synth_report, to_verilog

    verilog = to_verilog(TritEngine(point.params()), name="trit_engine")
    return cached_synth_report(verilog, top="trit_engine", fmax=True, generic=False, timeout=timeout, seed=seed)


def used_resources(ecp5: dict) -> dict:
    """LUT (LUTRAM counted as two LUT4s), FF, BRAM and DSP of an ECP5 synthesis report."""
    return {"LUT": ecp5["LUT"] + 2 * ecp5.get("LUTRAM", 0), "FF": ecp5["FF"], "BRAM": ecp5["BRAM"], "DSP": ecp5["DSP"]}


def fits(board: Board, ecp5: dict) -> tuple[bool, str]:
    """(fits, the first resource that does not) of an ECP5 netlist on ``board``'s FPGA."""
    used = used_resources(ecp5)
    if board.family != "ecp5":
        used["BRAM"] = math.ceil(used["BRAM"] / 2)  # two 18 Kb blocks per RAMB36
    caps = {"LUT": board.luts, "FF": board.ffs, "BRAM": board.bram_blocks, "DSP": board.dsps}
    for k, cap in caps.items():
        if cap and used[k] > cap:
            return False, f"{k} {used[k]} > {cap}"
    return True, ""


def _clock(board: Board, synth: dict) -> float | None:
    if board.family == "ecp5":
        f = synth.get("fmax_mhz")
        # no timing result: not a usable design; above the SoC's system clock, no faster
        return min(math.floor(f), board.fmax_mhz) if f else None
    return board.fmax_mhz


def explore(layers: list[LayerShape], synth: dict[DesignPoint, dict], boards: list[Board]) -> list[dict]:
    """One row per (board, point): fit, clock, and the plan's figures at that clock."""
    rows = []
    for board in boards:
        for point, rep in sorted(synth.items()):
            ok, why = fits(board, rep["ecp5"])
            mhz = _clock(board, rep)
            row = {
                "board": board.key,
                "point": point,
                "fits": ok and mhz is not None,
                "why_not": why or ("" if mhz else rep.get("fmax_error", "no Fmax")),
                "fmax_mhz": mhz,
                "resources": used_resources(rep["ecp5"]),
            }
            if mhz:
                row["plan"] = plan(layers, point.params(), replace(board, fmax_mhz=mhz))
            rows.append(row)
    return rows


def best_per_board(rows: list[dict]) -> dict[str, dict]:
    """Per board, the fitting row with the most decode tokens/s (ties: fewer LUTs)."""

    def rank(r):
        return r["plan"]["decode_tokens_per_s"], r["plan"]["prefill_tokens_per_s"], -r["resources"]["LUT"]

    best: dict[str, dict] = {}
    for r in rows:
        if r["fits"] and (r["board"] not in best or rank(r) > rank(best[r["board"]])):
            best[r["board"]] = r
    return best


def peak_trits_per_s(point: DesignPoint, fmax_mhz: float) -> float:
    """Trit positions per plane per second with every lane busy: R * P * Fmax."""
    return point.rows * point.lanes * fmax_mhz * 1e6


def pareto_front(synth: dict[DesignPoint, dict]) -> list[DesignPoint]:
    """Points no other point beats on both LUTs (fewer) and peak throughput (more), by LUTs."""
    pts = [
        (used_resources(r["ecp5"])["LUT"], peak_trits_per_s(p, r["fmax_mhz"]), p)
        for p, r in synth.items()
        if r.get("fmax_mhz")
    ]
    front = [
        p for lut, thr, p in pts if not any(l2 <= lut and t2 >= thr and (l2, t2) != (lut, thr) for l2, t2, _ in pts)
    ]
    return sorted(front, key=lambda p: used_resources(synth[p]["ecp5"])["LUT"])


def plot_roofline(path: Path, layers: list[LayerShape], boards: list[Board], best: dict[str, dict]) -> Path:
    """Decode tokens/s against memory bandwidth for each board's chosen point at that board's
    clock: the slanted roof is bytes per token, the flat one the AXI bus (DW / 8 bytes a
    cycle) or the compute ceiling (dotted)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    bws = [10 ** (e / 10) for e in range(-15, 31)]  # 0.03 .. 1000 GB/s
    curves: dict[tuple, list[str]] = {}
    for key, r in best.items():
        curves.setdefault((r["point"], r["fmax_mhz"]), []).append(key)
    for (point, mhz), keys in sorted(curves.items()):
        tps = [plan(layers, point.params(), Board("bw", "", bw, mhz))["decode_tokens_per_s"] for bw in bws]
        (line,) = ax.plot(bws, tps, label=f"{point.label} @ {mhz:g} MHz ({', '.join(keys)})")
        ceiling = plan(layers, point.params(), Board("c", "", 1e6, mhz))["compute_bound_tokens_per_s"]
        ax.axhline(ceiling, color=line.get_color(), ls=":", lw=0.8)
    for b in boards:
        ax.axvline(b.bandwidth_gbs, color="grey", ls="--", lw=0.6)
        ax.text(b.bandwidth_gbs, 0.35, b.key, rotation=90, fontsize=7, va="bottom", ha="right", color="grey")
        if b.key in best:
            r = best[b.key]
            ax.plot([b.bandwidth_gbs], [r["plan"]["decode_tokens_per_s"]], "k*", ms=9)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(0.3, None)
    ax.set_xlabel("memory bandwidth (GB/s)")
    ax.set_ylabel("decode tokens/s (model's linears)")
    ax.set_title(f"Streaming engine roofline, {len(layers)} linears (star: each board's best fitting point)")
    ax.grid(True, which="both", lw=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_pareto(path: Path, synth: dict[DesignPoint, dict]) -> Path:
    """Two panels over the swept points: LUTs against Fmax, and LUTs against peak throughput
    (R * P * Fmax) with the Pareto front."""
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5))
    pts = [(p, r) for p, r in sorted(synth.items()) if r.get("fmax_mhz")]
    for p, r in pts:
        lut = used_resources(r["ecp5"])["LUT"]
        marker = {128: "o", 256: "s", 512: "^"}.get(p.data_width, "x")
        color = {1: "tab:blue", 2: "tab:orange", 4: "tab:green", 8: "tab:red"}.get(p.rows, "k")
        a1.scatter(lut, r["fmax_mhz"], marker=marker, color=color)
        a1.annotate(f"P{p.lanes}", (lut, r["fmax_mhz"]), fontsize=6, xytext=(3, 2), textcoords="offset points")
        a2.scatter(lut, peak_trits_per_s(p, r["fmax_mhz"]) / 1e9, marker=marker, color=color)
    front = pareto_front(synth)
    a2.plot(
        [used_resources(synth[p]["ecp5"])["LUT"] for p in front],
        [peak_trits_per_s(p, synth[p]["fmax_mhz"]) / 1e9 for p in front],
        "k--",
        lw=0.8,
        label="Pareto front",
    )
    for rows, color in ((1, "tab:blue"), (2, "tab:orange"), (4, "tab:green")):
        a2.scatter([], [], color=color, label=f"R = {rows}")
    for dw, marker in ((128, "o"), (512, "^")):
        a2.scatter([], [], color="grey", marker=marker, label=f"DW = {dw}")
    a1.set_xlabel("LUT4 (LUTRAM counted as 2), LFE5U-85F")
    a1.set_ylabel("Fmax (MHz, nextpnr-ecp5)")
    a2.set_xlabel("LUT4 (LUTRAM counted as 2), LFE5U-85F")
    a2.set_ylabel("peak G trit positions / s per plane (R·P·Fmax)")
    a1.set_title("Fmax against size")
    a2.set_title("throughput against size")
    for a in (a1, a2):
        a.grid(True, lw=0.3)
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
