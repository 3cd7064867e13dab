"""Amaranth-level tests of the accelerator: each block, then the top level, against the golden model."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from ptqtp.golden import GoldenLayer, IntConfig
from ptqtp.hdl.blocks import AdderTree, GroupAccumulator, PlaneUnit, TernarySelect, TritCode
from ptqtp.hdl.synth import to_verilog, yosys_parses
from ptqtp.hdl.top import AccelParams, TritMatmul, cycles_per_vector
from ptqtp.sim.amaranth_bench import run_vectors


def run_testbench(dut, bench, clock=True):
    sim = Simulator(dut)
    if clock:
        sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("A", [2, 8, 16])
def test_ternary_select_all_trits_and_extremes(A):
    dut = TernarySelect(A)
    Q = 2 ** (A - 1) - 1
    seen = []

    async def bench(ctx):
        for code, sign in ((TritCode.POS, 1), (TritCode.ZERO, 0), (TritCode.NEG, -1)):
            for x in (-(Q + 1), -Q, -1, 0, 1, Q):
                ctx.set(dut.trit, code)
                ctx.set(dut.x, x)
                assert ctx.get(dut.y) == sign * x, (code, x)
                seen.append(code)

    run_testbench(dut, bench, clock=False)
    assert len(seen) == 18


@pytest.mark.parametrize("P", [2, 4, 8, 16, 32, 64])
def test_adder_tree_sums_every_lane_width(P):
    width = 9
    dut = AdderTree(P, width)
    assert dut.sum.shape().width == width + P.bit_length() - 1  # grows exactly log2 P bits
    rng = np.random.default_rng(P)
    lo, hi = -(2 ** (width - 1)), 2 ** (width - 1) - 1
    vectors = [[lo] * P, [hi] * P] + [list(rng.integers(lo, hi + 1, P)) for _ in range(6)]

    async def bench(ctx):
        for v in vectors:
            ctx.set(dut.inputs, [int(t) for t in v])
            for _ in range(dut.latency):
                await ctx.tick()
            assert ctx.get(dut.sum) == sum(int(t) for t in v)

    run_testbench(dut, bench)


@pytest.mark.parametrize("P", [1, 3, 6, 12, 0])
def test_adder_tree_rejects_non_power_of_two(P):
    with pytest.raises(ValueError, match=f"lanes must be a power of two >= 2, not {P}"):
        AdderTree(P, 8)


def test_plane_unit_matches_golden_partial_sums():
    P, A = 16, 8
    dut = PlaneUnit(P, A)
    rng = np.random.default_rng(0)
    trits = rng.integers(-1, 2, (5, 2, P))
    xs = rng.integers(-127, 128, (5, P))
    code = {1: TritCode.POS, 0: TritCode.ZERO, -1: TritCode.NEG}

    async def bench(ctx):
        for t, x in zip(trits, xs):
            ctx.set(dut.codes, [[code[int(v)] for v in t[k]] for k in range(2)])
            ctx.set(dut.x, [int(v) for v in x])
            for _ in range(dut.latency):
                await ctx.tick()
            from ptqtp.golden import group_partial_sums

            expect = group_partial_sums(t[:, None, :].astype(np.int8), x[None, :], P)[0, 0, 0]
            assert [ctx.get(dut.sums[k]) for k in range(2)] == expect.tolist()

    run_testbench(dut, bench)


def test_group_accumulator_matches_reference():
    cpg, ng = 3, 4
    dut = GroupAccumulator(sum_bits=12, group_chunks=cpg, scale_bits=10, acc_bits=40)
    rng = np.random.default_rng(1)
    sums = rng.integers(-2048, 2048, (ng * cpg, 2))
    scales = rng.integers(-512, 512, (ng, 2))
    expect = sum(int(sums[g * cpg : (g + 1) * cpg, k].sum()) * int(scales[g, k]) for g in range(ng) for k in range(2))

    async def bench(ctx):
        for c in range(ng * cpg):
            g, i = divmod(c, cpg)
            ctx.set(dut.tags, {"valid": 1, "group_first": i == 0, "group_last": i == cpg - 1,
                               "row_first": g == 0, "row_last": g == ng - 1})
            ctx.set(dut.sums, [int(v) for v in sums[c]])
            ctx.set(dut.scales, [int(v) for v in scales[g]])
            await ctx.tick()
        ctx.set(dut.tags, {"valid": 0, "group_first": 0, "group_last": 0, "row_first": 0, "row_last": 0})
        for _ in range(dut.latency - 1):
            assert not ctx.get(dut.done)
            await ctx.tick()
        assert ctx.get(dut.done) and ctx.get(dut.acc) == expect
        await ctx.tick()
        assert not ctx.get(dut.done)

    run_testbench(dut, bench)


# (P, R, A, S, G, n, d): three or more parameter sets, small layers, d not a multiple of G
PARAM_SETS = [(8, 2, 8, 16, 32, 5, 60), (16, 1, 4, 8, 64, 3, 100), (4, 3, 8, 12, 16, 7, 40), (32, 4, 16, 16, 64, 9, 128)]


def random_design(P, R, A, S, G, n, d, seed=0, planes=2, offset=False):
    rng = np.random.default_rng(seed)
    d_pad = -(-d // G) * G
    trits = rng.integers(-1, 2, (planes, n, d_pad)).astype(np.int8)
    trits[:, :, d:] = 0
    offsets = rng.standard_normal((n, d_pad // G)) * 3 if offset else None  # m may exceed a: F from both
    golden = GoldenLayer(trits, rng.standard_normal((planes, n, d_pad // G)), d, G, IntConfig(A, S), offsets=offsets)
    params = AccelParams(n=n, d_pad=d_pad, group_size=G, lanes=P, rows=R, act_bits=A, scale_bits=S, planes=planes,
                         offset=offset)
    return golden, TritMatmul(golden.trits, golden.a_q, params, golden.m_q)


def vectors(golden, m, seed):
    Q = golden.config.q_max
    rng = np.random.default_rng(seed)
    x = np.zeros((m, golden.d_pad), np.int64)
    x[:, : golden.d] = rng.integers(-Q, Q + 1, (m, golden.d))
    x[0, : golden.d] = Q  # extremes
    if m > 1:
        x[1, : golden.d] = -Q
    return x


@pytest.mark.parametrize("P,R,A,S,G,n,d", PARAM_SETS)
def test_top_bit_exact_and_cycle_model(P, R, A, S, G, n, d):
    golden, dut = random_design(P, R, A, S, G, n, d)
    x = vectors(golden, 4, seed=P)
    res = run_vectors(dut, x)
    np.testing.assert_array_equal(res.acc, golden.acc(x))
    assert res.periods() == [cycles_per_vector(dut.params)] * 3  # back-to-back vectors


# PT^2-LLM's layout (one plane + offset) and the other plane/offset combinations
TERM_SETS = [(1, True), (2, True), (1, False)]


@pytest.mark.parametrize("planes,offset", TERM_SETS)
@pytest.mark.parametrize("P,R,A,S,G,n,d", PARAM_SETS[:3])
def test_top_planes_and_offset_bit_exact(P, R, A, S, G, n, d, planes, offset):
    golden, dut = random_design(P, R, A, S, G, n, d, seed=3, planes=planes, offset=offset)
    x = vectors(golden, 3, seed=P + planes)
    res = run_vectors(dut, x)
    np.testing.assert_array_equal(res.acc, golden.acc(x))
    assert res.periods() == [cycles_per_vector(dut.params)] * 2


def test_top_offset_with_backpressure():
    golden, dut = random_design(8, 2, 8, 16, 32, 5, 60, seed=4, planes=1, offset=True)
    x = vectors(golden, 3, seed=9)
    res = run_vectors(dut, x, in_stall=0.3, out_stall=0.5, seed=7)
    np.testing.assert_array_equal(res.acc, golden.acc(x))


def test_top_rejects_missing_offsets():
    golden, dut = random_design(8, 1, 8, 16, 32, 4, 64, planes=1, offset=True)
    with pytest.raises(ValueError, match="offset=True needs m_q"):
        TritMatmul(golden.trits, golden.a_q, dut.params)


@pytest.mark.parametrize("P,R,A,S,G,n,d", PARAM_SETS[:3])
def test_top_with_backpressure_and_stalled_input(P, R, A, S, G, n, d):
    golden, dut = random_design(P, R, A, S, G, n, d, seed=1)
    x = vectors(golden, 3, seed=R)
    res = run_vectors(dut, x, in_stall=0.3, out_stall=0.5, seed=7)
    np.testing.assert_array_equal(res.acc, golden.acc(x))
    assert min(res.periods()) > cycles_per_vector(dut.params)  # stalls only add cycles


@pytest.mark.parametrize("P,R,A,S,G,n,d", PARAM_SETS)
def test_verilog_generates_and_yosys_parses(P, R, A, S, G, n, d):
    _, dut = random_design(P, R, A, S, G, n, d)
    text = to_verilog(dut)
    for port in ("x__payload", "x__valid", "x__ready", "y__payload", "y__valid", "y__ready", "clk", "rst"):
        assert port in text
    assert "$readmemh" not in text
    assert yosys_parses(text)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"lanes": 6}, "lanes P must be a power of two >= 2, not 6"),
        ({"lanes": 64, "group_size": 32}, "lanes P=64 must divide the group size G=32"),
        ({"rows": 9}, "rows R=9 exceeds the layer's 8 rows"),
        ({"acc_bits": 10}, "acc_bits must be at least"),
        ({"act_bits": 1}, "act_bits must be an integer in 2..16"),
        ({"d_pad": 100}, "d_pad=100 must be a multiple of G=32"),
        ({"planes": 3}, "planes must be 1 or 2"),
    ],
)
def test_params_rejected(kwargs, match):
    args = {"n": 8, "d_pad": 64, "group_size": 32, "lanes": 8} | kwargs
    with pytest.raises(ValueError, match=match):
        AccelParams(**args)


def test_top_rejects_mismatched_arrays():
    golden, dut = random_design(8, 1, 8, 16, 32, 4, 64)
    with pytest.raises(ValueError, match="do not match"):
        TritMatmul(golden.trits[:, :3], golden.a_q, dut.params)


def test_synth_report_counts_ecp5_cells():
    from ptqtp.hdl.synth import synth_report

    _, dut = random_design(8, 2, 8, 16, 32, 5, 60)
    messages, early = [], []
    rep = synth_report(to_verilog(dut), fmax=False, generic=True, progress=messages.append,
                       on_resources=lambda e, flow: early.append((dict(e), flow, list(messages))))
    e = rep["ecp5"]
    assert e["LUT"] > 0 and e["FF"] > 0 and rep["generic_cells"] > 0
    # resources are handed over as soon as synth_ecp5 ends, before the (opt-in) generic pass
    assert early[0][:2] == (e, rep["lut_mapping"]) and early[0][2][-1].startswith("yosys synth_ecp5: done in")
    assert messages[0] == "yosys synth_ecp5 ..." and messages[-1].startswith("yosys generic synth: done in")
    assert e["DSP"] == 2 * 2  # one p * a_q multiplier per plane per row unit
    assert rep["lut_mapping"] in ("abc9", "abc")
    _, pt2 = random_design(8, 2, 8, 16, 32, 5, 60, planes=1, offset=True)
    assert synth_report(to_verilog(pt2), fmax=False)["ecp5"]["DSP"] == 2 * 2  # a_q and m_q per row unit


def test_a_tool_past_its_time_limit_is_a_clear_error(tmp_path):
    from ptqtp.hdl.synth import _run

    with pytest.raises(RuntimeError, match="sleeper did not finish within 1 s"):
        _run(["sleep", "5"], tmp_path, 1, "sleeper")
