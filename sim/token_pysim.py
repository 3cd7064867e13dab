"""The token core in amaranth.sim: a memory behind its three AXI ports, the host on its
registers. Slow (a few thousand cycles a second) and exact: the unit-level bench for small
models; ``ptqtp.sim.token_compiled`` runs the same core in Verilator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.sim import Simulator

from ptqtp.hdl.token_core import TokenCore, TokenParams
from ptqtp.hdl.token_isa import TokenReg
from ptqtp.hdl.token_program import TokenImage

__all__ = ["TokenResult", "run_tokens_pysim"]


@dataclass
class TokenResult:
    """One token on the core: its next token, integer logit, cycles and cycles by opcode."""

    next_id: int
    logit: int
    cycles: int
    op_cycles: dict[str, int]
    status: int


OP_CYCLE_REGS = {
    "vop": TokenReg.CYC_VOP,
    "load": TokenReg.CYC_LOAD,
    "linear": TokenReg.CYC_LINEAR,
    "kv": TokenReg.CYC_KV,
    "attn": TokenReg.CYC_ATTN,
    "lmhead": TokenReg.CYC_LMHEAD,
}


def _stall(rng, duty: float) -> bool:
    return duty > 0 and rng.random() < duty


def run_tokens_pysim(
    params: TokenParams,
    image: TokenImage,
    tokens: list[int],
    start_pos: int = 0,
    stall: float = 0.0,
    seed: int = 0,
) -> tuple[list[TokenResult], bytearray]:
    """Load ``image`` and run ``tokens`` one after another from ``start_pos``. ``stall``: the
    share of cycles the memory holds its ready/valid low (random, seeded). Returns the
    results and the memory afterwards (the KV cache is in it)."""
    dut = TokenCore(params)
    mem = np.zeros(len(image.memory) + 4096, np.uint8)
    mem[: len(image.memory)] = np.frombuffer(bytes(image.memory), np.uint8)
    rng = np.random.default_rng(seed)
    results: list[TokenResult] = []

    def read_slave(bus, width):
        nbytes = width // 8

        async def proc(ctx):  # single ticks only: a background bench may stop at any tick
            while True:
                ready = not _stall(rng, stall)
                ctx.set(bus.arready, ready)
                *_, addr, n, valid = await ctx.tick().sample(bus.araddr, bus.arlen, bus.arvalid)
                if not (ready and valid):
                    continue
                ctx.set(bus.arready, 0)
                for i in range(n + 1):
                    at = addr + nbytes * i
                    ctx.set(bus.rdata, int.from_bytes(mem[at : at + nbytes].tobytes(), "little"))
                    ctx.set(bus.rlast, i == n)
                    ctx.set(bus.rresp, 0)
                    while True:
                        offer = not _stall(rng, stall)
                        ctx.set(bus.rvalid, offer)
                        *_, taken = await ctx.tick().sample(bus.rready)
                        if offer and taken:
                            break
                ctx.set(bus.rvalid, 0)

        return proc

    async def write_slave(ctx):
        bus = dut.m_axi_dw
        while True:
            ready = not _stall(rng, stall)
            ctx.set(bus.awready, ready)
            ctx.set(bus.wready, ready)
            *_, at, data, valid = await ctx.tick().sample(bus.awaddr, bus.wdata, bus.awvalid & bus.wvalid)
            if not (ready and valid):
                continue
            ctx.set(bus.awready, 0)
            ctx.set(bus.wready, 0)
            mem[at : at + 16] = np.frombuffer(data.to_bytes(16, "little"), np.uint8)
            ctx.set(bus.bresp, 0)
            ctx.set(bus.bvalid, 1)
            while True:
                *_, taken = await ctx.tick().sample(bus.bready)
                if taken:
                    break
            ctx.set(bus.bvalid, 0)

    bus = dut.s_axil

    async def write(ctx, reg, value):
        ctx.set(bus.awaddr, int(reg) * 4)
        ctx.set(bus.wdata, value & 0xFFFFFFFF)
        ctx.set(bus.wstrb, 0xF)
        ctx.set(bus.awvalid, 1)
        ctx.set(bus.wvalid, 1)
        await ctx.tick().until(bus.awready)
        ctx.set(bus.awvalid, 0)
        ctx.set(bus.wvalid, 0)
        ctx.set(bus.bready, 1)
        await ctx.tick().until(bus.bvalid)
        ctx.set(bus.bready, 0)

    async def read(ctx, reg) -> int:
        ctx.set(bus.araddr, int(reg) * 4)
        ctx.set(bus.arvalid, 1)
        await ctx.tick().until(bus.arready)
        ctx.set(bus.arvalid, 0)
        ctx.set(bus.rready, 1)
        (value,) = await ctx.tick().sample(bus.rdata).until(bus.rvalid)
        ctx.set(bus.rready, 0)
        return value

    async def host(ctx):
        await write(ctx, TokenReg.PROG_ADDR, 0)
        for w in image.program_words():
            await write(ctx, TokenReg.PROG_DATA, w)
        await write(ctx, TokenReg.POS, start_pos)
        for tok in tokens:
            await write(ctx, TokenReg.TOKEN, tok)
            await write(ctx, TokenReg.CTRL, 1)
            while True:
                for _ in range(64):
                    await ctx.tick()
                status = await read(ctx, TokenReg.STATUS)
                if not status & 1:
                    break
            got = {k: await read(ctx, r) for k, r in OP_CYCLE_REGS.items()}
            lo, hi = await read(ctx, TokenReg.LOGIT_LO), await read(ctx, TokenReg.LOGIT_HI)
            logit = lo | hi << 32
            logit -= (logit >> 63) << 64
            results.append(
                TokenResult(await read(ctx, TokenReg.RESULT), logit, await read(ctx, TokenReg.CYCLES), got, status)
            )
            if status & 4:
                break

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(read_slave(dut.m_axi, params.engine.data_width), background=True)
    sim.add_testbench(read_slave(dut.m_axi_dr, 128), background=True)
    sim.add_testbench(write_slave, background=True)
    sim.add_testbench(host)
    sim.run()
    return results, bytearray(mem.tobytes())
