"""Drive a :class:`ptqtp.hdl.top.TritMatmul` in ``amaranth.sim`` (the fast tier).

Driver -> DUT -> monitor; the caller compares with the golden model. Random stalls on
either stream are drawn from a seeded generator so a failure replays exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from amaranth.sim import Simulator

__all__ = ["BenchResult", "run_vectors"]


@dataclass
class BenchResult:
    acc: np.ndarray  # int64 [m, n], the outputs in arrival order
    first_beat_cycles: list = field(default_factory=list)  # cycle each vector's first beat was accepted
    last_out_cycle: int = 0

    def periods(self) -> list[int]:
        """Cycles between consecutive vectors' first accepted beats."""
        return [b - a for a, b in zip(self.first_beat_cycles, self.first_beat_cycles[1:])]


def run_vectors(dut, x_q: np.ndarray, in_stall: float = 0.0, out_stall: float = 0.0, seed: int = 0,
                vcd: str | None = None) -> BenchResult:
    """Send x_q (m, d_pad) through ``dut`` and collect m x n accumulators.

    ``in_stall`` / ``out_stall``: probability that the driver withholds ``valid`` or the
    monitor withholds ``ready`` in a given cycle.
    """
    p = dut.params
    x_q = np.asarray(x_q)
    if x_q.ndim != 2 or x_q.shape[1] != p.d_pad:
        raise ValueError(f"x_q must be (m, {p.d_pad}), not {x_q.shape}")
    m = x_q.shape[0]
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    out, starts, cycle, last = [], [], [0], [0]

    async def count(ctx):
        async for _ in ctx.tick():
            cycle[0] += 1

    async def driver(ctx):
        for v in range(m):
            for c in range(p.chunks):
                while in_stall and rng_in.random() < in_stall:
                    ctx.set(dut.x.valid, 0)
                    await ctx.tick()
                ctx.set(dut.x.payload, [int(t) for t in x_q[v, c * p.lanes : (c + 1) * p.lanes]])
                ctx.set(dut.x.valid, 1)
                await ctx.tick().until(dut.x.ready)
                if c == 0:
                    starts.append(cycle[0])
        ctx.set(dut.x.valid, 0)

    async def monitor(ctx):
        while len(out) < m * p.n:
            ready = not (out_stall and rng_out.random() < out_stall)
            ctx.set(dut.y.ready, int(ready))
            _, _, valid, payload = await ctx.tick().sample(dut.y.valid, dut.y.payload)
            if valid and ready:
                out.append(payload)
                last[0] = cycle[0]

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(count)
    sim.add_testbench(driver, background=True)
    sim.add_testbench(monitor)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return BenchResult(acc=np.array(out, dtype=np.int64).reshape(m, p.n), first_beat_cycles=starts,
                       last_out_cycle=last[0])
