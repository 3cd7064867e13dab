"""The weight-streaming engine: stream layout, model image, and the RTL in Verilator with
cocotbext-axi bus models (AxiRamRead as DRAM, AxiLiteMaster, AXI-Stream source and sink),
every output against the golden model."""

import json

import numpy as np
import pytest

from ptqtp.formats.model_image import ModelImageError, read_model_image, write_model_image
from ptqtp.formats.stream_layout import StreamLayout
from ptqtp.golden import GoldenLayer, IntConfig
from ptqtp.workflows.budget import random_activations


def golden_layer(rng, n, d, planes=2, offset=False, G=128, A=8, S=16, perm=False):
    d_pad = -(-d // G) * G
    t = rng.integers(-1, 2, (planes, n, d_pad)).astype(np.int8)
    t[:, :, d:] = 0
    return GoldenLayer(
        t,
        rng.standard_normal((planes, n, d_pad // G)),
        d,
        G,
        IntConfig(A, S),
        offsets=rng.standard_normal((n, d_pad // G)) if offset else None,
        perm=rng.permutation(d) if perm else None,
    )


# ------------------------------------------------------------------ stream layout


def test_stream_layout_bytes_by_hand():
    """P=4, R=2, two planes + offsets, G=8, S=8, DW=32: every byte derived from the spec text."""
    L = StreamLayout(lanes=4, rows=2, planes=2, offset=True, group_size=8, scale_bits=8, data_width=32)
    assert (L.record_bits, L.record_beats, L.scale_beats, L.group_weight_beats) == (32, 1, 2, 2)
    trits = np.zeros((2, 3, 8), np.int8)
    trits[0, 0, :4] = [1, -1, 0, 1]  # plane 1, row 0, chunk 0: codes 01 11 00 01 -> 0b01_00_11_01 = 0x4d
    trits[1, 1, 4:] = [-1, 0, 0, 0]  # plane 2, row 1, chunk 1: 0x03
    trits[0, 2, 0] = 1  # row 2 is block 1, row unit 0
    a_q = np.array([[[5], [-2], [7]], [[1], [2], [3]]])
    m_q = np.array([[-1], [4], [9]])
    got = np.frombuffer(L.encode(trits, a_q, m_q), np.uint8)
    block0 = [
        5,
        0xFE,
        1,
        2,
        0xFF,
        4,
        0,
        0,  # scales: a1 r0 r1, a2 r0 r1, m r0 r1, pad
        0x4D,
        0,
        0,
        0,  # chunk 0: plane 1 row 0, plane 1 row 1, plane 2 row 0, plane 2 row 1
        0,
        0,
        0,
        0x03,
    ]  # chunk 1
    block1 = [7, 0, 3, 0, 9, 0, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0]  # row 3 is padding: zero
    assert got.tolist() == block0 + block1
    t, a, m = L.decode(got.tobytes(), 3, 8, 2, True)
    assert np.array_equal(t, trits) and np.array_equal(a, a_q) and np.array_equal(m, m_q)


def test_stream_layout_base3_bytes_by_hand():
    """The same layer in base-3: one frame of k = 2 steps, its scale records, then the two
    steps' trit sequences (32 trits each) packed five a byte, most significant digit first."""
    L = StreamLayout(lanes=4, rows=2, planes=2, offset=True, group_size=8, scale_bits=8, data_width=32, packing="base3")
    trits = np.zeros((2, 3, 8), np.int8)
    trits[0, 0, :4] = [1, -1, 0, 1]  # sequence positions 0..3
    trits[1, 1, 4] = -1  # chunk 1 (16) + plane 2 (8) + row unit 1 (4): position 28
    trits[0, 2, 0] = 1  # step 1 (block 1): position 32
    a_q = np.array([[[5], [-2], [7]], [[1], [2], [3]]])
    m_q = np.array([[-1], [4], [9]])
    got = np.frombuffer(L.encode(trits, a_q, m_q), np.uint8)
    scales = [5, 0xFE, 1, 2, 0xFF, 4, 7, 0, 3, 0, 9, 0]  # two 48-bit records back to back: 3 words
    # byte 0: trits 1, -1, 0, 1, 0 -> digits 1 2 0 1 0 = 81 + 54 + 3; byte 5: position 28 is digit 3 of
    # trits 25..29 (-1 -> 2): 2 * 3; byte 6: position 32 is digit 2 of trits 30..34: 1 * 9; 13 bytes + 3 pad
    assert got.tolist() == scales + [138, 0, 0, 0, 0, 6, 9, 0, 0, 0, 0, 0, 0] + [0, 0, 0]
    assert L.layer_bytes(3, 8) == 28
    t, a, m = L.decode(got.tobytes(), 3, 8, 2, True)
    assert np.array_equal(t, trits) and np.array_equal(a, a_q) and np.array_equal(m, m_q)


@pytest.mark.parametrize("packing", ["2bit", "base3"])
@pytest.mark.parametrize(
    "P,R,planes,offset,DW,lp,loff",
    [
        (16, 4, 2, False, 128, 2, False),
        (16, 4, 2, True, 512, 1, True),
        (4, 1, 1, True, 64, 1, True),
        (64, 4, 2, False, 256, 2, False),
        (16, 4, 2, True, 128, 3, True),  # K = 3, 4: passes (the wide layer)
        (8, 2, 2, False, 64, 4, False),
        (4, 1, 1, True, 64, 3, False),
    ],
)
def test_stream_layout_round_trip(P, R, planes, offset, DW, lp, loff, packing):
    rng = np.random.default_rng(P + DW)
    L = StreamLayout(P, R, planes, offset, 128, 16, DW, packing)
    g = golden_layer(rng, 7, 300, lp, loff)
    data = L.encode(g.trits, g.a_q, g.m_q)
    assert len(data) == L.layer_bytes(7, 384, lp) and len(data) % L.word_bytes == 0
    assert L.layer_bytes(7, 384, lp) == L.layer_bytes(7, 384 * L.passes(lp))
    t, a, m = L.decode(data, 7, 384, lp, loff)
    assert np.array_equal(t, g.trits) and np.array_equal(a, g.a_q)
    assert (m is None) == (g.m_q is None) and (m is None or np.array_equal(m, g.m_q))


def test_stream_layout_rejects():
    L = StreamLayout(8, 2, 1, False, 128, 16, 64)
    g = golden_layer(np.random.default_rng(0), 4, 128, planes=2, offset=True)
    with pytest.raises(ValueError, match="does not run on an engine with 1 plane"):
        L.encode(g.trits, g.a_q, g.m_q)
    with pytest.raises(ValueError, match="1 to 4 planes, not 5"):
        L.encode(np.zeros((5, 4, 128), np.int8), np.zeros((5, 4, 1), np.int64))
    four = golden_layer(np.random.default_rng(1), 4, 128, planes=4)
    data4 = StreamLayout(8, 2, 2, False, 128, 16, 64).encode(four.trits, four.a_q)
    with pytest.raises(ValueError, match="nonzero padding"):  # plane 4 is the 3-plane layer's zero padding
        StreamLayout(8, 2, 2, False, 128, 16, 64).decode(data4, 4, 128, 3, False)
    one = golden_layer(np.random.default_rng(0), 3, 128, planes=1)
    data = bytearray(L.encode(one.trits, one.a_q))
    bad = bytearray(data)
    bad[L.scale_beats * 8] = 0b10  # the invalid trit code
    with pytest.raises(ValueError, match="invalid trit code"):
        L.decode(bytes(bad), 3, 128, 1, False)
    bad = bytearray(data)
    bad[-1] = 1  # a trit of row 3 (row unit 1 of block 1), past n = 3
    with pytest.raises(ValueError, match="nonzero padding"):
        L.decode(bytes(bad), 3, 128, 1, False)
    with pytest.raises(ValueError, match="needs"):
        L.decode(bytes(data[:-8]), 3, 128, 1, False)
    with pytest.raises(ValueError, match="power of two"):
        StreamLayout(8, 3)
    with pytest.raises(ValueError, match="packing must be one of"):
        StreamLayout(8, 2, packing="base4")


def test_stream_layout_base3_rejects():
    L = StreamLayout(8, 2, 1, False, 128, 16, 64, "base3")
    one = golden_layer(np.random.default_rng(0), 3, 128, planes=1)  # 2 steps: one frame of k = 2
    data = L.encode(one.trits, one.a_q)
    assert len(data) == 8 + 104  # 2 x 32-bit scale records in a word; 2 * 256 trits -> 103 bytes -> 13 words
    bad = bytearray(data)
    bad[8 + 4] = 250
    with pytest.raises(ValueError, match="base-3 byte 250"):
        L.decode(bytes(bad), 3, 128, 1, False)
    bad = bytearray(data)
    bad[8 + 103] = 1  # the frame's word padding
    with pytest.raises(ValueError, match="nonzero padding"):
        L.decode(bytes(bad), 3, 128, 1, False)
    bad = bytearray(data)
    bad[8 + 102] = 9  # 512 trits end with digits 0 and 1 of byte 102: digit 2 is remainder
    with pytest.raises(ValueError, match="remainder"):
        L.decode(bytes(bad), 3, 128, 1, False)
    L2 = StreamLayout(8, 2, 1, False, 128, 16, 128, "base3")  # 2 x 32 bits in a 128-bit word: 8 bytes of padding
    data2 = bytearray(L2.encode(one.trits, one.a_q))
    data2[12] = 1
    with pytest.raises(ValueError, match="nonzero padding"):
        L2.decode(bytes(data2), 3, 128, 1, False)


def test_base3_region_sizes_of_smollm2_shapes():
    """Weight bytes per token, SmolLM2-135M's linears (n x d per block), R = 4, DW = 128: base-3
    needs at most 0.82 of the 2-bit region bytes (the image-level figure is in the README)."""
    shapes = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]
    two, three = (StreamLayout(64, 4, 2, False, 128, 16, 128, p) for p in ("2bit", "base3"))
    ratio = sum(three.layer_bytes(n, d) for n, d in shapes) / sum(two.layer_bytes(n, d) for n, d in shapes)
    assert ratio <= 0.82, ratio


# ------------------------------------------------------------------ model image


def test_model_image_round_trip_and_integrity(tmp_path):
    rng = np.random.default_rng(1)
    layout = StreamLayout(16, 4, 2, True, 128, 16, 128)
    layers = {
        "q": golden_layer(rng, 9, 200),
        "down": golden_layer(rng, 5, 130, 1, True, perm=True),
        "up": golden_layer(rng, 12, 256, 2, True),
    }
    folder = write_model_image(tmp_path / "img", layers, layout, "ab" * 32)
    img = read_model_image(folder)
    assert list(img.layers) == ["q", "down", "up"] and img.source_sha256 == "ab" * 32
    x = rng.standard_normal((3, 130))
    for name, g in layers.items():
        back = img.layers[name]
        assert np.array_equal(back.trits, g.trits) and np.array_equal(back.a_q, g.a_q) and back.F == g.F
        assert (back.m_q is None) == (g.m_q is None) and (g.m_q is None or np.array_equal(back.m_q, g.m_q))
    np.testing.assert_array_equal(img.layers["down"].forward(x), layers["down"].forward(x))  # perm included
    for e in img.entries:
        assert e["byte_offset"] % 4096 == 0 and e["byte_size"] == layout.layer_bytes(e["n"], e["d_pad"])
    blob = (folder / "weights.bin").read_bytes()
    flipped = bytearray(blob)
    flipped[img.entries[1]["byte_offset"] + 40] ^= 0x10
    (folder / "weights.bin").write_bytes(bytes(flipped))
    with pytest.raises(ModelImageError, match="weights.bin: SHA-256"):
        read_model_image(folder)
    from ptqtp.formats.model_image import _manifest_digest

    def forge(man):  # a forger who also fixes the manifest's own hash
        (folder / "manifest.json").write_text(json.dumps({**man, "sha256": _manifest_digest(man)}))

    man = json.loads((folder / "manifest.json").read_text())
    man["blob_sha256"] = __import__("hashlib").sha256(bytes(flipped)).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ModelImageError, match="manifest's sha256"):
        read_model_image(folder)
    forge(man)
    with pytest.raises(ModelImageError, match="layer 'down': region SHA-256"):
        read_model_image(folder)
    (folder / "weights.bin").write_bytes(blob)
    man = json.loads((folder / "manifest.json").read_text())
    man["blob_sha256"] = __import__("hashlib").sha256(blob).hexdigest()
    man["layers"][2]["F"] += 1
    forge(man)
    with pytest.raises(ModelImageError, match="layer 'up'"):
        read_model_image(folder)
    for field, value in (("act_bits", 6), ("layout", {**man["layout"], "rows": 2})):
        edited = {**json.loads((folder / "manifest.json").read_text()), field: value}
        (folder / "manifest.json").write_text(json.dumps(edited))
        with pytest.raises(ModelImageError, match="manifest's sha256"):
            read_model_image(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(ModelImageError, match="not a model image"):
        read_model_image(folder)


def test_model_image_refuses_layers_the_engine_cannot_run(tmp_path):
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="b: a layer with 1 plane.*offsets"):
        write_model_image(
            tmp_path / "img",
            {"a": golden_layer(rng, 4, 128), "b": golden_layer(rng, 4, 128, 1, True)},
            StreamLayout(16, 4, 2, False, 128, 16, 128),
        )
    assert not (tmp_path / "img").exists()  # nothing half-written


# ------------------------------------------------------------------ RTL


def engine_case(tmp_path, params, shapes, seed=0):
    """A model image of random layers for ``params`` and one batch per layer: (image, batches)."""
    rng = np.random.default_rng(seed)
    layers = {}
    for i, (n, d, planes, offset, perm) in enumerate(shapes):
        layers[f"layer{i}"] = golden_layer(rng, n, d, planes, offset, perm=perm)
    img = read_model_image(write_model_image(tmp_path / "img", layers, params.layout))
    batches = []
    for i, name in enumerate(layers):
        g = img.layers[name]
        m = 1 + i % params.vectors  # m = 1 .. M across the layers
        x_q, _ = g.quantize_input(random_activations(m, g.d, seed=seed + i))  # applies the permutation
        x_q[0, : g.d] = g.config.q_max  # an extreme vector
        batches.append((name, x_q))
    return img, batches


def run(params, img, batches, rom=False, **throttle):
    from ptqtp.hdl.engine import TritEngine
    from ptqtp.hdl.synth import to_verilog
    from ptqtp.sim.runner import ENGINE_TOP, engine_config, image_runs, run_engine

    runs, inputs, expected = image_runs(img, batches)
    engine = TritEngine(params, rom=img.blob_bytes() if rom else None)
    res = run_engine(
        to_verilog(engine, name=ENGINE_TOP), img.blob_bytes(), runs, inputs, expected, engine_config(params, **throttle)
    )
    return res, runs


def check(res):
    assert res.passed, f"mismatches {res.mismatches}, first {res.first_mismatch}"


# (P, R, planes, offset, DW, M): record of one word; two words; eight records a word
ENGINES = [(8, 2, 2, True, 64, 2), (16, 4, 2, False, 128, 4), (4, 1, 1, True, 64, 1)]


@pytest.mark.parametrize(
    "P,R,planes,offset,DW,M,packing", [(*e, "2bit") for e in ENGINES] + [(*e, "base3") for e in ENGINES[:2]]
)
@pytest.mark.rtl
def test_engine_runs_layers_back_to_back(tmp_path, P, R, planes, offset, DW, M, packing):
    """Several shapes on one build (d not a multiple of P*R, n not a multiple of R, one- to
    four-plane layers, offsets, a permutation), m = 1..M, every output bit-exact; the ISSUED
    counter equals the cycle model's compute cycles (passes included)."""
    from ptqtp.hdl.engine_model import EngineParams

    params = EngineParams(
        lanes=P,
        rows=R,
        planes=planes,
        offset=offset,
        max_d=384,
        vectors=M,
        data_width=DW,
        burst=8,
        outstanding=2,
        packing=packing,
    )
    shapes = [
        (7, 300, planes, offset, False),
        (R + 1, 128, 1, offset, offset),
        (3, 384, planes, False, False),
        (2 * R, 200, 1, False, False),
        (R + 3, 256, 3, offset, False),  # K = 3 and 4: passes over the same activations
        (5, 140, 4, False, offset),
    ]
    img, batches = engine_case(tmp_path, params, shapes, seed=P)
    res, runs = run(params, img, batches)
    check(res)
    model = [params.run(g.n, g.d_pad, len(x), g.planes) for g, (_, x) in zip(img.layers.values(), batches)]
    assert res.counters["ISSUED"] == sum(r.issue_cycles for r in model)
    assert res.counters["CYCLES"] <= sum(r.cycles() + r.slack() for r in model)
    assert res.counters["ERRORS"] == 0 and res.counters["STATUS"] >> 8 == len(runs)  # runs finished


@pytest.mark.rtl
def test_engine_under_back_pressure_and_throttled_memory(tmp_path):
    from ptqtp.hdl.engine_model import EngineParams

    params = EngineParams(
        lanes=8, rows=2, planes=2, offset=True, max_d=384, vectors=2, data_width=64, burst=8, outstanding=2
    )
    img, batches = engine_case(tmp_path, params, [(9, 256, 2, True, False), (3, 100, 1, True, True)], seed=3)
    res, _ = run(params, img, batches, mem_busy=0.6, mem_latency=5, stall=0.3, seed=11)
    check(res)
    assert res.counters["WAIT_W"] > 0  # the memory really held the core back


@pytest.mark.rtl
def test_engine_with_resident_weights_in_rom(tmp_path):
    """The same datapath fed from an on-chip ROM holding the model image (no AXI master)."""
    from ptqtp.hdl.engine_model import EngineParams

    params = EngineParams(
        lanes=8, rows=2, planes=2, offset=True, max_d=384, vectors=2, data_width=64, burst=8, outstanding=2
    )
    img, batches = engine_case(tmp_path, params, [(5, 200, 2, False, False), (3, 128, 1, True, True)], seed=9)
    res, _ = run(params, img, batches, rom=True, stall=0.2)
    check(res)


@pytest.mark.rtl
def test_engine_catches_a_flipped_weight_bit(tmp_path):
    """The bench is not vacuous: one flipped trit in the image gives mismatches."""
    from ptqtp.hdl.engine_model import EngineParams

    params = EngineParams(
        lanes=8, rows=2, planes=2, offset=True, max_d=384, vectors=2, data_width=64, burst=8, outstanding=2
    )
    img, batches = engine_case(tmp_path, params, [(4, 128, 2, False, False)], seed=5)
    blob = bytearray(img.blob_bytes())
    blob[params.layout.scale_beats * 8 + 2] ^= 0b01  # plane 1, row 1, lane 0 of chunk 0: 0 <-> +1 or -1 <-> 0b10
    (img.folder / "weights.bin").write_bytes(bytes(blob))
    res, _ = run(params, img, batches)
    assert not res.passed and res.first_mismatch["row"] == 1


@pytest.mark.rtl
def test_engine_registers(tmp_path):
    from ptqtp.hdl.engine import TritEngine
    from ptqtp.hdl.engine_model import EngineParams
    from ptqtp.hdl.synth import to_verilog
    from ptqtp.sim.runner import ENGINE_TOP, engine_config, run_engine

    params = EngineParams(
        lanes=8, rows=2, planes=2, offset=True, max_d=384, vectors=2, data_width=64, burst=8, outstanding=2
    )
    res = run_engine(
        to_verilog(TritEngine(params), name=ENGINE_TOP),
        b"\0" * 64,
        [],
        [],
        [],
        engine_config(params),
        testcase="register_access",
    )
    assert res.passed


def test_engine_params_rejected():
    from ptqtp.hdl.engine_model import EngineParams

    with pytest.raises(ValueError, match="vectors M must be a power of two"):
        EngineParams(vectors=3)
    with pytest.raises(ValueError, match="rows must be a power of two"):
        EngineParams(rows=3)
    with pytest.raises(ValueError, match="ACC = .* exceeds 64"):
        EngineParams(act_bits=16, scale_bits=32, max_d=1 << 20)
    with pytest.raises(ValueError, match="batch m=5"):
        EngineParams(vectors=4).check_layer(8, 256, 2, False, m=5)


@pytest.mark.rtl
def test_throttled_block_within_five_percent_of_plan(tmp_path):
    """A small 'block' of layers with the DRAM throttled to half the bus (a board's bandwidth):
    the engine's cycles land within 5% of ``ptqtp plan``'s figure for that board."""
    from ptqtp.hdl.engine_model import EngineParams
    from ptqtp.workflows.plan import Board, LayerShape, plan

    params = EngineParams(
        lanes=8, rows=2, planes=2, offset=False, max_d=384, vectors=1, data_width=64, burst=8, outstanding=2
    )
    rng = np.random.default_rng(12)
    layers = {
        f"model.layers.0.{k}": golden_layer(rng, n, d)
        for k, (n, d) in {"self_attn.q_proj": (48, 256), "mlp.up_proj": (96, 256), "mlp.down_proj": (48, 384)}.items()
    }
    img = read_model_image(write_model_image(tmp_path / "img", layers, params.layout))
    batches = [
        (name, g.quantize_input(random_activations(1, g.d, seed=i))[0])
        for i, (name, g) in enumerate(img.layers.items())
    ]
    board = Board("half", "half the bus", bandwidth_gbs=0.4, fmax_mhz=100)  # 4 of 8 bytes a cycle
    res, _ = run(params, img, batches, mem_busy=0.5, mem_period=20)
    check(res)
    model = plan([LayerShape(n, g.n, g.d_pad) for n, g in img.layers.items()], params, board)
    assert abs(res.counters["CYCLES"] / model["decode_cycles_per_token"] - 1) < 0.05
