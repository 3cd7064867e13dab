"""cocotb bench of the streaming engine (run by ``ptqtp.sim.runner.run_engine``).

Bus models come from cocotbext-axi: ``AxiRamRead`` is the DRAM holding the model image,
``AxiLiteMaster`` the host writing descriptors, ``AxiStreamSource``/``Sink`` the activation
and result streams; pause generators throttle the memory and add back-pressure. The job
(PTQTP_JOB, an .npz written by the runner) holds the memory image, the runs (descriptor,
x_q) and each run's expected accumulators from the golden model; every output is compared.
The report (PTQTP_REPORT, JSON) has the verdict, per-run cycles and the engine's counters.
"""

import json
import os
import random
import socket
import struct
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb.utils import get_sim_time
from cocotbext.axi import (
    AxiLiteBus,
    AxiLiteMaster,
    AxiRamRead,
    AxiReadBus,
    AxiStreamBus,
    AxiStreamFrame,
    AxiStreamSink,
    AxiStreamSource,
)

from ptqtp.formats.wire import recv_exact
from ptqtp.hdl.contract import CTRL, ERRORS, STATUS, BenchEnv, Reg, descriptor_writes
from ptqtp.sim.runner import COUNTERS, check_run

SEP = {"bus_separator": "__"}  # Amaranth names a port member <port>__<member>


def _cycle() -> int:
    return int(get_sim_time("ns")) // 10


def _pauses(duty: float, rng: random.Random, period: int = 0):
    """Pause generator: a fixed pattern pausing ``duty`` of every ``period`` cycles, else
    random pauses with probability ``duty``."""
    if period:
        busy = round(duty * period)
        while True:
            for i in range(period):
                yield i < busy
    while True:
        yield rng.random() < duty


class Bench:
    def __init__(self, dut, job, cfg):
        self.dut, self.cfg = dut, cfg
        self.lanes, self.act_bits = cfg["lanes"], cfg["act_bits"]
        self.out_bits = cfg["out_bits"]
        image = job["image"].tobytes()
        self.ram = None
        if hasattr(dut, "m_axi__araddr"):  # else the engine reads its weights from on-chip ROM
            self.ram = AxiRamRead(
                AxiReadBus.from_prefix(dut, "m_axi", **SEP), dut.clk, dut.rst, size=max(len(image), 4096)
            )
            self.ram.write(0, image)
        self.host = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil", **SEP), dut.clk, dut.rst)
        self.x = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis_x", **SEP), dut.clk, dut.rst, byte_lanes=1)
        self.y = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis_y", **SEP), dut.clk, dut.rst, byte_lanes=1)
        seed = cfg.get("seed", 1)
        mem = cfg.get("mem_busy", 0.0)
        if mem and self.ram is not None:
            self.ram.r_channel.set_pause_generator(_pauses(mem, random.Random(seed), cfg.get("mem_period", 0)))
        if cfg.get("mem_latency", 0) and self.ram is not None:
            self.ram.ar_channel.set_pause_generator(
                _pauses(1.0 - 1.0 / cfg["mem_latency"], random.Random(seed), cfg["mem_latency"])
            )
        if cfg.get("stall", 0.0):
            self.x.set_pause_generator(_pauses(cfg["stall"], random.Random(seed + 1)))
            self.y.set_pause_generator(_pauses(cfg["stall"], random.Random(seed + 2)))

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)

    async def reg(self, addr: int) -> int:
        return await self.host.read_dword(4 * addr)

    async def queue(self, run):
        for addr, value in descriptor_writes(run):
            await self.host.write_dword(4 * addr, value)

    async def send_batch(self, x_q):
        mask = (1 << self.act_bits) - 1
        for i, vec in enumerate(x_q):
            words = []
            for c in range(len(vec) // self.lanes):
                w = 0
                for lane, value in enumerate(vec[c * self.lanes : (c + 1) * self.lanes]):
                    w |= (int(value) & mask) << (lane * self.act_bits)
                words.append(w)
            user = [0] * len(words)
            user[-1] = int(i == len(x_q) - 1)  # tuser ends the batch
            await self.x.send(AxiStreamFrame(words, tuser=user))

    async def receive(self, n, m):
        """m vectors of n accumulators, reassembled from the block-major beat order by tid."""
        rows = [[] for _ in range(m)]
        sign = 1 << (self.out_bits - 1)
        while sum(len(r) for r in rows) < n * m:
            frame = await self.y.recv()
            tids = frame.tid if isinstance(frame.tid, list) else [frame.tid or 0] * len(frame.tdata)
            for value, v in zip(frame.tdata, tids):
                rows[v].append((value ^ sign) - sign)
        return np.array(rows, dtype=np.int64)


@cocotb.test()
async def run_job(dut):
    """Queue every run, stream its batch, check every output against the golden model."""
    with open(os.environ[BenchEnv.CFG]) as f:
        cfg = json.load(f)
    job = np.load(os.environ[BenchEnv.JOB])
    runs = cfg["runs"]
    bench = Bench(dut, job, cfg)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns", impl="gpi").start())
    await bench.reset()
    assert await bench.reg(Reg.ID) == cfg["engine_id"], "not the engine (ID register)"
    t0, wall0 = _cycle(), time.perf_counter()
    report = {"runs": [], "mismatches": 0, "first_mismatch": None, "outputs": 0, "expected_outputs": 0}

    async def feed():
        for i in range(len(runs)):
            await bench.send_batch(job[f"x{i}"])

    async def queue_all():
        for run in runs:  # the descriptor queue holds two; STATUS bit 1 says when it is full
            while STATUS.unpack(await bench.reg(Reg.STATUS))["queue_full"]:
                await ClockCycles(dut.clk, 8)
            await bench.queue(run)

    cocotb.start_soon(feed())
    cocotb.start_soon(queue_all())
    last = t0
    for i, run in enumerate(runs):
        got = await bench.receive(run["n"], run["m"])
        now = _cycle()
        expect = job[f"acc{i}"]
        report["outputs"] += got.size
        report["expected_outputs"] += expect.size
        check_run(report, i, run, got, expect, now - last, now - t0)
        last = now
    counters = {name: await bench.reg(getattr(Reg, name)) for name in COUNTERS}
    report.update(counters=counters, sim_cycles=_cycle() - t0, sim_wall_s=time.perf_counter() - wall0)
    with open(os.environ[BenchEnv.REPORT], "w") as f:
        json.dump(report, f)
    assert report["first_mismatch"] is None, f"first mismatch: {report['first_mismatch']}"
    assert counters["ERRORS"] == 0, f"engine error flags {counters['ERRORS']:#x}"


@cocotb.test()
async def register_access(dut):
    """Registers read back what was written; a bad descriptor is refused and flagged."""
    with open(os.environ[BenchEnv.CFG]) as f:
        cfg = json.load(f)
    bench = Bench(dut, np.load(os.environ[BenchEnv.JOB]), cfg)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns", impl="gpi").start())
    await bench.reset()
    assert await bench.reg(Reg.ID) == cfg["engine_id"]
    assert await bench.reg(Reg.PARAMS) == cfg["params_word"]
    assert await bench.reg(Reg.LAYOUT) == cfg["layout_word"]
    for addr, value in ((Reg.N, 77), (Reg.CHUNKS, 12), (Reg.M, 1), (Reg.BEATS, 5), (Reg.ADDR_LO, 0x1000)):
        await bench.host.write_dword(4 * addr, value)
        assert await bench.reg(addr) == value
    await bench.host.write_dword(4 * Reg.M, cfg["vectors"] + 1)  # more vectors than the engine holds
    await bench.host.write_dword(4 * Reg.CTRL, CTRL.pack(start=1))
    assert ERRORS.unpack(await bench.reg(Reg.ERRORS))["refused"]
    assert not STATUS.unpack(await bench.reg(Reg.STATUS))["busy"]
    await bench.host.write_dword(4 * Reg.CTRL, CTRL.pack(clear=1))
    assert await bench.reg(Reg.ERRORS) == 0
    await bench.host.write_dword(4 * Reg.M, 1)
    await bench.host.write_dword(4 * Reg.ADDR_LO, 0x1004)  # not aligned to a burst
    await bench.host.write_dword(4 * Reg.CTRL, CTRL.pack(start=1))
    assert ERRORS.unpack(await bench.reg(Reg.ERRORS))["refused"]
    assert not STATUS.unpack(await bench.reg(Reg.STATUS))["busy"]
    await bench.host.write_dword(4 * Reg.ID, 0)  # read-only: ignored
    assert await bench.reg(Reg.ID) == cfg["engine_id"]
    await bench.host.write_dword(4 * Reg.CTRL, CTRL.pack(clear=1))
    with open(os.environ[BenchEnv.REPORT], "w") as f:
        json.dump({"mismatches": 0, "outputs": 0, "expected_outputs": 0, "runs": []}, f)
    await RisingEdge(dut.clk)


@cocotb.test()
async def serve_host(dut):
    """Persistent mode for ``ptqtp.runtime.engine``: the model image stays in the simulated
    DRAM; the host sends requests over a local socket (u32 layer index into the config's
    layer list, u32 m, then m x d_pad int32 x_q; m = 0 ends), the bench runs them in batches
    of at most M and answers u64 core cycles, then m x n int64 accumulators."""
    with open(os.environ[BenchEnv.CFG]) as f:
        cfg = json.load(f)
    bench = Bench(dut, np.load(os.environ[BenchEnv.JOB]), cfg)
    layers, M = cfg["layers"], cfg["vectors"]
    sock = socket.create_connection(("127.0.0.1", int(os.environ[BenchEnv.PORT])))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns", impl="gpi").start())
    await bench.reset()
    while True:
        index, m = struct.unpack("<II", recv_exact(sock, 8))
        if m == 0:
            break
        run = layers[index]
        x_q = np.frombuffer(recv_exact(sock, m * run["chunks"] * cfg["lanes"] * 4), "<i4").reshape(m, -1)
        before = await bench.reg(Reg.CYCLES)
        out = []
        for start in range(0, m, M):
            batch = x_q[start : start + M]
            await bench.queue({**run, "m": len(batch)})
            cocotb.start_soon(bench.send_batch(batch))
            out.append(await bench.receive(run["n"], len(batch)))
        cycles = (await bench.reg(Reg.CYCLES) - before) & 0xFFFFFFFF
        sock.sendall(struct.pack("<Q", cycles) + np.ascontiguousarray(np.concatenate(out), "<i8").tobytes())
    sock.close()
