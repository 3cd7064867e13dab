"""Calibration without data: the float model's own samples (``self_generated_ids``)."""

import json
import math

import pytest
import torch
import transformers as tf
from test_model import SMALL

from ptqtp.models.data import SELF_CALIB_TEXT, self_generated_ids


class _Tok:
    bos_token_id = 1
    eos_token_id = 2


def llama(seed=0):
    torch.manual_seed(seed)
    return tf.LlamaForCausalLM(tf.LlamaConfig(**SMALL)).eval()


def test_samples_are_the_models_own_draws():
    """Replaying the seeded draws on full forwards (no KV cache) gives the same tokens: each
    token is a draw from the model's distribution given the tokens before it."""
    model = llama()
    ids = self_generated_ids(model, _Tok(), segments=3, length=12, seed=5)
    assert ids.shape == (3, 12) and (ids[:, 0] == _Tok.bos_token_id).all()
    assert ids.min() >= 0 and ids.max() < SMALL["vocab_size"]
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        logits = model(ids).logits.double()
    for t in range(11):
        again = torch.multinomial(torch.softmax(logits[:, t], -1), 1, generator=g)[:, 0]
        assert torch.equal(again, ids[:, t + 1]), t
    assert torch.equal(ids, self_generated_ids(model, _Tok(), 3, 12, seed=5))
    assert not torch.equal(ids, self_generated_ids(model, _Tok(), 3, 12, seed=6))


def test_bad_sizes_and_a_tokenizer_without_bos_are_refused():
    model = llama()
    with pytest.raises(ValueError, match="segments >= 1 and length >= 2"):
        self_generated_ids(model, _Tok(), 0, 8)

    class NoBos:
        bos_token_id = eos_token_id = None

    with pytest.raises(ValueError, match="BOS"):
        self_generated_ids(model, NoBos(), 1, 8)


def test_self_calibrated_quantization_records_its_source_and_uses_the_samples():
    """``calibrated_quantize(self_generated=True)`` is ``calibrate_model`` on the samples the
    float model draws, and says so in the artifact's calibration record."""
    from ptqtp.methods import get_method
    from ptqtp.models.calibrate import calibrate_model, calibrated_quantize

    config = get_method("ptqtp-gptq").config(32)
    a, b = llama(), llama()
    ids = self_generated_ids(a, _Tok(), 2, 16)
    report, meta = calibrated_quantize(a, _Tok(), config, segments=2, length=16, self_generated=True, progress=False)
    record = json.loads(meta["ptqtp.calibration"])
    assert record["text"] == SELF_CALIB_TEXT and (record["segments"], record["length"]) == (2, 16)
    direct = calibrate_model(b, ids, config, progress=False)
    for name, r in report.layers.items():
        assert torch.equal(r.codes, direct.layers[name].codes), name
    with pytest.raises(ValueError, match="not both"):
        calibrated_quantize(llama(), _Tok(), config, 2, 16, text="x" * 100, self_generated=True, progress=False)


@pytest.mark.model  # the shipped tokenizer
def test_cli_calibrates_on_its_own_samples(tmp_path, capsys):
    from ptqtp import load_artifact
    from ptqtp.models.data import default_tokenizer
    from ptqtp.tools.cli import main

    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(tf.LlamaConfig(**(SMALL | {"vocab_size": 49152}))).eval()
    model.save_pretrained(tmp_path / "hf")
    default_tokenizer().save_pretrained(tmp_path / "hf")
    out = tmp_path / "self.safetensors"
    argv = ["quantize", str(tmp_path / "hf"), "-o", str(out), "--group-size", "32"]
    own = ["--calib-self", "--calib-segments", "2", "--calib-length", "16"]
    assert main(argv + ["--method", "ptqtp-gptq", "--bits-per-weight", "4", "--packing", "base3", *own]) == 0
    meta = load_artifact(out).metadata
    for entry in (json.loads(meta["ptqtp.calibration"]), json.loads(meta["ptqtp.allocation"])["calibration"]):
        assert entry["text"] == SELF_CALIB_TEXT and (entry["segments"], entry["length"]) == (2, 16)
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0  # says how the artifact was made
    said = capsys.readouterr().out
    alloc = json.loads(meta["ptqtp.allocation"])
    counts = {k: list(alloc["planes"].values()).count(k) for k in sorted(set(alloc["planes"].values()))}
    assert f"calibration: {SELF_CALIB_TEXT} (2 x 16 tokens, seed 0)" in said
    assert "layers per " + ", ".join(f"K={k}: {n}" for k, n in counts.items()) in said and "rotation" not in said
    assert main(argv + ["--method", "ptqtp-gptq", "--calib-file", str(tmp_path / "x.txt"), *own]) != 0
    assert "--calib-file or --calib-self, not both" in capsys.readouterr().err
    assert main(argv + ["--method", "ptqtp", *own]) != 0
    assert "ptqtp with neither reads no calibration text" in capsys.readouterr().err


@pytest.mark.model  # the shipped tokenizer
def test_eval_draws_the_samples_once_and_calibrates_every_row_on_them(monkeypatch):
    """``compare_methods(self_calibrate=True)``: one draw, from the model before any method
    runs, handed to each calibrated method and to the sensitivity (budget rows)."""
    import ptqtp.models.allocate as al
    import ptqtp.models.evaluate as ev
    from ptqtp.models.data import default_tokenizer

    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(tf.LlamaConfig(**(SMALL | {"vocab_size": 49152}))).eval()
    draws, fits, measured = [], [], []
    real_draw, real_fit, real_measure = ev.self_generated_ids, ev.calibrated_quantize, al.Sensitivity.measure

    def draw(m, tok):
        draws.append(m)
        return real_draw(m, tok, 2, 16)

    def fit(*a, **kw):
        fits.append(kw["self_generated"])
        return real_fit(*a, **kw)

    def measure(*a, **kw):
        measured.append((kw["ids"], kw["source"]))
        return real_measure(*a, **kw)

    monkeypatch.setattr(ev, "self_generated_ids", draw)
    monkeypatch.setattr(ev, "calibrated_quantize", fit)
    monkeypatch.setattr(al.Sensitivity, "measure", measure)
    rows = ev.compare_methods(
        model,
        default_tokenizer(),
        "The quick brown fox jumps over the lazy dog. " * 40,
        ("ptqtp-gptq",),
        ev.PTQTPConfig(group_size=32),
        context=64,
        max_tokens=128,
        progress=False,
        mixed={"bits_per_weight": [4.0], "packing": "base3"},
        self_calibrate=True,
    )
    assert len(draws) == 1 and draws[0] is not model  # the (rotated) copy, before any layer changed
    assert len(fits) == 1 and fits[0].shape == (2, 16)
    assert measured[0][0] is fits[0] and measured[0][1] == SELF_CALIB_TEXT
    assert rows[0]["method"] == "ptqtp-gptq@4" and math.isfinite(rows[0]["perplexity"])
