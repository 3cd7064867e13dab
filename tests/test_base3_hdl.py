"""The base-3 decoder in Amaranth's simulator: every byte against the golden decode, and whole
layers' records against the 2-bit stream layout's, bit for bit, under random stalls."""

import numpy as np
import pytest
from amaranth.sim import Simulator
from test_engine import golden_layer

from ptqtp.formats.packing import pack_trits, unpack_trits
from ptqtp.formats.stream_layout import FRAME, StreamLayout
from ptqtp.hdl.base3 import Base3Decoder, Base3Unpacker


def _word(data: bytes, i: int, wb: int) -> int:
    return int.from_bytes(data[i * wb : (i + 1) * wb], "little")


def test_decoder_every_byte_matches_golden_decode():
    nb = 4  # 20 trits a word: whole 2-bit bytes
    dut = Base3Decoder(nb)
    values = np.arange(244) % 243  # every byte value, in words of 4
    words = [values[i : i + nb] for i in range(0, len(values), nb)]
    got = []

    async def bench(ctx):
        for w in words + [None] * Base3Decoder.LATENCY:
            if w is not None:
                ctx.set(dut.i.payload.bytes, int.from_bytes(bytes(w.astype(np.uint8)), "little"))
            ctx.set(dut.i.valid, w is not None)
            await ctx.tick()
            if ctx.get(dut.o.valid):
                got.append(ctx.get(dut.o.payload.codes))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(got) == len(words)
    for w, codes in zip(words, got):
        # the golden decode, then the 2-bit codes of those trits (the engine's record format)
        expect = pack_trits(unpack_trits(w.astype(np.uint8), "base3"), "2bit")
        assert codes == int.from_bytes(bytes(expect), "little")


def records_2bit(L2: StreamLayout, region: bytes, steps: int):
    """(scale records, weight records) as ints, sliced from a 2-bit region by the layout's positions."""
    wb, scales, weights = L2.word_bytes, [], []
    for s in range(steps):
        step = int.from_bytes(region[s * L2.group_beats * wb : (s + 1) * L2.group_beats * wb], "little")
        scales.append(step & ((1 << L2.scale_record_bits) - 1))
        section = step >> (L2.scale_beats * L2.data_width)
        weights += [(section >> (j * L2.record_bits)) & ((1 << L2.record_bits) - 1) for j in range(L2.chunks_per_group)]
    return scales, weights


def run_unpacker(L3: StreamLayout, regions: list[tuple[bytes, int]], seed=0, stall=0.3):
    """Feed base-3 regions (bytes, steps) to the unpacker; collect its records."""
    wb = L3.word_bytes
    words = [_word(r, i, wb) for r, _ in regions for i in range(len(r) // wb)]
    expect_records = sum(steps * L3.chunks_per_group for _, steps in regions)
    return drive_unpacker(Base3Unpacker(L3), words, expect_records, [steps for _, steps in regions], seed, stall)


def drive_unpacker(dut, words, expect_records, steps=None, seed=0, stall=0.3):
    """Feed ``words`` (and, for the base-3 unpacker, each layer's ``steps``) to an unpacker
    under random stalls on every port; collect its (scale records, weight records)."""
    rng = np.random.default_rng(seed)
    scales, weights = [], []

    async def bench(ctx):
        pending_steps = list(steps or [])
        i = 0
        for _ in range(20 * len(words) + 50 * expect_records + 200):
            if steps is not None:
                if pending_steps:
                    ctx.set(dut.steps.payload, pending_steps[0])
                ctx.set(dut.steps.valid, bool(pending_steps))
            give = i < len(words) and rng.random() >= stall
            if give:
                ctx.set(dut.beats.payload, words[i])
            ctx.set(dut.beats.valid, give)
            s_ready, w_ready = rng.random() >= stall, rng.random() >= stall
            ctx.set(dut.scales.ready, s_ready)
            ctx.set(dut.weights.ready, w_ready)
            await ctx.delay(1e-9)
            if steps is not None and ctx.get(dut.steps.valid) and ctx.get(dut.steps.ready):
                pending_steps.pop(0)
            if give and ctx.get(dut.beats.ready):
                i += 1
            if s_ready and ctx.get(dut.scales.valid):
                scales.append(ctx.get(dut.scales.payload))
            if w_ready and ctx.get(dut.weights.valid):
                weights.append(ctx.get(dut.weights.payload))
            await ctx.tick()
            if i == len(words) and len(weights) == expect_records:
                break

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return scales, weights


@pytest.mark.parametrize(
    "P,R,planes,offset,G,S,DW,shapes",
    [
        (4, 2, 2, True, 8, 8, 32, [(5, 24), (3, 8)]),  # frames of 5 and a partial one; two layers back to back
        (8, 1, 1, False, 16, 16, 64, [(13, 32)]),  # records (8 trits) smaller than a word (40 trits)
        (16, 4, 2, False, 128, 16, 128, [(9, 256)]),  # an Arty-sized engine
        (16, 4, 2, True, 128, 16, 32, [(6, 384)]),  # records of 32 units: four pieces of 8 assembled
    ],
)
def test_unpacker_records_equal_2bit_layout(P, R, planes, offset, G, S, DW, shapes):
    rng = np.random.default_rng(P * R + DW)
    L2 = StreamLayout(P, R, planes, offset, G, S, DW, "2bit")
    L3 = StreamLayout(P, R, planes, offset, G, S, DW, "base3")
    regions, expect_s, expect_w = [], [], []
    for n, d in shapes:
        g = golden_layer(rng, n, d, planes, offset, G, S=S)
        steps = L3.steps(n, g.d_pad)
        regions.append((L3.encode(g.trits, g.a_q, g.m_q), steps))
        s, w = records_2bit(L2, L2.encode(g.trits, g.a_q, g.m_q), steps)
        expect_s += s
        expect_w += w
    assert any(steps % FRAME for _, steps in regions)
    scales, weights = run_unpacker(L3, regions)
    assert scales == expect_s
    assert weights == expect_w


@pytest.mark.model
def test_real_layers_decode_to_the_2bit_image_bit_for_bit(tmp_path):
    """SmolLM2-135M's block-0 k_proj and v_proj (the shipped GGUF), PTQTP-quantized, as model
    images for the P64 R4 DW128 engine in both packings: the base-3 image is smaller, and the
    unpacker's records from it equal the 2-bit image's records bit for bit."""
    from ptqtp import load_artifact, quantize, save_artifact
    from ptqtp.formats.gguf_source import GGUFSource
    from ptqtp.formats.model_image import read_model_image, write_model_image
    from ptqtp.golden import GoldenLayer
    from ptqtp.models.data import _default_gguf

    src = GGUFSource(_default_gguf())
    names = ["model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj"]
    art = load_artifact(
        save_artifact(
            tmp_path / "a.safetensors", {n: quantize(src.read(f"{n}.weight")) for n in names}, packing="base3"
        )
    )
    layers = {n: GoldenLayer.from_packed(art.layers[n]) for n in names}
    L2, L3 = (StreamLayout(64, 4, 2, False, 128, 16, 128, p) for p in ("2bit", "base3"))
    img2 = read_model_image(write_model_image(tmp_path / "img2", layers, L2))
    img3 = read_model_image(write_model_image(tmp_path / "img3", layers, L3))
    assert img3.blob.stat().st_size <= 0.82 * img2.blob.stat().st_size
    regions, expect_s, expect_w = [], [], []
    for e2, e3 in zip(img2.entries, img3.entries):
        steps = L3.steps(e3["n"], e3["d_pad"])
        blob2, blob3 = img2.blob_bytes(), img3.blob_bytes()
        regions.append((blob3[e3["byte_offset"] : e3["byte_offset"] + e3["byte_size"]], steps))
        s, w = records_2bit(L2, blob2[e2["byte_offset"] : e2["byte_offset"] + e2["byte_size"]], steps)
        expect_s += s
        expect_w += w
    scales, weights = run_unpacker(L3, regions, stall=0.1)
    assert len(weights) == 2 * 48 * 5 * 2  # 2 layers x 48 blocks x 5 groups x 2 records
    assert scales == expect_s
    assert weights == expect_w
