"""``ptqtp plan``: tokens/s from the engine's cycle model, against hand-derived figures."""

import json

import pytest
import torch

from ptqtp import PTQTPConfig, quantize, save_artifact
from ptqtp.hdl.engine_model import EngineParams
from ptqtp.workflows.plan import Board, LayerShape, load_boards, plan


def test_one_layer_by_hand():
    """n = 8, d = 256 on P = 16, R = 4, two planes, DW = 128: blocks 2, groups 2 per row;
    scale record 2 x 4 x 16 = 128 bits = 1 word, weight section 8 chunks x 256 bits = 16
    words; so 2 x 2 x 17 words x 16 bytes = 1088 bytes and 2 x 2 x 8 = 32 compute cycles."""
    params = EngineParams(lanes=16, rows=4, data_width=128, vectors=4)
    board = Board("b", "one byte a cycle", bandwidth_gbs=0.1, fmax_mhz=100)  # 1e8 B/s at 1e8 Hz
    p = plan([LayerShape("model.layers.0.mlp.up_proj", 8, 256)], params, board)
    assert p["bytes_per_token"] == 1088
    assert p["decode_tokens_per_s"] == pytest.approx(1e8 / 1088)
    assert p["prefill_tokens_per_s"] == pytest.approx(4 * 1e8 / 1088)  # 4 x 32 = 128 < 1088: still memory-bound
    assert p["compute_bound_tokens_per_s"] == pytest.approx(1e8 / 32)
    assert p["kinds"]["up_proj"]["bound"] == "bandwidth" and p["bandwidth_used"] == pytest.approx(1.0)
    # with unlimited memory the DMA still gives one 16-byte word a cycle: 1088 / 16 = 68 > 32 cycles
    bus = plan([LayerShape("x", 8, 256)], params, Board("f", "fast", 1e3, 100))
    assert bus["decode_tokens_per_s"] == pytest.approx(1e8 / 68) and bus["kinds"]["x"]["bound"] == "bus (DW)"
    # DW = 512: per group 1 scale word + 8 x 256 / 512 = 4 weight words = 5 words < 8 compute cycles
    wide = plan([LayerShape("x", 8, 256)], EngineParams(lanes=16, rows=4, data_width=512), Board("f", "fast", 1e3, 100))
    assert wide["decode_tokens_per_s"] == pytest.approx(1e8 / 32) and wide["kinds"]["x"]["bound"] == "compute"


def test_one_layer_base3_by_hand():
    """The same layer with base-3 weights: 4 steps make one frame of k = 4: a scale section of
    4 x 128 bits = 4 words, then 4 x 2 x 4 x 128 = 4096 trits = 820 bytes = 52 words; 56 words
    = 896 bytes against the 2-bit 1088."""
    params = EngineParams(lanes=16, rows=4, data_width=128, vectors=4, packing="base3")
    p = plan([LayerShape("x", 8, 256)], params, Board("b", "one byte a cycle", bandwidth_gbs=0.1, fmax_mhz=100))
    assert p["bytes_per_token"] == 896 and p["engine"]["packing"] == "base3"
    assert p["decode_tokens_per_s"] == pytest.approx(1e8 / 896)
    bus = plan([LayerShape("x", 8, 256)], params, Board("f", "fast", 1e3, 100))  # 56 words at one a cycle
    assert bus["decode_tokens_per_s"] == pytest.approx(1e8 / 56)


def test_boards_file_carries_sources():
    boards = load_boards()
    assert {"ulx3s-85f", "ecp5-ddr3-85f", "arty-a7-100t", "kria-kv260", "alveo-u50"} <= set(boards)
    assert all(b.source and b.bandwidth_gbs > 0 and b.fmax_mhz > 0 for b in boards.values())
    assert all(b.family and b.luts and b.ffs and b.bram_blocks and b.dsps for b in boards.values())


def test_cli_plan(tmp_path, capsys):
    from ptqtp.tools.cli import main

    g = torch.Generator().manual_seed(0)
    layers = {
        f"model.layers.{i}.self_attn.q_proj": quantize(torch.randn(16, 256, generator=g) * 0.02) for i in range(2)
    }
    art = save_artifact(tmp_path / "a.safetensors", layers, config=PTQTPConfig())
    assert (
        main(
            [
                "plan",
                str(art),
                "--bandwidth",
                "0.1",
                "--fmax",
                "100",
                "--data-width",
                "128",
                "--json",
                str(tmp_path / "p.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "custom" in out and "q_proj" in out and "base3" in out
    p, p3 = json.loads((tmp_path / "p.json").read_text())
    assert p["layers"] == 2 and p["bytes_per_token"] == 2 * (
        4 * 2 * 17 * 16
    )  # 2 layers x 4 blocks x 2 groups x 17 words
    # base-3: 8 steps a layer = frames of 5 (5 + 64 words) and 3 (3 + ceil(614.4 bytes / 16) = 3 + 39 words)
    assert (p["engine"]["packing"], p3["engine"]["packing"]) == ("2bit", "base3")
    assert p3["bytes_per_token"] == 2 * (69 + 42) * 16
    assert (
        main(
            [
                "plan",
                str(art),
                "--bandwidth",
                "0.1",
                "--fmax",
                "100",
                "--packing",
                "base3",
                "--json",
                str(tmp_path / "p.json"),
            ]
        )
        == 0
    )
    assert [q["engine"]["packing"] for q in json.loads((tmp_path / "p.json").read_text())] == ["base3"]
    assert main(["plan", str(art), "--board", "nope"]) == 2
    assert "unknown boards" in capsys.readouterr().err
