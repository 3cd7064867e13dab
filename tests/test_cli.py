import torch
from safetensors.torch import save_file

from ptqtp import load_artifact, quantize
from ptqtp.tools.cli import build_parser, main


def checkpoint(tmp_path, bad=False):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "model.embed_tokens.weight": torch.randn(32, 64, generator=g),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(64, 64, generator=g) * 0.02,
        "model.layers.0.self_attn.q_proj.bias": torch.randn(64, generator=g),
        "model.layers.0.mlp.up_proj.weight": torch.randn(96, 64, generator=g) * 0.02,
        "model.layers.0.input_layernorm.weight": torch.ones(64),
    }
    if bad:
        tensors["model.layers.0.mlp.up_proj.weight"][3, 3] = float("nan")
    path = tmp_path / "ckpt.safetensors"
    save_file(tensors, str(path))
    return path, tensors


def test_quantize_command(tmp_path, capsys):
    path, tensors = checkpoint(tmp_path)
    out = tmp_path / "art.safetensors"
    assert main(["quantize", str(path), "-o", str(out), "--group-size", "32"]) == 0
    art = load_artifact(out)
    assert set(art.layers) == {"model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj"}
    for key in (
        "model.embed_tokens.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.self_attn.q_proj.bias",
    ):
        assert torch.equal(art.tensors[key], tensors[key])
    from ptqtp import PTQTPConfig

    expect = quantize(tensors["model.layers.0.mlp.up_proj.weight"], config=PTQTPConfig(group_size=32))
    assert torch.equal(art.layers["model.layers.0.mlp.up_proj"].trits(), expect.codes)
    assert main(["inspect", str(out)]) == 0
    assert "model.layers.0.mlp.up_proj | 96x64 | 32 | ptqtp" in capsys.readouterr().out


def test_quantize_nan_fails_cleanly(tmp_path, capsys):
    path, _ = checkpoint(tmp_path, bad=True)
    out = tmp_path / "art.safetensors"
    assert main(["quantize", str(path), "-o", str(out)]) == 2
    assert "model.layers.0.mlp.up_proj: weight has 1 NaN/Inf" in capsys.readouterr().err
    assert not out.exists()  # only the resumable parts folder is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art.safetensors.parts", "ckpt.safetensors"]


def test_inspect_rejects_garbage(tmp_path, capsys):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    assert main(["inspect", str(bad)]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err


def test_demo_writes_report(tmp_path, capsys):
    assert main(["demo", "--sample", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| ptqtp |" in out and "| rtn3 |" in out
    assert (tmp_path / "report.md").read_text() in out
    art = load_artifact(tmp_path / "artifact.safetensors")
    assert art.layers["sample"].info["method"] == "ptqtp"


def test_every_option_has_help():
    parser = build_parser()
    for action in parser._subparsers._group_actions[0].choices.values():
        for opt in action._actions:
            assert opt.help, f"{action.prog} {opt.dest} has no help"
