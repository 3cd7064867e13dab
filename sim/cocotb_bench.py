"""cocotb bench for the generated accelerator Verilog (run by ptqtp.sim.runner).

driver (x stream, optional random stalls) -> DUT -> monitor (y stream, optional random
back-pressure) -> scoreboard: in-order comparison with the golden model, first mismatch
reported with row, vector and both values. Configuration arrives in PTQTP_* environment
variables; the verdict and the cycle counts go to the JSON file PTQTP_REPORT.
"""

import json
import os
import random
import socket
import struct
import time

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from ptqtp.formats.layer_npz import load_layer
from ptqtp.formats.wire import recv_exact
from ptqtp.hdl.top import AccelParams, cycles_per_vector


def _layer():
    """The golden layer (PTQTP_LAYER, an .npz) and the accelerator parameters (PTQTP_LANES, PTQTP_ROWS)."""
    golden = load_layer(os.environ["PTQTP_LAYER"])
    return golden, AccelParams.of(golden, int(os.environ["PTQTP_LANES"]), int(os.environ["PTQTP_ROWS"]))


def _setup():
    return *_layer(), np.load(os.environ["PTQTP_X"])


def _pack(values, bits):
    word = 0
    for i, v in enumerate(values):
        word |= (int(v) & ((1 << bits) - 1)) << (i * bits)
    return word


class Stats:
    def __init__(self):
        self.starts = []
        self.outputs = []


def _cycle() -> int:
    """Clock cycles so far (10 ns clock); from simulation time, so no coroutine runs per cycle."""
    return int(get_sim_time("ns")) // 10


async def _drive(dut, params, x_q, stats, stall, rng):
    """Offer each chunk until accepted; a beat moves at a rising edge where valid and ready were both high."""
    for v in range(len(x_q)):
        for c in range(params.chunks):
            while stall and rng.random() < stall:
                dut.x__valid.value = 0
                await RisingEdge(dut.clk)
            dut.x__payload.value = _pack(x_q[v, c * params.lanes : (c + 1) * params.lanes], params.act_bits)
            dut.x__valid.value = 1
            while True:
                await ReadOnly()
                if dut.x__ready.value == 1:
                    await RisingEdge(dut.clk)
                    break
                await RisingEdge(dut.x__ready)  # sleep through compute: no Python per cycle
            if c == 0:
                stats.starts.append(_cycle())
    dut.x__valid.value = 0


async def _monitor(dut, count, stats, stall, rng):
    """Withhold ready with probability ``stall``; record the payload of every accepted beat."""
    while len(stats.outputs) < count:
        ready = not (stall and rng.random() < stall)
        dut.y__ready.value = int(ready)
        await ReadOnly()
        valid = dut.y__valid.value == 1
        if ready and valid:
            stats.outputs.append(dut.y__payload.value.to_signed())
        if ready and not valid:
            await RisingEdge(dut.y__valid)  # sleep until the next result
        else:
            await RisingEdge(dut.clk)
    dut.y__ready.value = 0


async def _reset(dut, cycles=2):
    dut.rst.value = 1
    dut.x__valid.value = 0
    dut.y__ready.value = 0
    await ClockCycles(dut.clk, cycles)
    dut.rst.value = 0


def _score(golden, params, x_q, stats, wall, extra=None):
    expect = golden.acc(x_q)
    got = np.array(stats.outputs, dtype=np.int64)
    flat = expect.reshape(-1)
    mism = np.nonzero(got[: len(flat)] != flat[: len(got)])[0]
    first = None
    if len(mism):
        i = int(mism[0])
        first = {"vector": i // params.n, "row": i % params.n, "got": int(got[i]), "expected": int(flat[i])}
    report = {
        "vectors": len(x_q), "outputs": len(got), "expected_outputs": int(flat.size), "mismatches": int(len(mism)),
        "first_mismatch": first, "periods": [b - a for a, b in zip(stats.starts, stats.starts[1:])],
        "model_cycles": cycles_per_vector(params), "sim_cycles": _cycle() - stats.t_start, "sim_wall_s": wall,
    }
    report.update(extra or {})
    with open(os.environ["PTQTP_REPORT"], "w") as f:
        json.dump(report, f)
    assert first is None, f"first mismatch: {first}"
    assert len(got) == flat.size, f"{len(got)} outputs, expected {flat.size}"


@cocotb.test()
async def stream_vectors(dut):
    """All vectors back to back (or with random stalls); every output against the golden model."""
    golden, params, x_q = _setup()
    seed = int(os.environ.get("PTQTP_SEED", "1"))
    stats = Stats()
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns", impl="gpi").start())
    await _reset(dut)
    t0, stats.t_start = time.perf_counter(), _cycle()
    cocotb.start_soon(_drive(dut, params, x_q, stats, float(os.environ.get("PTQTP_IN_STALL", 0)), random.Random(seed)))
    await _monitor(dut, len(x_q) * params.n, stats, float(os.environ.get("PTQTP_OUT_STALL", 0)),
                   random.Random(seed + 1))
    _score(golden, params, x_q, stats, time.perf_counter() - t0)


@cocotb.test()
async def reset_mid_vector(dut):
    """Half a vector, reset, then a clean run of every vector: no state survives the reset."""
    golden, params, x_q = _setup()
    stats = Stats()
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns", impl="gpi").start())
    await _reset(dut)
    half = max(1, params.chunks // 2)
    for c in range(half):
        dut.x__payload.value = _pack(x_q[0, c * params.lanes : (c + 1) * params.lanes][::-1], params.act_bits)
        dut.x__valid.value = 1
        await RisingEdge(dut.clk)
    await _reset(dut, 3)
    stats.starts.clear()
    t0, stats.t_start = time.perf_counter(), _cycle()
    cocotb.start_soon(_drive(dut, params, x_q, stats, 0.0, random.Random(0)))
    await _monitor(dut, len(x_q) * params.n, stats, 0.0, random.Random(0))
    _score(golden, params, x_q, stats, time.perf_counter() - t0, {"reset_after_chunks": half})


@cocotb.test()
async def serve_host(dut):
    """Persistent mode for ptqtp.sim.rtl_backend: the host sends batches over a local socket
    (u32 m, then m x d_pad int32), the bench streams them through the DUT and answers with
    m x n int64 accumulators; m = 0 ends the simulation."""
    _, params = _layer()
    sock = socket.create_connection(("127.0.0.1", int(os.environ["PTQTP_RTL_PORT"])))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns", impl="gpi").start())
    await _reset(dut)

    while True:
        (m,) = struct.unpack("<I", recv_exact(sock, 4))
        if m == 0:
            break
        x_q = np.frombuffer(recv_exact(sock, m * params.d_pad * 4), "<i4").reshape(m, params.d_pad)
        stats = Stats()
        cocotb.start_soon(_drive(dut, params, x_q, stats, 0.0, random.Random(0)))
        await _monitor(dut, m * params.n, stats, 0.0, random.Random(0))
        sock.sendall(np.asarray(stats.outputs, dtype="<i8").tobytes())
    sock.close()

