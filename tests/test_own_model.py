"""A user's own model folder and text from the command line: calibrated quantization with
--calib-file, evaluation and hardware in the loop with --text-file and its tokenizer."""

import json

import pytest
import torch
import transformers as tf

from ptqtp.tools.cli import main


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from ptqtp.models.data import default_tokenizer

    root = tmp_path_factory.mktemp("own")
    torch.manual_seed(0)
    config = tf.LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    tf.LlamaForCausalLM(config).eval().save_pretrained(root / "model")
    default_tokenizer().save_pretrained(root / "model")
    from pydoc_data.topics import topics

    words = " ".join(topics[k] for k in sorted(topics)[:40])
    (root / "calib.jsonl").write_text("\n".join(json.dumps({"id": i, "text": words[i * 3000:(i + 1) * 3000]})
                                                for i in range(6)) + "\n")
    (root / "eval.txt").write_text(" ".join(topics[k] for k in sorted(topics)[40:60]))
    return root


def test_calibrated_quantization_of_a_model_folder_with_a_calib_file(folder, capsys):
    out = folder / "q.safetensors"
    assert main(["quantize", str(folder / "model"), "-o", str(out), "--method", "ptqtp-gptq", "--calib-file",
                 str(folder / "calib.jsonl"), "--calib-segments", "2", "--calib-length", "64",
                 "--group-size", "32"]) == 0
    from ptqtp import load_artifact

    art = load_artifact(out)
    assert len(art.layers) == 14 and json.loads(art.metadata["ptqtp.calibration"])["text"] == "calib.jsonl"
    capsys.readouterr()
    assert main(["eval", "--artifact", str(out), "--tokenizer", str(folder / "model"), "--text-file",
                 str(folder / "eval.txt"), "--tokens", "128", "--context", "64"]) == 0
    assert "eval.txt perplexity" in capsys.readouterr().out
    assert main(["hil", str(out), "--tokenizer", str(folder / "model"), "--text-file", str(folder / "eval.txt"),
                 "--layers", r"layers\.0\.", "--backend", "golden", "--tokens", "128", "--context", "64"]) == 0
    assert "7 layers on golden" in capsys.readouterr().out


def test_without_a_tokenizer_the_error_says_what_to_give(folder, capsys):
    out = folder / "plain.safetensors"
    assert main(["quantize", str(folder / "model"), "-o", str(out), "--group-size", "32"]) == 0
    capsys.readouterr()
    assert main(["eval", "--artifact", str(out), "--text-file", str(folder / "eval.txt")]) == 2
    assert "give --tokenizer DIR" in capsys.readouterr().err
    bad = folder / "bad.jsonl"
    bad.write_text('{"text": "a"}\nnot json\n')
    assert main(["eval", "--artifact", str(out), "--tokenizer", str(folder / "model"), "--text-file", str(bad)]) == 2
    assert "bad.jsonl:2: not JSON" in capsys.readouterr().err
