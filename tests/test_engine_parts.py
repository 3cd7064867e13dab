"""Each component of the engine on its own in Amaranth's simulator: records, control,
activation banks, issue sequencer, row array and output serializer. Expected values come
from the stream layout, the golden model and the register contract, not from the RTL."""

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator
from test_base3_hdl import drive_unpacker, records_2bit
from test_engine import golden_layer

from ptqtp.formats.stream_layout import StreamLayout
from ptqtp.hdl.activations import ActivationBanks
from ptqtp.hdl.blocks import RowArray
from ptqtp.hdl.contract import ENGINE_ID, ERRORS, STATUS, Reg
from ptqtp.hdl.control import EngineControl
from ptqtp.hdl.engine_model import EngineParams
from ptqtp.hdl.records import RecordAssembler, RecordUnpacker, WordSplitter
from ptqtp.hdl.sequencer import IssueSequencer
from ptqtp.hdl.serializer import OutputSerializer


def simulate(dut, bench):
    top = Module()  # a sync domain even for a combinational part
    top.domains.sync = ClockDomain()
    top.submodules.dut = dut
    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


async def stream_through(ctx, source, sink, items, want, rng, stall=0.3, limit=5000):
    """Offer ``items`` on ``source`` and take ``want`` payloads from ``sink``, both stalled at
    random; returns what ``sink`` gave."""
    got, i = [], 0
    for _ in range(limit):
        give = i < len(items) and rng.random() >= stall
        if give:
            ctx.set(source.payload, items[i])
        ctx.set(source.valid, give)
        take = rng.random() >= stall
        ctx.set(sink.ready, take)
        await ctx.delay(1e-9)
        if give and ctx.get(source.ready):
            i += 1
        if take and ctx.get(sink.valid):
            got.append(ctx.get(sink.payload))
        await ctx.tick()
        if len(got) == want:
            return got
    raise AssertionError(f"took {len(got)} of {want} after {limit} cycles")


# ------------------------------------------------------------------ records


@pytest.mark.parametrize("count,register", [(1, False), (1, True), (3, False)])
def test_record_assembler_concatenates_pieces(count, register):
    dut = RecordAssembler(8, count, out_bits=8 * count - 4, register=register)
    rng = np.random.default_rng(count)
    pieces = [int(v) for v in rng.integers(0, 256, 6 * count)]
    expect = [
        sum(p << (8 * i) for i, p in enumerate(pieces[k : k + count])) & ((1 << (8 * count - 4)) - 1)
        for k in range(0, len(pieces), count)
    ]

    async def bench(ctx):
        assert await stream_through(ctx, dut.i, dut.o, pieces, len(expect), rng) == expect

    simulate(dut, bench)


def test_word_splitter_releases_the_word_at_a_group_end():
    dut = WordSplitter(record_bits=4, per_word=4, group=6)  # a group is a word and half of the next
    rng = np.random.default_rng(2)
    words = [int(v) for v in rng.integers(0, 1 << 16, 6)]
    expect = []
    for g in range(0, len(words), 2):
        recs = [(words[g] >> (4 * i)) & 15 for i in range(4)] + [(words[g + 1] >> (4 * i)) & 15 for i in range(2)]
        expect += recs

    async def bench(ctx):
        assert await stream_through(ctx, dut.i, dut.o, words, len(expect), rng) == expect

    simulate(dut, bench)


@pytest.mark.parametrize("P,R,planes,offset,DW", [(4, 2, 2, True, 32), (16, 4, 2, False, 64), (4, 1, 1, False, 64)])
def test_record_unpacker_gives_the_layout_records(P, R, planes, offset, DW):
    """Records of W > DW, W = DW and W < DW (several a word), checked against the layout's bit positions."""
    L = StreamLayout(P, R, planes, offset, 16, 8, DW)
    rng = np.random.default_rng(P + DW)
    g = golden_layer(rng, 2 * R + 1, 40, planes, offset, G=16, S=8)
    region = L.encode(g.trits, g.a_q, g.m_q)
    steps = L.steps(g.n, g.d_pad)
    expect_s, expect_w = records_2bit(L, region, steps)
    words = [int.from_bytes(region[i : i + L.word_bytes], "little") for i in range(0, len(region), L.word_bytes)]
    scales, weights = drive_unpacker(RecordUnpacker(L), words, len(expect_w), seed=P + DW)
    assert scales == expect_s and weights == expect_w


# ------------------------------------------------------------------ control


SMALL = EngineParams(
    lanes=8, rows=2, planes=2, offset=False, max_d=384, vectors=2, data_width=64, burst=8, outstanding=2
)


async def axil_write(ctx, bus, reg, value):
    ctx.set(bus.awaddr, 4 * int(reg))
    ctx.set(bus.wdata, value)
    ctx.set(bus.awvalid, 1)
    ctx.set(bus.wvalid, 1)
    ctx.set(bus.bready, 1)
    await ctx.tick().until(bus.awready)
    ctx.set(bus.awvalid, 0)
    ctx.set(bus.wvalid, 0)
    await ctx.tick().until(bus.bvalid)


async def axil_read(ctx, bus, reg) -> int:
    ctx.set(bus.araddr, 4 * int(reg))
    ctx.set(bus.arvalid, 1)
    ctx.set(bus.rready, 1)
    await ctx.tick().until(bus.arready)
    ctx.set(bus.arvalid, 0)
    while not ctx.get(bus.rvalid):
        await ctx.tick()
    return ctx.get(bus.rdata)


def test_control_registers_queues_and_errors():
    p = SMALL
    dut = EngineControl(p)

    async def bench(ctx):
        bus = dut.bus
        ctx.set(dut.dma_idle, 1)
        assert await axil_read(ctx, bus, Reg.ID) == ENGINE_ID
        assert await axil_read(ctx, bus, Reg.PARAMS) == p.params_word()
        assert await axil_read(ctx, bus, Reg.LAYOUT) == p.layout_word()
        await axil_write(ctx, bus, Reg.ID, 123)  # read-only: ignored
        assert await axil_read(ctx, bus, Reg.ID) == ENGINE_ID
        desc = {Reg.N: 9, Reg.CHUNKS: 32, Reg.M: 2, Reg.ADDR_LO: 0x2000, Reg.ADDR_HI: 0, Reg.BEATS: 77}
        for reg, value in desc.items():
            await axil_write(ctx, bus, reg, value)
            assert await axil_read(ctx, bus, reg) == value
        for _ in range(2):  # two fit; the third is refused and flagged
            await axil_write(ctx, bus, Reg.CTRL, 1)
        assert STATUS.unpack(await axil_read(ctx, bus, Reg.STATUS)) == {
            "busy": 1,
            "queue_full": 1,
            "error": 0,
            "runs": 0,
        }
        await axil_write(ctx, bus, Reg.CTRL, 1)
        assert ERRORS.unpack(await axil_read(ctx, bus, Reg.ERRORS))["refused"] == 1
        for out in (dut.dma_cmd, dut.core_desc, dut.out_desc):  # each consumer has its copy
            assert ctx.get(out.valid)
        assert ctx.get(dut.dma_cmd.payload.addr) == 0x2000 and ctx.get(dut.dma_cmd.payload.beats) == 77
        assert (
            ctx.get(dut.core_desc.payload.n),
            ctx.get(dut.core_desc.payload.chunks),
            ctx.get(dut.core_desc.payload.m),
        ) == (9, 32, 2)
        await axil_write(ctx, bus, Reg.CTRL, 2)  # clear
        assert await axil_read(ctx, bus, Reg.ERRORS) == 0
        for reg, bad in ((Reg.M, 3), (Reg.CHUNKS, 5), (Reg.ADDR_LO, 0x2008), (Reg.N, 1 << 24)):
            await axil_write(ctx, bus, Reg.CTRL, 2)
            ctx.set(dut.core_desc.ready, 1)  # drain so the queue has room
            await ctx.tick().repeat(3)
            ctx.set(dut.core_desc.ready, 0)
            await axil_write(ctx, bus, reg, bad)
            await axil_write(ctx, bus, Reg.CTRL, 1)
            assert ERRORS.unpack(await axil_read(ctx, bus, Reg.ERRORS))["refused"] == 1, reg
            await axil_write(ctx, bus, reg, desc[reg])
        ctx.set(dut.run_done, 1)
        await ctx.tick()
        ctx.set(dut.run_done, 0)
        ctx.set(dut.events, {"running": 1, "issue": 1})
        await ctx.tick().repeat(5)
        ctx.set(dut.events, {"running": 1, "have_x": 1, "have_w": 0})
        await ctx.tick().repeat(3)
        ctx.set(dut.events, {})
        assert STATUS.unpack(await axil_read(ctx, bus, Reg.STATUS))["runs"] == 1
        assert await axil_read(ctx, bus, Reg.ISSUED) == 5
        assert await axil_read(ctx, bus, Reg.WAIT_W) == 3
        assert await axil_read(ctx, bus, Reg.CYCLES) == 8

    simulate(dut, bench)


# ------------------------------------------------------------------ activation banks


def test_activation_banks_double_buffer_and_overflow():
    p = SMALL
    dut = ActivationBanks(p)
    chunks = 3
    rng = np.random.default_rng(4)
    batches = [rng.integers(0, 1 << 32, (m, chunks)).tolist() for m in (2, 1)]

    async def load(ctx, batch):
        x = dut.x
        for v, vec in enumerate(batch):
            for c, word in enumerate(vec):
                ctx.set(x.tdata, word)
                ctx.set(x.tlast, c == chunks - 1)
                ctx.set(x.tuser, int(c == chunks - 1 and v == len(batch) - 1))
                ctx.set(x.tvalid, 1)
                await ctx.tick().until(x.tready)
        ctx.set(x.tvalid, 0)

    async def read(ctx, chunk, vec):
        ctx.set(dut.rd_addr, {"chunk": chunk, "vec": vec})
        await ctx.tick()
        return ctx.get(dut.rd_data)

    async def bench(ctx):
        await load(ctx, batches[0])
        await load(ctx, batches[1])  # into the other bank while the first is held
        assert not ctx.get(dut.x.tready)  # both full: the stream waits
        await ctx.tick()
        assert ctx.get(dut.have_x) and ctx.get(dut.bank_m) == 2
        for v in range(2):
            for c in range(chunks):
                assert await read(ctx, c, v) == batches[0][v][c]
        ctx.set(dut.release, 1)
        await ctx.tick()
        ctx.set(dut.release, 0)
        await ctx.tick().repeat(2)
        assert ctx.get(dut.have_x) and ctx.get(dut.bank_m) == 1 and ctx.get(dut.x.tready)
        assert [await read(ctx, c, 0) for c in range(chunks)] == batches[1][0]
        ctx.set(dut.x.tdata, 5)  # a third vector in a bank of M = 2: dropped and flagged
        ctx.set(dut.x.tvalid, 1)
        seen = False
        for _ in range(3):
            ctx.set(dut.x.tlast, 1)
            ctx.set(dut.x.tuser, 0)
            await ctx.delay(1e-9)
            seen |= bool(ctx.get(dut.overflow))
            await ctx.tick()
        assert seen

    simulate(dut, bench)


# ------------------------------------------------------------------ issue sequencer


@pytest.mark.parametrize("n,d_pad,m,passes", [(5, 256, 2, 1), (2, 128, 1, 1), (3, 256, 2, 2)])
def test_sequencer_issue_order_and_pops(n, d_pad, m, passes):
    """Order: block, pass, group, chunk, vector; a weight record is popped after its last
    vector, a scale record on each group's first chunk; the activation chunk starts again each
    pass and the row accumulates over every pass; exactly the cycle model's issue count."""
    p = SMALL
    dut = IssueSequencer(p)
    L = p.layout
    run = p.run(n, d_pad, m, passes * p.planes)
    cpg, ng, blocks = L.chunks_per_group, d_pad // p.group_size, L.blocks(n)
    expect = [
        (b, q * ng + g, c, v)
        for b in range(blocks)
        for q in range(passes)
        for g in range(ng)
        for c in range(cpg)
        for v in range(m)
    ]
    rng = np.random.default_rng(n)

    async def bench(ctx):
        ctx.set(dut.desc.payload, {"n": n, "chunks": d_pad // p.lanes, "m": m, "passes": passes})
        ctx.set(dut.desc.valid, 1)
        await ctx.tick()
        ctx.set(dut.desc.valid, 0)
        ctx.set(dut.bank_m, m)
        w_idx, s_idx, issued, releases = 0, 0, [], 0
        for _ in range(20 * len(expect)):
            ctx.set(dut.have_x, 1)
            w_ok, s_ok = rng.random() > 0.3, rng.random() > 0.3
            ctx.set(dut.weights.valid, w_ok)
            ctx.set(dut.weights.payload, w_idx)
            ctx.set(dut.scale_in.valid, s_ok)
            ctx.set(dut.scale_in.payload, s_idx)
            ctx.set(dut.y_pop, 1)
            await ctx.delay(1e-9)
            t = ctx.get(dut.tags)
            if t.valid:
                b, g, c, v = expect[len(issued)]  # g: the group of the wide layer (pass * ng + group)
                issued.append((b, g, c, v))
                assert (t.vec, t.group_first, t.group_last, t.row_first, t.row_last) == (
                    v,
                    c == 0,
                    c == cpg - 1,
                    g == 0,
                    g == passes * ng - 1,
                )
                assert ctx.get(dut.record) == (b * passes * ng + g) * cpg + c  # the record popped for this chunk
                assert ctx.get(dut.scales) == b * passes * ng + g
                assert (ctx.get(dut.rd_addr.chunk), ctx.get(dut.rd_addr.vec)) == (c + (g % ng) * cpg, v)
                assert not ctx.get(dut.events.mismatch)
            if ctx.get(dut.weights.ready):
                w_idx += 1
            if ctx.get(dut.scale_in.ready):
                s_idx += 1
            releases += ctx.get(dut.release)
            await ctx.tick()
        steps = blocks * passes * ng
        assert len(issued) == run.issue_cycles and w_idx == steps * cpg and s_idx == steps
        assert releases == 1 and not ctx.get(dut.running)

    simulate(dut, bench)


# ------------------------------------------------------------------ row array


@pytest.mark.parametrize("offset", [False, True])
def test_row_array_gives_golden_accumulators(offset):
    """One block of R rows, two vectors interleaved as the sequencer issues them."""
    p = EngineParams(lanes=8, rows=2, planes=2, offset=offset, max_d=256, vectors=2, data_width=64)
    L = p.layout
    rng = np.random.default_rng(7)
    g = golden_layer(rng, p.rows, 256, 2, offset)
    x_q, _ = g.quantize_input(rng.standard_normal((2, g.d)))
    expect = g.acc(x_q)
    steps = L.steps(g.n, g.d_pad)
    scales, weights = records_2bit(L, L.encode(g.trits, g.a_q, g.m_q), steps)
    cpg, ng = L.chunks_per_group, steps
    mask = (1 << p.act_bits) - 1
    dut = RowArray(p)

    def chunk_word(v, c):
        return sum((int(x_q[v, c * p.lanes + i]) & mask) << (i * p.act_bits) for i in range(p.lanes))

    async def bench(ctx):
        got, prev = [], None
        for cycle in range(ng * cpg * 2 + 20):
            if cycle < ng * cpg * 2:
                k, v = divmod(cycle, 2)
                grp, c = divmod(k, cpg)
                ctx.set(
                    dut.tags,
                    {
                        "valid": 1,
                        "group_first": c == 0,
                        "group_last": c == cpg - 1,
                        "row_first": grp == 0,
                        "row_last": grp == ng - 1,
                        "vec": v,
                    },
                )
                ctx.set(dut.record, weights[k])
                ctx.set(dut.scales, scales[grp])
            else:
                ctx.set(dut.tags, {})
            if prev is not None:  # activations a cycle after the issue (the banks' read latency)
                ctx.set(dut.x, chunk_word(*prev))
            prev = (v, k) if cycle < ng * cpg * 2 else None
            await ctx.delay(1e-9)
            if ctx.get(dut.done):
                accs = ctx.get(dut.accs)
                got.append(
                    [
                        ((accs >> (r * p.acc_bits)) ^ (1 << p.acc_bits - 1)) % (1 << p.acc_bits) - (1 << p.acc_bits - 1)
                        for r in range(p.rows)
                    ]
                )
            await ctx.tick()
        assert got == expect.tolist()

    simulate(dut, bench)


# ------------------------------------------------------------------ output serializer


def test_output_serializer_order_tid_tlast():
    """n = 5 rows, R = 2, m = 2: block-major beats, the last block half full."""
    p = SMALL
    n, m, R = 5, 2, p.rows
    dut = OutputSerializer(p)
    blocks = -(-n // R)
    entries = [[1000 * b + 10 * v + r for r in range(R)] for b in range(blocks) for v in range(m)]
    ACC = p.acc_bits
    words = [sum((val % (1 << ACC)) << (r * ACC) for r, val in enumerate(e)) for e in entries]
    expect = [
        (e[r], i % m, b * R + r == n - 1)
        for i, e in enumerate(entries)
        for b in [i // m]
        for r in range(R)
        if b * R + r < n
    ]
    rng = np.random.default_rng(3)

    async def bench(ctx):
        ctx.set(dut.desc.payload, {"n": n, "chunks": 16, "m": m})
        ctx.set(dut.desc.valid, 1)
        await ctx.tick()
        ctx.set(dut.desc.valid, 0)
        got, i, done = [], 0, 0
        for _ in range(200):
            ctx.set(dut.entries.valid, i < len(words))
            if i < len(words):
                ctx.set(dut.entries.payload, words[i])
            take = rng.random() > 0.3
            ctx.set(dut.y.tready, take)
            await ctx.delay(1e-9)
            if take and ctx.get(dut.y.tvalid):
                got.append((ctx.get(dut.y.tdata), ctx.get(dut.y.tid), bool(ctx.get(dut.y.tlast))))
            if ctx.get(dut.entries.ready):
                i += 1
            done += ctx.get(dut.run_done)
            await ctx.tick()
        assert got == expect and done == 1 and not ctx.get(dut.active)

    simulate(dut, bench)
