"""Amaranth-level tests of the datapath blocks against the golden model; the engine's Verilog
and its synthesis report."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from ptqtp.hdl.blocks import AdderTree, GroupAccumulator, PlaneUnit, TernarySelect, TritCode
from ptqtp.hdl.engine_model import EngineParams
from ptqtp.hdl.synth import to_verilog, yosys_parses


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
            ctx.set(
                dut.tags,
                {
                    "valid": 1,
                    "group_first": i == 0,
                    "group_last": i == cpg - 1,
                    "row_first": g == 0,
                    "row_last": g == ng - 1,
                },
            )
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


SMALL_ENGINES = [
    dict(lanes=4, rows=2, planes=2, offset=False, max_d=128, vectors=1, data_width=64, burst=8),
    dict(
        lanes=8,
        rows=1,
        planes=1,
        offset=True,
        max_d=256,
        vectors=2,
        data_width=32,
        burst=4,
        act_bits=4,
        scale_bits=8,
        packing="base3",
    ),
]


@pytest.mark.synth
@pytest.mark.parametrize("kw", SMALL_ENGINES)
def test_engine_verilog_has_the_spec_ports_and_yosys_parses(kw):
    from ptqtp.hdl.engine import TritEngine

    text = to_verilog(TritEngine(EngineParams(**kw)), name="trit_engine")
    for port in (
        "s_axil__awaddr",
        "m_axi__araddr",
        "m_axi__rdata",
        "s_axis_x__tdata",
        "s_axis_x__tuser",
        "m_axis_y__tdata",
        "m_axis_y__tid",
        "m_axis_y__tlast",
        "clk",
        "rst",
    ):
        assert port in text
    assert "$readmemh" not in text
    assert yosys_parses(text, top="trit_engine")


@pytest.mark.synth
def test_synth_report_counts_ecp5_cells():
    from ptqtp.hdl.engine import TritEngine
    from ptqtp.hdl.synth import synth_report

    messages, early = [], []
    rep = synth_report(
        to_verilog(TritEngine(EngineParams(**SMALL_ENGINES[0])), name="trit_engine"),
        fmax=False,
        progress=messages.append,
        on_resources=lambda e, flow: early.append((dict(e), flow, list(messages))),
    )
    e = rep["ecp5"]
    assert e["LUT"] > 0 and e["FF"] > 0
    # resources are handed over as soon as synth_ecp5 ends
    assert early[0][:2] == (e, rep["lut_mapping"]) and early[0][2][-1].startswith("yosys synth_ecp5: done in")
    assert messages[0] == "yosys synth_ecp5 ..."
    assert e["DSP"] == 2 * 2  # one p * a_q multiplier per plane per row unit
    assert rep["lut_mapping"] in ("abc9", "abc")


def test_a_tool_past_its_time_limit_is_a_clear_error(tmp_path):
    from ptqtp.hdl.synth import _run

    with pytest.raises(RuntimeError, match="sleeper did not finish within 1 s"):
        _run(["sleep", "5"], tmp_path, 1, "sleeper")


def test_critical_path_groups_the_path_by_design_name():
    """nextpnr's worst path, one row per stretch through a design name, with the delay so
    far; the last row's delay is the whole path's."""
    from ptqtp.hdl.synth import critical_path

    def seg(cell, delay):
        return {"to": {"cell": cell}, "delay": delay}

    path = [
        seg("u.fsm_state_TRELLIS_FF_Q_2", 0.5),
        seg("u.done_LUT4_B_D", 0.25),
        seg("u.done_LUT4_C_1", 0.25),
        seg("\\$signal$3_LUT4_A_CCU2C_S0", 1.0),
        seg("\\$signal$3_LUT4_A_CCU2C_S1", 2.0),
        seg("mem.0.0_DIA3_TRELLIS_FF_Q", 0.5),
    ]
    rows = critical_path({"critical_paths": [{"path": path}, {"path": [seg("other", 9.0)]}]})
    assert rows == [
        {"through": "u.fsm_state", "ns": 0.5},
        {"through": "u.done", "ns": 1.0},
        {"through": "$signal$3", "ns": 4.0},
        {"through": "mem.0.0", "ns": 4.5},
    ]
    assert critical_path({}) == [] and critical_path({"critical_paths": []}) == []
