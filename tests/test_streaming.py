import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from ptqtp import ArtifactError, PTQTPConfig, load_artifact, quantize
from ptqtp.formats.checkpoint import checkpoint_files, stream_quantize

CFG = PTQTPConfig(group_size=32)


def tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "model.embed_tokens.weight": torch.randn(50, 64, generator=g),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(64, 64, generator=g) * 0.02,
        "model.layers.0.self_attn.q_proj.bias": torch.randn(64, generator=g),
        "model.layers.0.mlp.up_proj.weight": torch.randn(96, 64, generator=g) * 0.02,
        "model.layers.1.mlp.down_proj.weight": torch.randn(64, 96, generator=g) * 0.02,
        "model.norm.weight": torch.ones(64),
    }


def sharded(tmp_path, ts):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    names = sorted(ts)
    shards = {"model-00001-of-00002.safetensors": names[:3], "model-00002-of-00002.safetensors": names[3:]}
    weight_map = {}
    for fname, keys in shards.items():
        save_file({k: ts[k] for k in keys}, str(folder / fname))
        weight_map.update({k: fname for k in keys})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def test_streaming_equals_in_memory(tmp_path):
    ts = tensors()
    out = stream_quantize(sharded(tmp_path, ts), tmp_path / "a.safetensors", config=CFG, progress=False)
    art = load_artifact(out)
    quantized = [k for k in ts if ".layers." in k and k.endswith(".weight")]
    assert set(art.layers) == {k.removesuffix(".weight") for k in quantized}
    for k in quantized:
        r = quantize(ts[k], config=CFG)
        layer = art.layers[k.removesuffix(".weight")]
        assert torch.equal(layer.trits(), r.codes) and torch.equal(layer.scales, r.scales.half())
        assert layer.info["iterations"] == r.iterations
    for k in set(ts) - set(quantized):
        assert torch.equal(art.tensors[k], ts[k])
    assert not (tmp_path / "a.safetensors.parts").exists()


def test_resume_skips_finished_parts_and_refuses_other_runs(tmp_path):
    ts = tensors()
    ts["model.layers.1.mlp.down_proj.weight"][0, 0] = float("nan")
    src = sharded(tmp_path, ts)
    out = tmp_path / "a.safetensors"
    with pytest.raises(ValueError, match="model.layers.1.mlp.down_proj: weight has 1 NaN"):
        stream_quantize(src, out, config=CFG, progress=False)
    parts = sorted((tmp_path / "a.safetensors.parts").glob("0*.safetensors"))
    assert not out.exists() and len(parts) >= 1
    stamp = {p.name: p.stat().st_mtime_ns for p in parts}
    with pytest.raises(ArtifactError, match="different run"):
        stream_quantize(src, out, config=PTQTPConfig(group_size=64), progress=False)
    # fix the shard (new mtime/size => a different source) and the old parts are refused too
    fixed = tensors()
    save_file({k: fixed[k] for k in sorted(fixed)[3:]}, str(src / "model-00002-of-00002.safetensors"))
    with pytest.raises(ArtifactError, match="different run"):
        stream_quantize(src, out, config=CFG, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in parts} == stamp  # refused runs touch no part


def test_resume_after_interruption(tmp_path):
    src = sharded(tmp_path, tensors())
    out = tmp_path / "a.safetensors"
    full = stream_quantize(src, tmp_path / "ref.safetensors", config=CFG, progress=False)
    # simulate an interrupted run: a parts folder with the manifest and the first two parts only
    code = ("import sys, ptqtp.formats.checkpoint as s\n"
            "orig = s.atomic_write\n"
            "n = [0]\n"
            "def w(path, fn):\n"
            "    orig(path, fn)\n"
            "    if path.name.endswith('.safetensors') and path.parent.name.endswith('.parts'):\n"
            "        n[0] += 1\n"
            "        if n[0] == 2: sys.exit(3)\n"
            "s.atomic_write = w\n"
            f"s.stream_quantize({str(src)!r}, {str(out)!r}, config=s.PTQTPConfig(group_size=32), progress=False)\n")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 3
    assert len(list((tmp_path / "a.safetensors.parts").glob("0*.safetensors"))) == 2 and not out.exists()
    stream_quantize(src, out, config=CFG, progress=False)
    assert out.read_bytes() == full.read_bytes()


def test_checkpoint_files_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        checkpoint_files(tmp_path / "nope")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "missing.safetensors"}}))
    with pytest.raises(FileNotFoundError, match="shard files missing"):
        checkpoint_files(tmp_path)


MEMORY_CHILD = """
import resource, sys, torch
from safetensors.torch import save_file
from ptqtp.formats.checkpoint import stream_quantize
from ptqtp import PTQTPConfig
folder, n_tensors, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
import pathlib
p = pathlib.Path(folder); p.mkdir()
weight_map = {}
for i in range(n_tensors):  # one shard per tensor, written before measuring
    name = f"model.layers.{i}.mlp.up_proj.weight"
    save_file({name: torch.randn(rows, 4096) * 0.02}, str(p / f"s{i}.safetensors"))
    weight_map[name] = f"s{i}.safetensors"
import json
(p / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
stream_quantize(p, p.parent / "out.safetensors", progress=False)
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_memory_stays_near_one_tensor(tmp_path):
    """8 tensors of 4096 x 4096 float32 (512 MiB of checkpoint): peak RSS grows by less than the model."""
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(tmp_path / "ck"), "8", "4096"],
                         capture_output=True, text=True, check=True).stdout.split()
    base_kib, peak_kib = int(out[-2]), int(out[-1])
    tensor_mib, model_mib = 64, 512
    grew = (peak_kib - base_kib) / 1024
    print(f"peak RSS grew {grew:.0f} MiB for a {model_mib} MiB checkpoint")
    assert grew < 4 * tensor_mib < model_mib
