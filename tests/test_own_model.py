"""A user's own model folder and text from the command line: calibrated quantization with
--calib-file, evaluation and hardware in the loop with --text-file and its tokenizer."""

import json

import pytest
import torch
import transformers as tf

from ptqtp.tools.cli import main


def write_model_folder(root):
    """A small random Llama with the shipped tokenizer in ``root/model``, a calibration JSONL
    and an evaluation text beside it (other tests reuse it)."""
    from ptqtp.models.data import default_tokenizer

    torch.manual_seed(0)
    config = tf.LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    tf.LlamaForCausalLM(config).eval().save_pretrained(root / "model")
    default_tokenizer().save_pretrained(root / "model")
    from pydoc_data.topics import topics

    words = " ".join(topics[k] for k in sorted(topics)[:40])
    (root / "calib.jsonl").write_text(
        "\n".join(json.dumps({"id": i, "text": words[i * 3000 : (i + 1) * 3000]}) for i in range(6)) + "\n"
    )
    (root / "eval.txt").write_text(" ".join(topics[k] for k in sorted(topics)[40:60]))
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_model_folder(tmp_path_factory.mktemp("own"))


def test_calibrated_quantization_of_a_model_folder_with_a_calib_file(folder, capsys):
    out = folder / "q.safetensors"
    assert (
        main(
            [
                "quantize",
                str(folder / "model"),
                "-o",
                str(out),
                "--method",
                "ptqtp-gptq",
                "--calib-file",
                str(folder / "calib.jsonl"),
                "--calib-segments",
                "2",
                "--calib-length",
                "64",
                "--group-size",
                "32",
            ]
        )
        == 0
    )
    from ptqtp import load_artifact

    art = load_artifact(out)
    assert len(art.layers) == 14 and json.loads(art.metadata["ptqtp.calibration"])["text"] == "calib.jsonl"
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                "--artifact",
                str(out),
                "--tokenizer",
                str(folder / "model"),
                "--text-file",
                str(folder / "eval.txt"),
                "--tokens",
                "128",
                "--context",
                "64",
            ]
        )
        == 0
    )
    assert "eval.txt perplexity" in capsys.readouterr().out
    assert (
        main(
            [
                "hil",
                str(out),
                "--tokenizer",
                str(folder / "model"),
                "--text-file",
                str(folder / "eval.txt"),
                "--layers",
                r"layers\.0\.",
                "--backend",
                "golden",
                "--tokens",
                "128",
                "--context",
                "64",
            ]
        )
        == 0
    )
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


def test_quantized_folder_is_a_transformers_folder(folder, tmp_path, capsys):
    """-o DIR writes config.json (quantization_config), the artifact as model.safetensors and
    the tokenizer; after `import ptqtp`, from_pretrained gives TritPlaneLinear layers with the
    artifact's weights (logits equal load_quantized's), save_pretrained writes a valid artifact
    that loads again; without `import ptqtp` transformers refuses the folder."""
    import subprocess
    import sys

    import ptqtp  # noqa: F401 - registers the quantizer
    from ptqtp import load_artifact
    from ptqtp.kernels import TritPlaneLinear
    from ptqtp.models.hf import load_quantized

    q = tmp_path / "q"
    assert main(["quantize", str(folder / "model"), "-o", str(q), "--group-size", "32"]) == 0
    config = json.loads((q / "config.json").read_text())
    qc = config["quantization_config"]
    assert qc["quant_method"] == "ptqtp" and qc["method"] == "ptqtp" and qc["group_size"] == 32
    assert qc["planes"] == 2 and qc["packing"] == "2bit" and qc["format_version"] == "1" and len(qc["layers"]) == 14
    assert (q / "tokenizer.json").is_file() and len(load_artifact(q).layers) == 14
    ids = torch.randint(0, 49152, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = load_quantized(q)(ids).logits
        model = tf.AutoModelForCausalLM.from_pretrained(q)
        assert isinstance(model.model.layers[1].mlp.down_proj, TritPlaneLinear)
        assert torch.equal(model(ids).logits, want)
        model.save_pretrained(tmp_path / "again")
        art = load_artifact(tmp_path / "again")  # hashes and records written by save_pretrained
        assert set(art.layers) == set(load_artifact(q).layers)
        assert torch.equal(tf.AutoModelForCausalLM.from_pretrained(tmp_path / "again")(ids).logits, want)
        assert torch.equal(load_quantized(tmp_path / "again")(ids).logits, want)
    code = (
        "import sys, transformers as tf\n{pre}\n"
        "try:\n    m = tf.AutoModelForCausalLM.from_pretrained(sys.argv[1])\n    print('LOADED', type(m.model.layers[0]"
        ".self_attn.q_proj).__name__)\nexcept Exception as e:\n    print('REFUSED', type(e).__name__, e)\n"
    )
    # cwd away from the repository root: there, its kernels/ folder shadows the PyPI `kernels` package
    # that transformers probes (and importing it imports ptqtp)
    runs = {
        pre: subprocess.run(
            [sys.executable, "-c", code.format(pre=pre), str(q)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
        ).stdout
        for pre in ("", "import ptqtp")
    }
    assert "REFUSED RuntimeError" in runs[""] and "mismatch" in runs[""], runs[""]  # never random weights
    assert "LOADED FolderTritPlaneLinear" in runs["import ptqtp"], runs["import ptqtp"]


def test_base3_folder_loads_and_computes_what_2bit_does(folder, tmp_path):
    """--packing base3: 5 trits a byte in model.safetensors (smaller), from_pretrained builds
    base-3 TritPlaneLinear modules, and the logits equal the 2-bit folder's bit for bit."""
    import ptqtp  # noqa: F401 - registers the quantizer
    from ptqtp import load_artifact

    two, three = tmp_path / "two", tmp_path / "three"
    assert main(["quantize", str(folder / "model"), "-o", str(two), "--group-size", "32"]) == 0
    assert main(["quantize", str(folder / "model"), "-o", str(three), "--group-size", "32", "--packing", "base3"]) == 0
    qc = json.loads((three / "config.json").read_text())["quantization_config"]
    assert qc["packing"] == "base3" and all(r["packing"] == "base3" for r in qc["layers"])
    a2, a3 = load_artifact(two), load_artifact(three)
    for name, layer in a3.layers.items():
        assert torch.equal(layer.trits(), a2.layers[name].trits())
    codes = lambda a: sum(l.codes.numel() for l in a.layers.values())  # noqa: E731
    assert codes(a3) / codes(a2) <= 0.82
    ids = torch.randint(0, 49152, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        m3 = tf.AutoModelForCausalLM.from_pretrained(three)
        assert m3.model.layers[0].mlp.up_proj.packing == "base3"
        assert torch.equal(m3(ids).logits, tf.AutoModelForCausalLM.from_pretrained(two)(ids).logits)


@pytest.mark.parametrize(
    "first",
    [
        "import ptqtp.models.transformers_quantizer",
        "import ptqtp; import transformers",
        "import transformers; import ptqtp",
        "from ptqtp.models.hf import write_model_folder",
    ],
)
def test_registration_in_any_import_order(first, tmp_path):
    import subprocess
    import sys

    code = (
        f"{first}\nfrom transformers.quantizers.auto import AUTO_QUANTIZER_MAPPING, AUTO_QUANTIZATION_CONFIG_MAPPING\n"
        "print('OK', 'ptqtp' in AUTO_QUANTIZER_MAPPING and 'ptqtp' in AUTO_QUANTIZATION_CONFIG_MAPPING)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert "OK True" in proc.stdout, proc.stderr[-2000:]
