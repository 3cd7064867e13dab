"""The compiled harness (ptqtp.sim.compiled) against the cocotb bench: on the same stimulus,
the same outputs and the same cycle counts (every run's finishing cycle and all engine
counters), with and without throttled memory and back-pressure, 2-bit and base-3, AXI and
ROM; and its own checks (Python's random sequence, a flipped bit, waves for a window)."""

import gzip
import random

import numpy as np
import pytest
from test_engine import engine_case

from ptqtp.hdl.engine_model import EngineParams

pytestmark = pytest.mark.rtl

SMALL = dict(max_d=384, burst=8, outstanding=2)


def verilog(params, rom=None):
    from ptqtp.hdl.engine import TritEngine
    from ptqtp.hdl.synth import to_verilog
    from ptqtp.sim.runner import ENGINE_TOP

    return to_verilog(TritEngine(params, rom=rom), name=ENGINE_TOP)


def both(params, img, batches, rom=False, **throttle):
    from ptqtp.sim.compiled import run_engine_compiled
    from ptqtp.sim.runner import engine_config, image_runs, run_engine

    runs, inputs, expected = image_runs(img, batches)
    text = verilog(params, img.blob_bytes() if rom else None)
    cfg = engine_config(params, **throttle)
    return (
        run_engine(text, img.blob_bytes(), runs, inputs, expected, cfg),
        run_engine_compiled(text, img.blob_bytes(), runs, inputs, expected, cfg),
    )


def same(cocotb, compiled):
    assert cocotb.passed and compiled.passed, (cocotb.first_mismatch, compiled.first_mismatch)
    assert compiled.counters == cocotb.counters
    assert [(r["cycles"], r["done_at"]) for r in compiled.runs] == [(r["cycles"], r["done_at"]) for r in cocotb.runs]
    assert compiled.sim_cycles == cocotb.sim_cycles


SHAPES = [(7, 300, 2, True, False), (5, 128, 1, True, True), (3, 384, 2, False, False), (6, 256, 3, True, False)]


@pytest.mark.parametrize(
    "P,R,offset,DW,M,packing,throttle",
    [
        (8, 2, True, 64, 2, "2bit", {}),
        (8, 2, True, 64, 2, "2bit", dict(mem_busy=0.6, mem_latency=5, stall=0.3, seed=11)),
        (16, 4, False, 128, 4, "2bit", dict(mem_busy=0.5, mem_period=20)),
        (16, 4, False, 128, 4, "base3", dict(stall=0.4, seed=3)),
        (8, 2, True, 64, 2, "base3", dict(mem_busy=0.3, mem_latency=3, stall=0.2, seed=7)),
    ],
)
def test_same_outputs_and_cycles_as_the_cocotb_bench(tmp_path, P, R, offset, DW, M, packing, throttle):
    params = EngineParams(lanes=P, rows=R, offset=offset, data_width=DW, vectors=M, packing=packing, **SMALL)
    shapes = [(n, d, planes, offset and off, perm) for n, d, planes, off, perm in SHAPES]
    img, batches = engine_case(tmp_path, params, shapes, seed=P + len(throttle))
    cocotb, compiled = both(params, img, batches, **throttle)
    same(cocotb, compiled)
    if throttle.get("mem_busy"):
        assert compiled.counters["WAIT_W"] > 0  # the throttle really held the core back


def test_same_cycles_with_weights_in_rom(tmp_path):
    params = EngineParams(lanes=8, rows=2, offset=True, data_width=64, vectors=2, **SMALL)
    img, batches = engine_case(tmp_path, params, [(5, 200, 2, False, False), (3, 128, 1, True, True)], seed=9)
    same(*both(params, img, batches, rom=True, stall=0.2))


def test_a_flipped_weight_bit_is_caught(tmp_path):
    from ptqtp.sim.compiled import run_engine_compiled
    from ptqtp.sim.runner import engine_config, image_runs

    params = EngineParams(lanes=8, rows=2, offset=True, data_width=64, vectors=2, **SMALL)
    img, batches = engine_case(tmp_path, params, [(4, 128, 2, False, False)], seed=5)
    blob = bytearray(img.blob_bytes())
    blob[params.layout.scale_beats * 8 + 2] ^= 0b01  # plane 1, row 1, lane 0 of chunk 0
    runs, inputs, expected = image_runs(img, batches)
    res = run_engine_compiled(verilog(params), bytes(blob), runs, inputs, expected, engine_config(params))
    assert not res.passed and res.first_mismatch["row"] == 1


def test_layer_requests_in_batches_of_m(tmp_path):
    """The backend's request (serve_host): 7 vectors through an M = 2 engine in 4 batches,
    bit-exact, and the CYCLES counter's increase at least the cycle model's issue cycles."""
    from ptqtp.sim.compiled import CompiledEngine
    from ptqtp.sim.runner import engine_config, image_runs
    from ptqtp.workflows.budget import random_activations

    params = EngineParams(lanes=8, rows=2, offset=True, data_width=64, vectors=2, **SMALL)
    img, _ = engine_case(tmp_path, params, [(9, 256, 2, True, False)], seed=2)
    g = img.layers["layer0"]
    x_q, _ = g.quantize_input(random_activations(7, g.d, seed=4))
    runs, _, _ = image_runs(img, [("layer0", x_q[:1])])
    with CompiledEngine(verilog(params), engine_config(params), img.blob_bytes()) as engine:
        acc, cycles = engine.run_layer(runs[0], x_q, params.vectors)
    assert np.array_equal(acc, g.acc(x_q))
    assert cycles >= params.run(g.n, g.d_pad, 7).issue_cycles


def test_python_random_sequence():
    """The harness's random pauses use Python's own Mersenne Twister sequence."""
    from ptqtp.hdl.contract import ENGINE_ID
    from ptqtp.sim.compiled import _ports, build_harness, py_random

    params = EngineParams(lanes=4, rows=1, planes=1, data_width=64, vectors=1, **SMALL)
    cfg = {"params_word": params.params_word(), "lanes": 4, "act_bits": 8, "out_bits": params.out_bits}
    lib = build_harness(verilog(params), _ports(verilog(params), cfg | {"engine_id": ENGINE_ID}))
    for seed in (0, 1, 12, 2**32 + 5, 2**40 - 1):
        rng = random.Random(seed)
        assert py_random(seed, 1000, lib).tolist() == [rng.random() for _ in range(1000)]


def test_waves_for_a_window_of_cycles(tmp_path):
    from ptqtp.sim.compiled import run_engine_compiled
    from ptqtp.sim.runner import engine_config, image_runs

    params = EngineParams(lanes=8, rows=2, offset=True, data_width=64, vectors=2, **SMALL)
    img, batches = engine_case(tmp_path, params, [(4, 128, 2, False, False)], seed=5)
    runs, inputs, expected = image_runs(img, batches)
    waves = tmp_path / "w.vcd.gz"
    res = run_engine_compiled(
        verilog(params), img.blob_bytes(), runs, inputs, expected, engine_config(params), waves, window=(40, 60)
    )
    assert res.passed
    text = gzip.decompress(waves.read_bytes()).decode()
    times = [int(line[1:]) for line in text.splitlines() if line.startswith("#")]
    assert "s_axis_x" in text and min(times) == 400 and max(times) == 600  # 10 ns a cycle
    text, cfg = verilog(params), engine_config(params)
    with pytest.raises(ValueError, match="no cycle of the run"):
        run_engine_compiled(text, img.blob_bytes(), runs, inputs, expected, cfg, waves, window=(10**9, 10**9))


def test_a_run_the_engine_cannot_finish_is_reported_not_waited_for(tmp_path, monkeypatch):
    """A descriptor whose activations never come: the harness gives up after IDLE_LIMIT quiet
    cycles and names what the engine's registers say."""
    import ptqtp.sim.compiled as compiled
    from ptqtp.sim.runner import engine_config, image_runs

    monkeypatch.setattr(compiled, "IDLE_LIMIT", 5000)
    params = EngineParams(lanes=8, rows=2, offset=True, data_width=64, vectors=2, **SMALL)
    img, batches = engine_case(tmp_path, params, [(4, 128, 2, False, False)], seed=5)
    runs, _, _ = image_runs(img, batches)
    with compiled.CompiledEngine(verilog(params), engine_config(params), img.blob_bytes()) as engine:
        engine.queue(runs[0])  # no activations pushed
        with pytest.raises(TimeoutError, match="sent 0 of 4 results and then nothing for 5,000 cycles"):
            engine.receive(runs[0]["n"], runs[0]["m"])
