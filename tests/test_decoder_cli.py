"""``ptqtp generate``, ``plan``'s whole tokens and ``eval --decoder`` on a small Llama folder."""

import json

import pytest
import torch
from test_own_model import write_model_folder

from ptqtp.golden_decoder import DecoderArch, DecoderFormat
from ptqtp.tools.cli import main
from ptqtp.workflows.plan import KV_SCALE_BYTES, DecoderUnit, LayerShape, load_boards, plan, whole_token_plan


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    root = write_model_folder(tmp_path_factory.mktemp("dec"))
    out = root / "q.safetensors"
    assert main(["quantize", str(root / "model"), "-o", str(out), "--group-size", "32"]) == 0
    return root, out


def test_generate_golden_int_against_torch(quantized, tmp_path, capsys):
    root, art = quantized
    rec = tmp_path / "g.json"
    args = ["generate", str(art), "--tokenizer", str(root / "model"), "--max-new-tokens", "6", "--compare-torch"]
    assert main(args + ["--top-k", "3", "--board", "ulx3s-85f", "--json", str(rec)]) == 0
    out = capsys.readouterr().out
    r = json.loads(rec.read_text())
    g, t = r["runs"]["golden-int"], r["runs"]["torch"]
    assert len(g["ids"]) == 6 and len(g["top_k"]) == 6
    assert all(step[0][0] == i for step, i in zip(g["top_k"], g["ids"]))  # greedy = top-1
    assert all(a[1] >= b[1] for step in g["top_k"] for a, b in zip(step, step[1:]))
    assert r["agree_prefix"] == next((i for i, (a, b) in enumerate(zip(g["ids"], t["ids"])) if a != b), 6)
    assert "[golden-int]" in out and "planned per token at context" in out and "ulx3s-85f" in out
    assert r["plan"]["context"] == r["prompt_tokens"] + 6


@pytest.mark.rtl
def test_generate_on_the_rtl_is_golden_bit_for_bit(quantized, tmp_path, capsys):
    """generate --backend rtl: every step (the prompt's too) on the token core in Verilator and
    on golden-int, equal; the text equals golden-int's own greedy generation. The core's
    engine reads base-3 weights here (test_token_core covers 2-bit)."""
    root, art = quantized
    base = ["generate", str(art), "--tokenizer", str(root / "model"), "--max-new-tokens", "3", "--capacity", "16"]
    assert main(base + ["--backend", "rtl", "--packing", "base3", "--json", str(tmp_path / "r.json")]) == 0
    assert main(base + ["--json", str(tmp_path / "g.json")]) == 0
    out = capsys.readouterr().out
    r = json.loads((tmp_path / "r.json").read_text())
    g = json.loads((tmp_path / "g.json").read_text())
    rtl = r["runs"]["rtl"]
    assert rtl["bit_exact"] and len(rtl["steps"]) == r["prompt_tokens"] + 2
    assert rtl["ids"] == g["runs"]["golden-int"]["ids"]
    assert all(s["rtl"] == s["golden"] and s["cycles"] > 0 for s in rtl["steps"])
    assert "equal golden-int's: True" in out and "the token core as built" in out


def test_generate_refuses_a_context_beyond_the_cache(quantized, capsys):
    root, art = quantized
    args = ["generate", str(art), "--tokenizer", str(root / "model"), "--max-new-tokens", "40", "--capacity", "16"]
    assert main(args) == 2
    assert "exceeds the KV cache's capacity of 16 tokens" in capsys.readouterr().err


def test_eval_decoder_golden_int(quantized, tmp_path, capsys):
    root, art = quantized
    rec = tmp_path / "e.json"
    args = ["eval", "--artifact", str(art), "--tokenizer", str(root / "model"), "--decoder", "golden-int"]
    assert (
        main(args + ["--text-file", str(root / "eval.txt"), "--tokens", "96", "--context", "48", "--json", str(rec)])
        == 0
    )
    rows = json.loads(rec.read_text())
    assert len(rows) == 2 and "golden-int" in rows[1]["method"]
    assert rows[1]["vs_float"] == pytest.approx(rows[1]["perplexity"] / rows[0]["perplexity"])
    assert abs(rows[1]["vs_float"] - 1) < 0.05  # a random model's logits are near uniform
    assert "golden-int / float model with the same planes" in capsys.readouterr().out


def test_whole_token_plan_counts_every_byte():
    arch = DecoderArch(576, 30, 9, 3, 64, 1536, 49152, 1e5, 1e-5)
    layers = [LayerShape("q_proj", 576, 640)]
    board = load_boards()["arty-a7-100t"]
    from ptqtp.hdl.engine_model import EngineParams

    params = EngineParams()
    p = {c: whole_token_plan(layers, params, board, arch, DecoderFormat(), c, DecoderUnit()) for c in (128, 512)}
    parts = p[512]["parts"]
    assert parts["linears"]["bytes"] == plan(layers, params, board)["bytes_per_token"]
    assert parts["lm_head"]["bytes"] == 49152 * (576 + 2)  # int8 entries, a 16-bit scale per row
    kv = lambda c: 30 * 3 * 2 * (c + 1) * (64 + KV_SCALE_BYTES)  # noqa: E731
    assert parts["KV cache"]["bytes"] == kv(512) and p[128]["parts"]["KV cache"]["bytes"] == kv(128)
    assert p[512]["token_bytes"] == sum(v["bytes"] for v in parts.values())
    assert p[512]["token_cycles"] >= p[512]["token_bytes"] / min(board.bytes_per_cycle, 64)
    assert p[128]["token_tokens_per_s"] > p[512]["token_tokens_per_s"]
    grouped = whole_token_plan(layers, params, board, arch, DecoderFormat(lm_bits=4, lm_group=64), 512)
    assert grouped["parts"]["lm_head"]["bytes"] == 49152 * (288 + 2 * 9)


def test_plan_prints_whole_tokens_and_names_unsupported_models(quantized, tmp_path, capsys):
    root, art = quantized
    rec = tmp_path / "p.json"
    assert main(["plan", str(art), "--board", "arty-a7-100t", "--context", "64", "256", "--json", str(rec)]) == 0
    out = capsys.readouterr().out
    assert "tok/s @ 64" in out and "tok/s @ 256" in out and "ztachip" in out and "KV cache" in out
    whole = json.loads(rec.read_text())[0]["whole_token"]
    assert set(whole) == {"64", "256"} and whole["256"]["token_bytes"] > whole["64"]["token_bytes"]
    import transformers as tf

    from ptqtp import PTQTPConfig
    from ptqtp.models.hf import quantize_model, save_quantized

    torch.manual_seed(0)
    gpt2 = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=64, n_embd=64, n_layer=1, n_head=2, n_positions=32)).eval()
    cfg = PTQTPConfig(group_size=32)
    path = save_quantized(gpt2, tmp_path / "g.safetensors", quantize_model(gpt2, config=cfg, progress=False), cfg)
    assert main(["plan", str(path), "--board", "arty-a7-100t"]) == 0
    assert "whole token: not planned (the integer decoder supports" in capsys.readouterr().out
