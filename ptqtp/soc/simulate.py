"""The whole SoC in Verilator: LiteX's Verilog, the engine's, and a C++ main that joins the
UARTBone byte streams to a loopback TCP socket (``harness/soc_main.cpp``).

Builds are cached by content like the engine harness's (``$PTQTP_CACHE/sim/soc-<sha256>``),
one builder at a time. The host connects with :class:`ptqtp.soc.host.UartBone` over
``socket://``, as it would to a board's serial port.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptqtp.hdl.engine_model import EngineParams
from ptqtp.hdl.synth import step
from ptqtp.sim.runner import cache_dir, verilator_env

from .system import (
    BOARDS,
    bank_memories,
    board,
    engine_verilog,
    make_soc,
    sim_dram,
    soc_config,
    soc_params,
    write_config,
)

__all__ = ["SOC_TOP", "SocBuild", "generate", "build_sim", "SocSimulator"]

SOC_TOP = "ptqtp_soc"
HARNESS = Path(__file__).with_name("harness") / "soc_main.cpp"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class SocBuild:
    folder: Path
    config: dict

    @property
    def binary(self) -> Path:
        return self.folder / "obj" / "soc_sim"


def generate(board_name: str, out: Path, params: EngineParams | None = None) -> dict:
    """Write a board's SoC into ``out``: ``ptqtp_soc.v`` (LiteX) with its memory init files,
    ``ptqtp_engine.v`` (the engine, Amaranth), ``csr.json`` (LiteX's CSR map) and
    ``soc.json`` (:func:`ptqtp.soc.system.soc_config`). Returns the config."""
    from litex.soc.integration.builder import Builder

    b = board(board_name)
    p = soc_params(b, params)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    soc = make_soc(b.name, p)
    with contextlib.redirect_stdout(sys.stderr):  # LiteX prints its SoC tree; keep stdout for results
        builder = Builder(
            soc,
            output_dir=str(out / "litex"),
            compile_software=False,
            compile_gateware=False,
            csr_json=str(out / "csr.json"),
        )
        if b.simulated:  # LiteX's simulator flow would also write its own C++ main: take the Verilog only
            builder.build(build=False, run=False)
            fragment = soc.get_fragment()
            soc.platform.finalize(fragment)
            verilog = soc.platform.get_verilog(fragment, name=SOC_TOP)
            with contextlib.chdir(out):  # memory init files land beside the Verilog
                verilog.write(f"{SOC_TOP}.v")
            banks = [verilog.ns.get_name(m) for m in bank_memories(soc.sdrphy)]
            text = (out / f"{SOC_TOP}.v").read_text()
            (out / f"{SOC_TOP}.v").write_text(_backdoor(text, banks))
        else:
            builder.build(build_name=SOC_TOP, run=False)
            for f in (out / "litex" / "gateware").iterdir():
                if f.suffix in (".v", ".init"):
                    shutil.copy(f, out / f.name)
    (out / "ptqtp_engine.v").write_text(engine_verilog(p))
    config = soc_config(b.name, p, json.loads((out / "csr.json").read_text()))
    if b.simulated:
        config["dram_backdoor"] = BACKDOOR
    write_config(out / "soc.json", config)
    return config


#: the files the simulated DRAM's banks load at start ($readmemh), bank i from BACKDOOR.format(i)
BACKDOOR = "dram_bank{}.hex"


def _backdoor(verilog: str, banks: list[str]) -> str:
    """The SoC's Verilog with each DRAM bank loading ``BACKDOOR`` at simulation start: the
    sim-only backdoor that preloads a model image (an empty file leaves the bank zero)."""
    for i, name in enumerate(banks):
        m = re.search(rf"^reg \[\d+:0\] {re.escape(name)}\[0:\d+\];$", verilog, re.M)
        if m is None:
            raise RuntimeError(f"the SoC's Verilog declares no DRAM bank memory {name!r}")
        load = f'\ninitial $readmemh("{BACKDOOR.format(i)}", {name});  // sim-only backdoor (ptqtp.soc.simulate)'
        verilog = verilog[: m.end()] + load + verilog[m.end() :]
    return verilog


def backdoor_files(board_name: str, blob: bytes, folder: Path) -> None:
    """Write ``blob`` (DRAM from byte 0) as the banks' ``BACKDOOR`` files in ``folder``, laid
    out by LiteDRAM's own model (its ``init=``), so the controller reads each byte where the
    host would have written it."""
    words = np.frombuffer(bytes(blob) + b"\0" * (-len(blob) % 4), "<u4").tolist()
    phy = sim_dram(board(board_name), init=words or [0])
    for i, mem in enumerate(bank_memories(phy)):
        digits = -(-mem.width // 4)
        text = "\n".join(f"{v:0{digits}x}" for v in mem.init)
        (folder / BACKDOOR.format(i)).write_text(text + "\n" if text else "")


def _key(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix in (".v", ".init", ".json"):
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    h.update(HARNESS.read_bytes())
    return h.hexdigest()[:16]


def build_sim(board_name: str = "sim-sdr", params: EngineParams | None = None) -> SocBuild:
    """Generate and compile a simulated board's SoC (cached); the build."""
    b = board(board_name)
    if not b.simulated:
        raise ValueError(
            f"board {b.name!r} is hardware; simulate one of {', '.join(n for n, x in BOARDS.items() if x.simulated)}"
        )
    env = verilator_env()
    with tempfile.TemporaryDirectory(prefix="ptqtp-soc-") as tmp:
        config = generate(b.name, Path(tmp), params)
        folder = cache_dir() / f"soc-{_key(Path(tmp))}"
        done = folder / ".built"
        if done.exists():
            return SocBuild(folder, config)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if done.exists():
                return SocBuild(folder, config)
            for f in Path(tmp).iterdir():
                if f.is_file():
                    shutil.copy(f, folder / f.name)
            shutil.copy(HARNESS, folder / HARNESS.name)
            cmd = [
                "verilator",
                "--cc",
                "--exe",
                "--build",
                "-j",
                str(max(1, min(4, os.cpu_count() or 1))),
                f"{SOC_TOP}.v",
                "ptqtp_engine.v",
                HARNESS.name,
                "--top-module",
                SOC_TOP,
                "--Mdir",
                "obj",
                "-o",
                "soc_sim",
                "-O3",
                "--x-assign",
                "fast",
                "--x-initial",
                "fast",
                "-Wno-fatal",
                "-Wno-lint",
                "-Wno-style",
                "--output-split",
                "0",
                "--output-split-cfuncs",
                "0",  # split output breaks the PyPI build's PCH
                "-MAKEFLAGS",
                "OPT_FAST=-O2 OPT_SLOW=-O0 OPT_GLOBAL=-O2",
            ]
            with step(f"Verilator build of the {b.name} SoC (once per design, cached in {cache_dir()})", _stderr):
                proc = subprocess.run(cmd, cwd=folder, env={**os.environ, **env}, capture_output=True, text=True)
            (folder / "build.log").write_text(proc.stdout + proc.stderr)
            if proc.returncode or not (folder / "obj" / "soc_sim").exists():
                raise RuntimeError(
                    f"the SoC simulator did not build; see {folder / 'build.log'}:\n{proc.stderr[-3000:]}"
                )
            done.write_text(time.strftime("%Y-%m-%d %H:%M:%S"))
    return SocBuild(folder, config)


class SocSimulator:
    """A running SoC simulation serving one client on a loopback port (``url``)."""

    def __init__(self, build: SocBuild, timeout: float = 60.0, preload: bytes | None = None):
        self.build = build
        self._tmp = tempfile.TemporaryDirectory(prefix="ptqtp-socsim-")
        run = Path(self._tmp.name)
        port_file = run / "port"
        self.log = run / "sim.log"
        # the run's own folder: the build's memory init files, and the DRAM banks' backdoor files
        for f in build.folder.glob("*.init"):
            (run / f.name).symlink_to(f)
        if preload:
            backdoor_files(build.config["board"], preload, run)
        else:
            for i in range(len(bank_memories(sim_dram(board(build.config["board"]))))):
                (run / BACKDOOR.format(i)).write_text("")
        self._log = open(self.log, "w")
        self.proc = subprocess.Popen(
            [str(build.binary), str(port_file)], cwd=run, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the SoC simulator exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}"
                )
            if time.monotonic() > deadline:
                self.close()
                raise TimeoutError(f"the SoC simulator did not open its port in {timeout} s")
            time.sleep(0.01)
        self.port = int(port_file.read_text())

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    @property
    def cycles(self) -> int | None:
        """Cycles simulated, once the simulator has exited."""
        text = self.log.read_text() if self.log.exists() else ""
        for line in text.splitlines():
            if line.startswith("cycles "):
                return int(line.split()[1])
        return None

    def close(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=timeout)  # the client's disconnect ends it
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
