"""The LiteX SoC: its address map, the host driver's framing and decoding, Verilog generation
for every board, and layers through the whole SoC in Verilator (LiteDRAM's real controller
in front of its SDRAM model) bit-exact against the golden model."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("litex")
pytest.importorskip("migen")

from test_golden import random_layer  # noqa: E402

from ptqtp.formats.stream_layout import pack_activations  # noqa: E402
from ptqtp.golden import GoldenLayer, IntConfig  # noqa: E402
from ptqtp.hdl.contract import ENGINE_ID, Reg  # noqa: E402
from ptqtp.hdl.engine_model import EngineParams  # noqa: E402
from ptqtp.soc import memory_map as mm  # noqa: E402
from ptqtp.soc.host import SocDriver, SocError, UartBone, _decode_y  # noqa: E402
from ptqtp.soc.system import BOARDS, board, soc_params  # noqa: E402


def _layer(n, d, seed, planes=2, G=128):
    trits, scales = random_layer(n, d, G, seed)
    if planes != 2:
        rng = np.random.default_rng(seed + 1)
        trits = rng.integers(-1, 2, size=(planes, n, trits.shape[2])).astype(np.int8)
        trits[:, :, d:] = 0
        scales = (rng.standard_normal((planes, n, scales.shape[2])) * 0.05).astype(np.float16).astype(np.float64)
    return GoldenLayer(trits, scales, d, G, IntConfig(8, 16))


def _inputs(layer, m, seed):
    x = np.random.default_rng(seed).integers(-127, 128, size=(m, layer.d_pad))
    x[:, layer.d :] = 0
    return x


# ------------------------------------------------------------------ address map, host side


def test_memory_map_regions_are_aligned_disjoint_and_below_dram():
    bases = sorted([mm.ENGINE_REGS, mm.CONTROL, mm.X_WINDOW, mm.Y_WINDOW])
    for a, b in zip(bases, bases[1:]):
        assert b - a >= mm.REGION_SIZE
    assert all(base % mm.REGION_SIZE == 0 for base in bases)
    assert bases[-1] + mm.REGION_SIZE <= mm.MAIN_RAM
    assert len(set(mm.Ctl)) == len(mm.Ctl)
    assert max(mm.Ctl) < 16  # the register decoder looks at four address bits


def _encode_y(acc, tid, last):
    """The y window's word pairs as docs/SPEC.md section 11 defines them."""
    low = acc & 0xFFFFFFFF
    high = ((acc >> 32) & 0xFFFFFF) | (tid << 24) | (last << 31)
    return np.stack([low, high], axis=1).astype(np.uint32)


@pytest.mark.parametrize("out_bits", [35, 40, 55])
def test_y_entries_decode_to_the_signed_accumulator_tid_and_tlast(out_bits):
    rng = np.random.default_rng(out_bits)
    lim = 1 << (out_bits - 1)
    acc = np.concatenate([rng.integers(-lim, lim, 200), [-lim, lim - 1, 0, -1]]).astype(np.int64)
    tid, last = rng.integers(0, 128, len(acc)), rng.integers(0, 2, len(acc))
    got, gtid, glast = _decode_y(_encode_y(acc, tid, last), out_bits)
    assert got.tolist() == acc.tolist()
    assert gtid.tolist() == tid.tolist() and glast.tolist() == last.tolist()


@pytest.mark.parametrize("lanes,act_bits", [(16, 8), (64, 8), (16, 10), (8, 3)])
def test_activation_words_hold_each_lane_at_its_bits(lanes, act_bits):
    rng = np.random.default_rng(lanes * act_bits)
    lim = 1 << (act_bits - 1)
    x = rng.integers(-lim + 1, lim, size=(3, 4 * lanes))
    words = pack_activations(x, lanes, act_bits)
    assert words.shape == (3 * 4, -(-lanes * act_bits // 32)) and words.dtype == np.uint32
    as_int = [sum(int(w) << (32 * k) for k, w in enumerate(row)) for row in words]
    lanes_back = [[(v >> (i * act_bits)) & ((1 << act_bits) - 1) for i in range(lanes)] for v in as_int]
    back = np.array(lanes_back) - (np.array(lanes_back) >= lim) * (1 << act_bits)
    assert back.reshape(3, -1).tolist() == x.tolist()
    assert all(v >> (lanes * act_bits) == 0 for v in as_int)  # the padding is zero


def test_uartbone_frames_bursts_of_255_words_with_big_endian_addresses():
    bus = UartBone("loop://", timeout=1)
    words = np.arange(300, dtype=np.uint32) * 0x01010101
    bus.write(0x40000010, words)
    raw = bus.port.read(2 * 6 + 4 * 300)
    assert raw[0] == 0x01 and raw[1] == 255
    assert int.from_bytes(raw[2:6], "big") == 0x40000010 // 4
    assert np.frombuffer(raw[6 : 6 + 4 * 255], ">u4").tolist() == words[:255].tolist()
    second = raw[6 + 4 * 255 :]
    assert second[0] == 0x01 and second[1] == 45
    assert int.from_bytes(second[2:6], "big") == (0x40000010 + 4 * 255) // 4
    bus.close()


class _FakeBus:
    """Registers as a dict; what a driver reads and writes, with no SoC."""

    url = "fake://"

    def __init__(self, regs):
        self.regs, self.writes = dict(regs), []

    def read(self, addr, count, step=True):
        return np.array([self.regs.get(addr + 4 * i * step, 0) for i in range(count)], np.uint32)

    def write(self, addr, words):
        self.writes.append((addr, np.asarray(words).tolist()))


def _config(params, size=1 << 20):
    return {"board": "sim-sdr", "engine": dataclasses.asdict(params), "main_ram_size": size}


def test_driver_names_the_register_that_differs_from_the_image():
    built = soc_params(board("sim-sdr"))
    regs = {
        mm.CONTROL + 4 * mm.Ctl.SOC_ID: mm.SOC_ID,
        mm.ENGINE_REGS + 4 * Reg.ID: ENGINE_ID,
        mm.ENGINE_REGS + 4 * Reg.PARAMS: built.params_word(),
        mm.ENGINE_REGS + 4 * Reg.LAYOUT: built.layout_word(),
    }
    SocDriver(_FakeBus(regs), _config(built)).check()
    other = EngineParams(lanes=32, data_width=built.data_width, burst=built.burst)
    with pytest.raises(SocError, match=r"engine PARAMS is .*'lanes': 16.*the image needs .*'lanes': 32"):
        SocDriver(_FakeBus(regs), _config(other)).check()
    with pytest.raises(SocError, match="SOC_ID reads 0x0"):
        SocDriver(_FakeBus({}), _config(built)).check()


def test_an_image_larger_than_the_dram_is_refused_before_anything_is_written():
    bus = _FakeBus({})
    with pytest.raises(SocError, match=r"needs 2,048 bytes of DRAM; the sim-sdr has 1,024"):
        SocDriver(bus, _config(EngineParams(), size=1024)).load(b"\1" * 2048)
    assert bus.writes == []


def test_boards_and_their_engines():
    with pytest.raises(ValueError, match="board must be one of ecpix5, ulx3s, sim-sdr, sim-ddr3, not 'arty'"):
        board("arty")
    for b in BOARDS.values():
        p = soc_params(b)
        assert p.data_width == b.data_width and p.burst * p.data_width // 8 == 256
        assert b.data_width // 8 >= b.peak_bytes_per_cycle  # the DRAM, not the engine's port, limits


def test_soc_verilog_for_a_simulated_board(tmp_path):
    from ptqtp.soc.simulate import SOC_TOP, generate

    config = generate("sim-sdr", tmp_path)
    text = (tmp_path / f"{SOC_TOP}.v").read_text()
    assert f"module {SOC_TOP}" in text
    assert "module ptqtp_engine" not in text and "ptqtp_engine ptqtp_engine(" in text  # an instance
    assert (tmp_path / "ptqtp_engine.v").read_text().count("module ptqtp_engine(") == 1
    csr = json.loads((tmp_path / "csr.json").read_text())["csr_registers"]
    assert {"sdram_dfii_control", "sdram_dfii_pi0_command"} <= set(csr)
    assert config["engine"]["data_width"] == BOARDS["sim-sdr"].data_width
    assert json.loads((tmp_path / "soc.json").read_text()) == config


@pytest.mark.rtl
@pytest.mark.parametrize("name", ["ecpix5", "ulx3s", "sim-ddr3"])
def test_soc_verilog_for_every_board(tmp_path, name):
    from ptqtp.soc.simulate import SOC_TOP, generate

    config = generate(name, tmp_path)
    assert f"module {SOC_TOP}" in (tmp_path / f"{SOC_TOP}.v").read_text()
    assert config["link"] == BOARDS[name].link
    csr = json.loads((tmp_path / "csr.json").read_text())["csr_registers"]
    assert any(k.startswith("ethphy") for k in csr) == (BOARDS[name].link == "etherbone")


# ------------------------------------------------------------------ the whole SoC in Verilator


@pytest.fixture(scope="module")
def soc_sim():
    from ptqtp.runtime.soc import SocBackend

    with SocBackend("sim-sdr") as be:
        yield be


@pytest.mark.rtl
def test_layers_through_litedram_are_bit_exact(soc_sim):
    """A two-plane layer (d not a multiple of G), a three-plane one in two passes, and a batch
    larger than M (two engine batches), one image in the SDRAM model."""
    be = soc_sim
    layers = {1: _layer(200, 300, 1), 2: _layer(96, 256, 2, planes=3), 3: _layer(64, 128, 3)}
    for i, layer in layers.items():
        be.load(i, layer)
    for i, m in ((1, 3), (2, 2), (3, 6)):
        x = _inputs(layers[i], m, seed=i)
        assert np.array_equal(be.run(i, x), layers[i].acc(x)), f"layer {i}"
    counters = be.counters()
    assert counters["ERRORS"] == 0
    assert be.cycles[3] > 0 and len(be.transfer) == 3


@pytest.mark.rtl
def test_a_y_read_past_the_level_is_flagged(soc_sim):
    driver = soc_sim.driver
    assert driver.ctl(mm.Ctl.Y_LEVEL) == 0
    assert int(driver.bus.read(mm.Y_WINDOW, 1)[0]) == 0xFFFFFFFF
    assert driver.ctl(mm.Ctl.STATUS) & 1
    driver.set_ctl(mm.Ctl.STATUS, 1)
    assert driver.ctl(mm.Ctl.STATUS) & 1 == 0


@pytest.mark.rtl
def test_ddr3_model_with_base3_weights_is_bit_exact():
    from ptqtp.runtime.soc import SocBackend

    params = EngineParams(packing="base3")
    with SocBackend("sim-ddr3", params=params) as be:
        assert be.params.data_width == 128 and be.params.packing == "base3"
        layer = _layer(128, 640, 5)
        be.load(0, layer)
        x = _inputs(layer, 4, seed=5)
        assert np.array_equal(be.run(0, x), layer.acc(x))
        weight_bytes, cycles = be.transfer[0]
        assert 0 < weight_bytes / cycles <= BOARDS["sim-ddr3"].peak_bytes_per_cycle


def test_soc_command_misuse_is_one_clear_line(capsys, tmp_path):
    from test_cli_errors import fails

    fails(capsys, ["soc", "sim"], "soc sim needs an artifact")
    fails(capsys, ["soc", "sim", str(tmp_path / "a.safetensors"), "--board", "ulx3s"], "simulated board", "ulx3s")
    fails(capsys, ["soc", "build", "--board", "sim-sdr"], "is simulated", "soc sim")
    fails(capsys, ["soc", "build"], "needs --board")
    fails(capsys, ["soc", "verilog", str(tmp_path), "--board", "ulx3s"], "takes no artifact")
    import torch

    from ptqtp import PTQTPConfig, quantize, save_artifact

    art = save_artifact(
        tmp_path / "a.safetensors",
        {"model.layers.0.mlp.up_proj": quantize(torch.randn(16, 128) * 0.02, config=PTQTPConfig())},
    )
    fails(capsys, ["compare", str(art), "--backends", "golden,board"], "needs url=", "--soc-config")
    fails(
        capsys,
        [
            "compare",
            str(art),
            "--backends",
            "board",
            "--url",
            "udp://127.0.0.1",
            "--soc-config",
            str(tmp_path / "none.json"),
        ],
        "none.json",
        "soc.json",
    )


@pytest.mark.model
@pytest.mark.rtl
def test_smollm2_block0_through_litedram_is_bit_exact(tmp_path):
    """SmolLM2-135M's block 0 (the shipped GGUF, PTQTP-quantized): its seven linears in the
    SDR model's DRAM, run through the real controller, every output equal to the golden model;
    the weight stream sustains most of the SDR peak (87% measured; 70% is the floor here)."""
    from ptqtp import quantize, save_artifact
    from ptqtp.formats.gguf_source import GGUFSource
    from ptqtp.models.data import _default_gguf
    from ptqtp.workflows.soc import simulate_soc

    src = GGUFSource(_default_gguf())
    kinds = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")  # fmt: skip
    names = [f"model.layers.0.{k}" for k in kinds]
    art = save_artifact(tmp_path / "b0.safetensors", {n: quantize(src.read(f"{n}.weight")) for n in names})
    rep = simulate_soc(art, "sim-sdr")
    assert [r["layer"] for r in rep["runs"]] == names
    assert rep["bit_exact"] and all(r["bit_exact"] for r in rep["runs"])
    assert 0.7 < rep["total"]["of_peak"] <= 1.0


def test_spec_memory_map_is_the_module():
    from pathlib import Path

    spec = (Path(__file__).resolve().parents[1] / "docs" / "SPEC.md").read_text()
    assert mm.memory_map_table() in spec, "docs/SPEC.md section 10 differs from ptqtp.soc.memory_map"
    for c in mm.Ctl:
        assert f"| {int(c)} | {c.name} |" in spec, c.name


class _LevelingBus(_FakeBus):
    """DRAM behind an ECP5 PHY whose byte lanes read correctly only at some (bitslip, delay)."""

    def __init__(self, csr, good):
        super().__init__({})
        self.csr, self.good, self.mem = csr, good, {}
        self.state = {lane: [0, 0] for lane in good}
        self.sel = 0

    def write(self, addr, words):
        names = {v: k for k, v in self.csr.items()}
        for i, w in enumerate(np.asarray(words).tolist()):
            name = names.get(addr + 4 * i)
            lanes = [lane for lane in self.good if self.sel >> lane & 1]
            if name == "ddrphy_dly_sel":
                self.sel = w
            elif name in ("ddrphy_rdly_dq_rst", "ddrphy_rdly_dq_bitslip_rst"):
                for lane in lanes:
                    self.state[lane][0 if name.endswith("bitslip_rst") else 1] = 0
            elif name == "ddrphy_rdly_dq_bitslip":
                for lane in lanes:
                    self.state[lane][0] += 1
            elif name == "ddrphy_rdly_dq_inc":
                for lane in lanes:
                    self.state[lane][1] += 1
            elif name is None:
                self.mem[addr + 4 * i] = w

    def read(self, addr, count, step=True):
        out = []
        for i in range(count):
            w = self.mem.get(addr + 4 * i, 0)
            for lane, ok in self.good.items():
                if tuple(self.state[lane]) not in ok:
                    w ^= 0x5A << (8 * lane)  # a wrong byte in that lane
            out.append(w)
        return np.array(out, np.uint32)


def test_read_leveling_centres_each_lane_in_its_clean_window():
    names = ["dly_sel", "rdly_dq_rst", "rdly_dq_inc", "rdly_dq_bitslip_rst", "rdly_dq_bitslip"]
    csr = {f"ddrphy_{n}": 0xF000 + 4 * i for i, n in enumerate(names)}
    good = {0: {(1, d) for d in range(2, 7)} | {(2, 0)}, 1: {(3, d) for d in range(0, 3)}}
    bus = _LevelingBus(csr, good)
    driver = SocDriver(bus, {**_config(EngineParams()), "csr": csr})
    assert driver.level_reads() == {0: (1, 4), 1: (3, 1)}
    assert bus.state == {0: [1, 4], 1: [3, 1]}  # and left there
    with pytest.raises(SocError, match="byte lane 1"):
        SocDriver(_LevelingBus(csr, {0: good[0], 1: set()}), {**_config(EngineParams()), "csr": csr}).level_reads()


@pytest.mark.rtl
def test_backdoor_preload_is_where_the_bus_reads_it():
    """The sim-only backdoor lays an image into the SDRAM model's banks as LiteDRAM's model does;
    the bus reads it back word for word (check_loaded) and the engine bit-exact, with no byte
    written over the bridge."""
    from ptqtp.runtime.soc import SocBackend

    with SocBackend("sim-sdr", backdoor=True) as be:
        layers = {0: _layer(160, 384, 7), 1: _layer(64, 256, 8, planes=1)}
        for i, layer in layers.items():
            be.load(i, layer)
        for i, layer in layers.items():
            x = _inputs(layer, 2, seed=i)
            assert np.array_equal(be.run(i, x), layer.acc(x))
        blob = be.driver.bus.read(mm.MAIN_RAM, 16)
        assert blob.any()  # the image is there, and nobody wrote it
    with pytest.raises(ValueError, match="preloads a simulated board"):
        SocBackend("ecpix5", url="udp://127.0.0.1", config={"board": "ecpix5", "engine": {}}, backdoor=True)


def test_bitstream_failures_name_the_resource_and_the_clock():
    from ptqtp.soc.bitstream import _reason, summarise_report

    log = (
        "Info: Device utilisation:\nInfo: \t          TRELLIS_COMB: 90211/83640   107%\nInfo: \t            DP16KD:    "
        "15/  208     7%\nERROR: Unable to place cell 'x', no BELs remaining to implement cell type 'TRELLIS_COMB'\n"
    )
    assert _reason(log) == "the design does not fit: no TRELLIS_COMB left (TRELLIS_COMB 90211/83640)"
    assert _reason("Info: fine\nERROR: Failed to route arc 3 of net 'n'.\nInfo: end") == (
        "ERROR: Failed to route arc 3 of net 'n'."
    )
    report = {
        "utilization": {"TRELLIS_COMB": {"used": 17860, "available": 83640}, "DQSBUFM": {"used": 0, "available": 14}},
        "fmax": {"sys": {"achieved": 74.76, "constraint": 75.0}, "init": {"achieved": 343.8, "constraint": 25.0}},
    }
    got = summarise_report(report, 75e6)
    assert got["resources"] == {"TRELLIS_COMB": [17860, 83640]}  # unused cells are left out
    assert got["clocks"]["sys"]["met"] is False and got["clocks"]["init"]["met"] is True


def test_yosys_script_falls_back_to_classic_lut_mapping():
    from ptqtp.soc.bitstream import _with_classic_mapping

    ys = "read_verilog a.v\nsynth_ecp5  -top ptqtp_ecpix5\nwrite_json  ptqtp_ecpix5.json\n"
    got = _with_classic_mapping(ys).splitlines()
    assert got[0] == "read_verilog a.v" and got[2] == "write_json  ptqtp_ecpix5.json"
    assert got[1].startswith("synth_ecp5 -top ptqtp_ecpix5 -run begin:map_luts;") and "abc -lut 4:7" in got[1]
    assert got[1].endswith("synth_ecp5 -top ptqtp_ecpix5 -run map_cells:")
