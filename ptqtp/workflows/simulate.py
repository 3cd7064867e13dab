"""``ptqtp sim``: layers of an artifact or a model image through one Verilator build of the
engine (weights in its simulated DRAM), every output against the golden model."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

from ptqtp.formats.model_image import ModelImage, read_model_image, write_model_image
from ptqtp.golden import GoldenLayer, IntConfig
from ptqtp.hdl.engine_model import EngineParams

from .report import random_activations

__all__ = ["simulate_layers", "load_image", "engine_image"]


def engine_image(folder: Path, params: EngineParams) -> ModelImage:
    """A model image folder, checked to be the one this engine reads (layout and A)."""
    image = read_model_image(folder)
    if image.layout != params.layout:
        raise ValueError(
            f"{folder}: the image was exported for {image.layout}, not this engine's "
            f"{params.layout}; export it again with the same engine parameters"
        )
    if image.act_bits != params.act_bits:
        raise ValueError(
            f"{folder}: the image's layers take A={image.act_bits}-bit activations, the engine A={params.act_bits}"
        )
    return image


def load_image(source: Path, params: EngineParams, pattern: str, folder: Path) -> ModelImage:
    """The model image of ``source``'s layers matching ``pattern``: a model image folder as it
    is (its layout must be the engine's), or an artifact written as one into ``folder``."""
    source = Path(source)
    if source.is_dir():
        image = engine_image(source, params)
        if not any(re.search(pattern, name) for name in image.layers):
            raise ValueError(f"{source}: no layer matches {pattern!r}")
        return image
    from ptqtp.formats.artifact import file_sha256, load_artifact  # torch: only for artifacts

    art = load_artifact(source)
    names = [n for n in art.layers if re.search(pattern, n)]
    if not names:
        raise ValueError(f"{source}: no layer matches {pattern!r}")
    config = IntConfig(params.act_bits, params.scale_bits)
    layers = {n: GoldenLayer.from_packed(art.layers[n], config) for n in names}
    return read_model_image(write_model_image(folder, layers, params.layout, file_sha256(source)))


def simulate_layers(
    source: Path,
    params: EngineParams,
    pattern: str = ".*",
    samples: int = 1,
    inputs: Path | None = None,
    stall: float = 0.0,
    mem_busy: float = 0.0,
    seed: int = 0,
    waves: Path | None = None,
    window: tuple[int, int] | None = None,
    bench: str = "compiled",
    progress=None,
) -> dict:
    """Run ``samples`` vectors (random LLM-like, or the float rows of ``inputs``) through each
    chosen layer in batches of at most M, back to back on one engine build; returns the
    report: per run its cycles against the cycle model and its verdict, and the totals.
    ``bench``: "compiled" (the C++ harness) or "cocotb" (the verification bench); ``waves``
    covers the cycles ``window`` = (first, last) on the compiled harness."""
    if bench not in ("compiled", "cocotb"):
        raise ValueError(f"bench must be 'compiled' or 'cocotb', not {bench!r}")
    if bench == "cocotb" and window is not None and window != (0, 1 << 62):
        raise ValueError("a waveform window (--from/--to) needs the compiled bench; cocotb dumps the whole run")
    from ptqtp.hdl.engine import TritEngine  # Amaranth, Verilator, cocotb: heavy, optional
    from ptqtp.hdl.synth import to_verilog
    from ptqtp.sim.runner import ENGINE_TOP, engine_config, image_runs, run_engine

    with tempfile.TemporaryDirectory(prefix="ptqtp-sim-") as tmp:
        image = load_image(source, params, pattern, Path(tmp) / "image")
        given = None if inputs is None else np.load(inputs)
        batches = []
        for i, (name, g) in enumerate(image.layers.items()):
            if not re.search(pattern, name):
                continue
            params.check_layer(g.n, g.d_pad, g.planes, g.m_q is not None)
            x = random_activations(samples, g.d, seed + i) if given is None else given
            x_q, _ = g.quantize_input(x)
            batches += [(name, x_q[k : k + params.vectors]) for k in range(0, len(x_q), params.vectors)]
        if progress:
            progress(
                f"simulating {len(batches)} runs on the engine P={params.lanes} R={params.rows} "
                f"M={params.vectors} DW={params.data_width} packing={params.packing} ..."
            )
        runs, x_qs, expected = image_runs(image, batches)
        verilog = to_verilog(TritEngine(params), name=ENGINE_TOP)
        cfg = engine_config(params, stall=stall, mem_busy=mem_busy, seed=seed + 1)
        if bench == "compiled":
            from ptqtp.sim.compiled import run_engine_compiled

            res = run_engine_compiled(verilog, image.blob_bytes(), runs, x_qs, expected, cfg, waves, window)
        else:
            res = run_engine(verilog, image.blob_bytes(), runs, x_qs, expected, cfg, waves=waves)
    rows = []
    for run, got in zip(runs, res.runs):
        model = params.run(run["n"], run["chunks"] * params.lanes, run["m"], run.get("planes"))
        rows.append(
            {
                "layer": run["name"],
                "shape": f"{run['n']}x{run['chunks'] * params.lanes}",
                "m": run["m"],
                "cycles": got["cycles"],
                "model_cycles": round(model.cycles()),
                "busy": model.issue_cycles / max(1, got["cycles"]),
                "bit_exact": got["mismatches"] == 0,
            }
        )
    return {
        "engine": vars(params),
        "bench": bench,
        "bit_exact": res.passed,
        "mismatches": res.mismatches,
        "first_mismatch": res.first_mismatch,
        "runs": rows,
        "cycles": res.sim_cycles,
        "counters": res.counters,
        "wall_s": res.wall_s,
        "cycles_per_s": res.cycles_per_second,
    }
