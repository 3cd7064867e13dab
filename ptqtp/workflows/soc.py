"""``ptqtp soc sim``: an artifact's layers through the whole SoC in Verilator (LiteDRAM's real
controller and its SDRAM model, the host driver over UARTBone), every output against the
golden model, and the weight stream's measured DRAM efficiency."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from ptqtp.golden import GoldenLayer, IntConfig
from ptqtp.hdl.engine_model import EngineParams

from .report import random_activations

__all__ = ["simulate_soc", "efficiency"]


def efficiency(weight_bytes: int, cycles: int, peak_bytes_per_cycle: float) -> dict:
    """The weight stream's sustained bytes per cycle and its share of the DRAM's peak."""
    rate = weight_bytes / cycles if cycles else 0.0
    return {"bytes": weight_bytes, "cycles": cycles, "bytes_per_cycle": rate, "of_peak": rate / peak_bytes_per_cycle}


def simulate_soc(
    artifact: Path,
    board: str = "sim-sdr",
    pattern: str = r"layers\.0\.",
    samples: int = 1,
    seed: int = 0,
    params: EngineParams | None = None,
    progress=None,
    backdoor: bool = False,
) -> dict:
    """Run ``samples`` random LLM-like vectors through each layer of ``artifact`` matching
    ``pattern`` (default: block 0's linears) on the ``board`` SoC simulation; the report: per
    layer its cycles, weight bytes, bytes per cycle and verdict, and the totals."""
    from ptqtp.formats.artifact import load_artifact
    from ptqtp.runtime.soc import SocBackend

    art = load_artifact(artifact)
    names = [n for n in art.layers if re.search(pattern, n)]
    if not names:
        raise ValueError(f"{artifact}: no layer matches {pattern!r}")
    t0 = time.perf_counter()
    with SocBackend(board, params=params, backdoor=backdoor) as be:
        config = IntConfig(be.params.act_bits, be.params.scale_bits)
        layers = {n: GoldenLayer.from_packed(art.layers[n], config) for n in names}
        for i, n in enumerate(names):
            be.load(i, layers[n])
        rows, mismatches = [], 0
        rng = np.random.default_rng(seed)
        for i, n in enumerate(names):
            layer = layers[n]
            x = random_activations(samples, layer.d, int(rng.integers(1 << 31)))
            x_q, _ = layer.quantize_input(x)
            if progress and i == 0:
                how = "preloading DRAM through the sim-only backdoor" if backdoor else "writing DRAM over the bridge"
                progress(f"{board}: {len(names)} layers, {how}, then running them")
            acc = be.run(i, x_q)
            ok = bool(np.array_equal(acc, layer.acc(x_q)))
            mismatches += not ok
            weight_bytes, cycles = be.transfer[-1]
            rows.append(
                {
                    "layer": n,
                    "shape": f"{layer.n}x{layer.d}",
                    "planes": layer.planes,
                    "m": samples,
                    "cycles": cycles,
                    **efficiency(weight_bytes, cycles, be.board.peak_bytes_per_cycle),
                    "bit_exact": ok,
                }
            )
            if progress:
                progress(f"  {n}: {cycles:,} cycles, {rows[-1]['of_peak']:.1%} of peak, bit-exact {ok}")
        counters = be.counters()
        peak = be.board.peak_bytes_per_cycle
        total = efficiency(sum(r["bytes"] for r in rows), sum(r["cycles"] for r in rows), peak)
        report = {
            "board": be.board.name,
            "memory": be.board.memory,
            "module": be.board.module,
            "peak_bytes_per_cycle": peak,
            "engine": {
                "lanes": be.params.lanes,
                "rows": be.params.rows,
                "data_width": be.params.data_width,
                "packing": be.params.packing,
            },
            "runs": rows,
            "total": total,
            "bit_exact": mismatches == 0 and counters["ERRORS"] == 0,
            "mismatches": mismatches,
            "counters": counters,
            "dram_loaded": "by the sim-only backdoor" if backdoor else "over the host bridge",
        }
    wall = time.perf_counter() - t0
    # the simulator's own count: loading DRAM over the bridge, the runs, the host's polling
    return report | {"wall_s": wall, "sim_cycles": be.sim_cycles, "sim_cycles_per_s": (be.sim_cycles or 0) / wall}
