"""The decoder's RTL units, bit for bit with the golden decoder (amaranth.sim)."""

import numpy as np
import pytest
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from ptqtp.golden_decoder import FV, quantize_vector
from ptqtp.hdl.vquant import SeqDivider, VectorQuantizer


def run_quantizer(rows, bits, stall_seed=None, width=48):
    """Feed ``rows`` through a VectorQuantizer; (q rows, (m, e) per row). ``stall_seed``:
    random gaps on the input and random back-pressure on both outputs."""
    dut = VectorQuantizer(bits=bits, width=width, frac=FV, depth=64)
    rng = np.random.default_rng(stall_seed)
    busy = (lambda: rng.random() < 0.3) if stall_seed is not None else (lambda: False)
    got_q, got_s = [], []

    async def source(ctx):
        for row in rows:
            for j, v in enumerate(row):
                while busy():
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                ctx.set(dut.i.payload.value, int(v))
                ctx.set(dut.i.payload.last, j == len(row) - 1)
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        row = []
        while len(got_q) < len(rows):
            so, ss = not busy(), not busy()
            ctx.set(dut.o.ready, so)
            ctx.set(dut.scale.ready, ss)
            await ctx.delay(1e-9)
            if ss and ctx.get(dut.scale.valid):
                got_s.append((ctx.get(dut.scale.payload.m), ctx.get(dut.scale.payload.e)))
            if so and ctx.get(dut.o.valid):
                row.append(ctx.get(dut.o.payload.q))
                if ctx.get(dut.o.payload.last):
                    got_q.append(row)
                    row = []
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return got_q, got_s


async def send(ctx, dut, beats) -> None:
    """Offer each beat (a ``dut.i`` payload dict) until taken, then drop ``i.valid``."""
    for fields in beats:
        for name, value in fields.items():
            ctx.set(getattr(dut.i.payload, name), int(value))
        ctx.set(dut.i.valid, 1)
        await ctx.tick().until(dut.i.ready)
    ctx.set(dut.i.valid, 0)


def stream_rows(dut, rows, out: str, seed: int, ready_p: float):
    """Feed ``rows`` (each a list of ``dut.i`` payload dicts, flags included) through ``dut``;
    collect ``dut.o.payload.<out>`` into rows ended by ``o.last``, with ``o.ready`` high at
    random (probability ``ready_p``, seeded)."""
    got = []

    async def source(ctx):
        for row in rows:
            await send(ctx, dut, row)

    async def sink(ctx):
        rng = np.random.default_rng(seed)
        row = []
        while len(got) < len(rows):
            ready = rng.random() < ready_p
            ctx.set(dut.o.ready, ready)
            await ctx.delay(1e-9)
            if ready and ctx.get(dut.o.valid):
                row.append(ctx.get(getattr(dut.o.payload, out)))
                if ctx.get(dut.o.payload.last):
                    got.append(row)
                    row = []
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return got


def one_at_a_time(dut, requests, outs: tuple[str, ...]):
    """Each request (a list of ``dut.i`` payload dicts) in, then wait for its one result:
    the ``dut.o.payload`` fields ``outs`` of each, in order."""
    got = []

    async def bench(ctx):
        for request in requests:
            await send(ctx, dut, request)
            while not ctx.get(dut.o.valid):
                await ctx.tick()
            got.append(tuple(ctx.get(getattr(dut.o.payload, f)) for f in outs))
            ctx.set(dut.o.ready, 1)
            await ctx.tick()
            ctx.set(dut.o.ready, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got


def golden(rows, bits):
    out = [quantize_vector(np.array([r], dtype=np.int64), bits, FV) for r in rows]
    return [list(q[0]) for q, _ in out], [(int(s.m[0]), int(s.e[0])) for _, s in out]


@settings(max_examples=6, deadline=None)
@given(
    st.lists(
        st.lists(st.integers(-(2**47), 2**47 - 1) | st.integers(-300, 300) | st.just(0), min_size=1, max_size=12),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from([4, 8, 10]),
)
def test_vector_quantizer_matches_golden(rows, bits):
    assert run_quantizer(rows, bits) == golden(rows, bits)


def test_vector_quantizer_edge_rows_with_stalls():
    rows = [
        [0, 0, 0],  # a zero row: q = 0, scale (0, 0)
        [-(2**47), 2**47 - 1, 5],  # the extremes
        [(3 << 23) + 1, -(3 << 23) - 1],  # ties when normalized (round half up on both signs)
        [1],  # one element, shifted left to 24 bits
        list(range(-20, 21)),
    ]
    for seed in (1, 2):
        assert run_quantizer(rows, 10, stall_seed=seed) == golden(rows, 10)


@pytest.mark.parametrize("num,den", [(0, 1), (1, 1), (2**49 - 1, 3), (12345678901, 2**25 - 1), (511 << 40, 1 << 23)])
def test_sequential_divider(num, den):
    dut = SeqDivider(50, 26)
    out = []

    async def bench(ctx):
        ctx.set(dut.start, 1)
        ctx.set(dut.num, num)
        ctx.set(dut.den, den)
        await ctx.tick()
        ctx.set(dut.start, 0)
        await ctx.tick().until(dut.done)
        out.append(ctx.get(dut.quo))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert out == [num // den]


def run_rsqrt(requests, d, eps):
    from ptqtp.hdl.rsqrt import RsqrtUnit

    requests = [[{"sumsq": sumsq, "sh": sh}] for sumsq, sh in requests]
    return one_at_a_time(RsqrtUnit(d, eps), requests, ("m", "e"))


@pytest.mark.parametrize("eps", [9.999999747378752e-06, 1e-6])
def test_rsqrt_unit_matches_golden(eps):
    """Rows of every magnitude (one LSB to int32's range, so sh from 0 to 7): the unit's
    (m, e) equals the golden rsqrt_scalar's, one simulation for all rows."""
    from ptqtp.golden_decoder import normalize_rows, rsqrt_scalar

    rng = np.random.default_rng(7)
    rows = [rng.integers(-(2**k), 2**k, 8) for k in (1, 4, 12, 20, 24, 25, 28, 31)]
    rows += [np.array([0] * 7 + [1]), np.array([-(2**31) + 1] * 8), np.array([(3 << 23) + 1] + [0] * 7)]
    h = np.stack(rows).astype(np.int64)
    hn, sh = normalize_rows(h, up=False)
    want = rsqrt_scalar(hn, sh, eps)
    reqs = [(int((hn[i] * hn[i]).sum()), int(sh[i])) for i in range(len(rows))]
    assert sorted(set(sh.tolist())) == [0, 1, 4, 7]
    assert run_rsqrt(reqs, 8, eps) == [(int(want.m[i]), int(want.e[i])) for i in range(len(rows))]


def test_int_sqrt():
    from ptqtp.hdl.rsqrt import IntSqrt

    values = [0, 1, 2, 3, 4, 15, 16, 17, 2**40 - 1, 2**40, (2**44 + 3) ** 2 - 1, 2**90 - 1]
    dut = IntSqrt(90)
    got = []

    async def bench(ctx):
        for n in values:
            ctx.set(dut.start, 1)
            ctx.set(dut.n, n)
            await ctx.tick()
            ctx.set(dut.start, 0)
            await ctx.tick().until(dut.done)
            got.append(ctx.get(dut.root))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    import math

    assert got == [math.isqrt(n) for n in values]


def test_rmsnorm_unit_matches_golden():
    """Whole rows through RMSNormUnit against GoldenDecoder.rmsnorm: magnitudes from one LSB
    to int32's range, negative and tiny norm weights, with output back-pressure."""
    from test_golden_decoder import _weights_stub

    from ptqtp.golden_decoder import DecoderArch, GoldenDecoder, Norm
    from ptqtp.hdl.rmsnorm import RMSNormUnit

    d, eps = 32, 9.999999747378752e-06
    arch = DecoderArch(d, 1, 2, 1, 4, 16, 16, 1e4, eps)
    dec = GoldenDecoder(_weights_stub(arch))
    rng = np.random.default_rng(11)
    # large rows (sh up to 7) make the rounding of hn visible in some outputs
    rows = [rng.integers(-(2**k), 2**k, d) for k in (1, 9, 20, 24, 26, 28, 29, 30, 31, 31, 31, 31)]
    rows.append(np.zeros(d, dtype=np.int64))
    norms = [Norm.quantize(rng.normal(0, s, d)) for s in (0.05, 1.0, 3.0)]
    cases = [(r, norms[i % len(norms)]) for i, r in enumerate(rows)]
    want = [list(dec.rmsnorm(r[None].astype(np.int64), n)[0]) for r, n in cases]
    rows_in = [[{"h": r[j], "w": n.w_q[j], "F": n.F, "last": j == d - 1} for j in range(d)] for r, n in cases]
    assert stream_rows(RMSNormUnit(d, eps), rows_in, "y", seed=3, ready_p=0.6) == want


def test_softmax_unit_matches_golden():
    """Rows of scores (one key; ties; spreads past the 17-shift cut-off; the clip bounds)
    through SoftmaxUnit against softmax2, with output back-pressure."""
    from ptqtp.golden_decoder import exp2_table, softmax2
    from ptqtp.hdl.softmax import SoftmaxUnit

    rng = np.random.default_rng(5)
    rows = [
        np.array([123]),
        np.array([5, 5, 5, 5]),
        rng.integers(-3000, 3000, 17),
        rng.integers(-(2**14), 2**14, 40),  # many keys beyond 17 octaves below the maximum
        np.array([2**40, -(2**40), 2**40 - 1, 0]),
        rng.integers(-50, 50, 33),
        np.array([0, -17 * 1024, -16 * 1024, -17 * 1024 + 1, -16 * 1024 - 1]),  # at the cut-off
    ]
    want = [list(softmax2(r[None], np.ones((1, len(r)), bool), exp2_table(10), 10)[0]) for r in rows]
    rows_in = [[{"t": t, "last": j == len(r) - 1} for j, t in enumerate(r)] for r in rows]
    assert stream_rows(SoftmaxUnit(frac=10, depth=64), rows_in, "p", seed=4, ready_p=0.6) == want


def test_silu_mul_unit_matches_golden():
    """g across and beyond the table's [-16, 16), u of either sign and large enough to
    saturate: SiluMulUnit against GoldenDecoder.silu_mul."""
    from test_golden_decoder import _weights_stub

    from ptqtp.golden_decoder import DecoderArch, GoldenDecoder
    from ptqtp.hdl.swiglu import SiluMulUnit

    dec = GoldenDecoder(_weights_stub(DecoderArch(64, 1, 2, 1, 32, 64, 16, 1e4, 1e-5)))
    rng = np.random.default_rng(9)
    g = np.concatenate(
        [rng.integers(-(20 << FV), 20 << FV, 60), [-(16 << FV), (16 << FV) - 1, 0, 2**31 - 1, -(2**31) + 1]]
    )
    u = np.concatenate([rng.integers(-(4 << FV), 4 << FV, 60), [5 << FV, -(3 << FV), 7, 2**31 - 1, 2**31 - 1]])
    want = list(dec.silu_mul(g[None], u[None])[0])
    requests = [[{"g": g[j], "u": u[j], "last": j == len(g) - 1}] for j in range(len(g))]
    assert [y for (y,) in one_at_a_time(SiluMulUnit(), requests, ("y",))] == want


def test_rope_unit_matches_golden():
    """Every pair of a head at positions 0, 1, 777 and 8191 (SmolLM2's theta), values up to
    int32's range (saturating): RopeUnit against GoldenDecoder.rope."""
    from test_golden_decoder import _weights_stub

    from ptqtp.golden_decoder import DecoderArch, GoldenDecoder, rope_table
    from ptqtp.hdl.rope import RopeUnit

    hd, theta = 16, 1e5
    dec = GoldenDecoder(_weights_stub(DecoderArch(64, 1, 2, 1, hd, 64, 16, theta, 1e-5)))
    rng = np.random.default_rng(2)
    positions = np.array([0, 1, 777, 8191])
    x = rng.integers(-(2**31) + 1, 2**31, (len(positions), 1, hd))
    x[1] = rng.integers(-(3 << 14), 3 << 14, hd)
    cos, sin = rope_table(positions, hd, theta)
    want = dec.rope(x, cos, sin)[:, 0]
    half = hd // 2
    requests = [
        [{"a": x[r, 0, i], "b": x[r, 0, i + half], "c": cos[r, i], "s": sin[r, i]}]
        for r in range(len(positions))
        for i in range(half)
    ]
    got = one_at_a_time(RopeUnit(), requests, ("a", "b"))
    assert got == [(int(want[r, i]), int(want[r, i + half])) for r in range(len(positions)) for i in range(half)]


def _pack(values) -> int:
    """int8 values as one word, value j at bits 8j (the lane-parallel units' input)."""
    return sum((int(v) & 0xFF) << (8 * j) for j, v in enumerate(values))


@pytest.mark.parametrize("lanes", [1, 4])
def test_score_unit_matches_golden(lanes):
    """One query against keys of every scale (a zero key, int8 extremes): ScoreUnit's t
    against the golden scores_log2, an element or a word of four a cycle."""
    from ptqtp.golden_decoder import quantize_vector, score_scale, scores_log2
    from ptqtp.hdl.scores import ScoreUnit

    hd = 16
    rng = np.random.default_rng(8)
    q = rng.integers(-(5 << FV), 5 << FV, (1, hd))
    k = rng.integers(-(3 << FV), 3 << FV, (6, hd))
    k[1] = 0
    k[2] = rng.integers(-50, 50, hd)  # tiny: a large scale exponent
    k[3, :] = 1 << 30  # huge
    qq, qs = quantize_vector(q, 8, FV)
    kq, ks = quantize_vector(k, 8, FV)
    want = list(scores_log2(qq, qs, kq, ks, score_scale(hd), 10)[0])
    scales = [{"q_m": qs.m[0], "q_e": qs.e[0], "k_m": ks.m[j], "k_e": ks.e[j]} for j in range(len(k))]
    L = lanes
    requests = [
        [
            {"q": _pack(qq[0, i : i + L]) if L > 1 else qq[0, i], "k": _pack(kq[j, i : i + L]) if L > 1 else kq[j, i]}
            | {"last": i == hd - L}
            | scales[j]
            for i in range(0, hd, L)
        ]
        for j in range(len(k))
    ]
    assert [t for (t,) in one_at_a_time(ScoreUnit(hd, lanes=L), requests, ("t",))] == want


@pytest.mark.parametrize("lanes", [1, 4])
def test_pv_unit_matches_golden(lanes):
    """Rows of keys with values of very different scales (exponent gaps past 62 included)
    and probabilities from the golden softmax: PVUnit against weighted_values, a value or a
    word of four a cycle."""
    from ptqtp.golden_decoder import Scalar, exp2_table, quantize_vector, softmax2, weighted_values
    from ptqtp.hdl.pv import PVUnit

    hd = 8
    rng = np.random.default_rng(6)
    cases = []
    for keys, spread in ((1, 1), (5, 4), (9, 40)):
        v = rng.integers(-(4 << FV), 4 << FV, (keys, hd)) >> rng.integers(0, spread, (keys, 1))
        vq, vs = quantize_vector(v, 8, FV)
        t = rng.integers(-3000, 3000, (1, keys))
        pn = softmax2(t, np.ones((1, keys), bool), exp2_table(10), 10)
        cases.append((pn[0], vq, vs))
    cases.append(
        (
            np.array([40000, 30000]),
            np.array([[127] * hd, [-127] * hd]),
            Scalar(np.array([40000, 33000]), np.array([-10, -90])),
        )
    )
    want = [list(weighted_values(pn[None], vq, vs, np.ones((1, len(pn)), bool))[0]) for pn, vq, vs in cases]
    rows_in = []
    for pn, vq, vs in cases:
        E = int(vs.e.max())
        row = []
        for j in range(len(pn)):
            for i in range(0, hd, lanes):
                v = _pack(vq[j, i : i + lanes]) if lanes > 1 else vq[j, i]
                fields = {"v": v, "pn": pn[j], "m": vs.m[j], "e": vs.e[j], "E": E}
                row.append(fields | {"key_last": i == hd - lanes, "row_last": j == len(pn) - 1})
        rows_in.append(row)
    assert stream_rows(PVUnit(hd, lanes=lanes), rows_in, "y", seed=1, ready_p=0.7) == want


def _lmhead_argmax(rows, x_q, stall_seed: int) -> tuple[int, int]:
    """LMHeadUnit over ``rows`` (table_bytes' layout, streamed with random gaps) for x_q."""
    from amaranth.sim import Simulator

    from ptqtp.hdl.lmhead import LMHeadUnit
    from ptqtp.hdl.token_program import table_bytes

    n, cols = rows.q.shape
    rb, A = -(-cols // 16), 10
    dut = LMHeadUnit(16, A, max_row_beats=rb)
    data = table_bytes(rows)
    words = [int.from_bytes(data[i : i + 16], "little") for i in range(0, len(data), 16)]
    xs = np.zeros(rb * 16, np.int64)
    xs[:cols] = x_q
    rng = np.random.default_rng(stall_seed)
    got = {}

    async def bench(ctx):
        for w in range(rb):
            ctx.set(dut.x_data, sum((int(v) & (2**A - 1)) << (A * j) for j, v in enumerate(xs[16 * w : 16 * w + 16])))
            ctx.set(dut.x_addr, w)
            ctx.set(dut.x_we, 1)
            await ctx.tick()
        ctx.set(dut.x_we, 0)
        ctx.set(dut.rows, n)
        ctx.set(dut.row_beats, rb)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for word in words:
            while rng.random() < 0.3:
                ctx.set(dut.table.valid, 0)
                await ctx.tick()
            ctx.set(dut.table.payload, word)
            ctx.set(dut.table.valid, 1)
            await ctx.tick().until(dut.table.ready)
        ctx.set(dut.table.valid, 0)
        await ctx.tick().until(dut.done)
        got["best"], got["logit"] = ctx.get(dut.best), ctx.get(dut.logit)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got["best"], got["logit"]


def test_lmhead_unit_is_the_golden_argmax():
    """Rows not a multiple of eight (padding rows never win, even when every logit is
    negative), a tie (the lowest row wins, as np.argmax), columns not a multiple of 16."""
    from ptqtp.golden_decoder import IntRows

    rng = np.random.default_rng(12)
    rows = IntRows.quantize(rng.normal(size=(13, 40)))
    x = rng.integers(-511, 512, 40)
    for case in range(3):
        if case == 1:  # every logit negative: a zero padding row would win if compared
            rows.q[:, :] = np.abs(rows.q) + 1
            x = np.full(40, -300)
        if case == 2:  # rows 3 and 9 tie at the largest logit
            rows.q[[3, 9]] = 127
            rows.a_q[[3, 9]] = rows.a_q.max()
            x = np.full(40, 400)
        logits = rows.logits(x[None])[0]
        want = (int(np.argmax(logits)), int(logits.max()))
        assert (case != 1 or logits.max() < 0) and (case != 2 or want[0] == 3 and logits[9] == logits[3])
        assert _lmhead_argmax(rows, x, case) == want, case
