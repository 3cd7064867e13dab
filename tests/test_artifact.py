import json
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ptqtp import ArtifactError, PTQTPConfig, load_artifact, quantize, save_artifact


@pytest.fixture
def layers():
    g = torch.Generator().manual_seed(0)
    return {
        "model.layers.0.self_attn.q_proj": quantize(torch.randn(16, 200, generator=g) * 0.02),
        "model.layers.0.mlp.down_proj": quantize(torch.randn(8, 256, generator=g) * 0.02, "ternary"),
    }


def write(tmp_path, layers, **kw):
    tensors = {"model.embed_tokens.weight": torch.randn(10, 4), "model.layers.0.self_attn.q_proj.bias": torch.randn(16)}
    return save_artifact(tmp_path / "a.safetensors", layers, tensors, config=PTQTPConfig(), **kw)


def test_round_trip_bit_exact(tmp_path, layers):
    path = write(tmp_path, layers)
    art = load_artifact(path)
    assert set(art.layers) == set(layers)
    for name, r in layers.items():
        got = art.layers[name]
        assert torch.equal(got.trits(), r.codes)
        assert torch.equal(got.scales, r.scales.to(torch.float16))
        assert got.info["method"] == r.method and got.info["iterations"] == r.iterations
        expect = r.codes.double().view(2, r.out_features, -1, 128) * r.scales.half().double().unsqueeze(-1)
        assert torch.equal(got.dequantize(torch.float64), expect.sum(0).view(r.out_features, -1)[:, : r.in_features])
    assert torch.equal(
        art.layers["model.layers.0.self_attn.q_proj"].bias, art.tensors["model.layers.0.self_attn.q_proj.bias"]
    )
    assert art.metadata["ptqtp.format"] == "1"
    assert PTQTPConfig.from_metadata(art.metadata) == PTQTPConfig()
    assert "model.embed_tokens.weight" in art.tensors


def test_no_temp_files_left(tmp_path, layers):
    write(tmp_path, layers)
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]


def test_failed_write_leaves_nothing(tmp_path, layers):
    layers["x"] = quantize(torch.randn(4, 128) * 1e6)  # scales overflow float16
    with pytest.raises(ArtifactError, match="x: scale .* overflows float16"):
        write(tmp_path, layers)
    assert list(tmp_path.iterdir()) == []


def test_tiny_scales_rejected(tmp_path):
    with pytest.raises(ArtifactError, match="underflow"):
        save_artifact(tmp_path / "t.safetensors", {"tiny": quantize(torch.randn(4, 128) * 1e-12)})


def test_truncated_file(tmp_path, layers):
    path = write(tmp_path, layers)
    data = path.read_bytes()
    for cut in (4, 50, len(data) - 7):
        path.write_bytes(data[:cut])
        with pytest.raises(ArtifactError, match="truncated or corrupt"):
            load_artifact(path)


def test_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match="no such artifact"):
        load_artifact(tmp_path / "nope.safetensors")


def rewrite(path, mutate_tensors=None, mutate_meta=None, rehash=True):
    """Mutate an artifact's tensors or header; ``rehash`` recomputes ``ptqtp.sha256`` (a writer
    that is wrong but consistent), so the structural checks behind the hashes are reached."""
    from ptqtp.formats.artifact import HASH_KEY, tensor_sha256, with_hashes

    art = load_artifact(path)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata())
    if mutate_tensors:
        mutate_tensors(tensors)
    if mutate_meta:
        mutate_meta(meta)
    if rehash:
        meta.pop(HASH_KEY, None)
        meta = with_hashes(meta, {k: tensor_sha256(v) for k, v in tensors.items()})
    save_file(tensors, str(path), metadata=meta)
    return art


Q = "model.layers.0.self_attn.q_proj"


def _set_invalid(t):
    t[f"{Q}.tp_codes"][1, 3, 5] = 0b00_10_00_00


@pytest.mark.parametrize(
    "mutate_tensors,mutate_meta,match",
    [
        (_set_invalid, None, r"q_proj.*invalid trit code 0b10 at plane 1, row 3, column 22"),
        (lambda t: t.pop(f"{Q}.tp_scales"), None, r"q_proj.*tp_scales' is missing"),
        (
            lambda t: t.__setitem__(f"{Q}.tp_scales", t[f"{Q}.tp_scales"].float()),
            None,
            r"q_proj.*expected torch.float16",
        ),
        (
            lambda t: t.__setitem__(f"{Q}.tp_codes", t[f"{Q}.tp_codes"][:, :, :-1].contiguous()),
            None,
            r"q_proj.*tp_codes is",
        ),
        (lambda t: t[f"{Q}.tp_scales"].__setitem__((0, 0, 0), float("nan")), None, r"q_proj.*non-finite"),
        (lambda t: t[f"{Q}.tp_codes"].__setitem__((0, 0, -1), 0b01), None, r"q_proj.*padding columns"),
        (
            lambda t: t.__setitem__("stray.tp_codes", torch.zeros(2, 1, 32, dtype=torch.uint8)),
            None,
            r"belong to no listed layer",
        ),
        (lambda t: t.__setitem__(f"{Q}.bias", torch.zeros(3)), None, r"q_proj.*bias shape"),
        (None, lambda m: m.__setitem__("ptqtp.format", "2"), r"ptqtp.format is '2'"),
        (None, lambda m: m.__setitem__("ptqtp.layers", "{"), r"not a JSON list"),
        (None, lambda m: m.__setitem__("ptqtp.layers", json.dumps([{"name": Q}])), r"lacks one of"),
    ],
)
def test_corruptions_raise(tmp_path, layers, mutate_tensors, mutate_meta, match):
    path = write(tmp_path, layers)
    rewrite(path, mutate_tensors, mutate_meta)
    with pytest.raises(ArtifactError, match=match):
        load_artifact(path)


def test_header_length_corrupt(tmp_path, layers):
    path = write(tmp_path, layers)
    data = bytearray(path.read_bytes())
    data[:8] = struct.pack("<Q", len(data) * 2)
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="truncated or corrupt"):
        load_artifact(path)


def test_artifact_written_before_the_restructure_loads():
    """tests/data/artifact_before_restructure.safetensors was written by the code before the
    method registry (commit 09fd478): a PTQTP and a PT^2-LLM layer, and its PTQTPConfig."""
    from pathlib import Path

    from ptqtp.golden import GoldenLayer

    art = load_artifact(Path(__file__).parent / "data" / "artifact_before_restructure.safetensors")
    assert art.config() == PTQTPConfig(group_size=32)  # no ptqtp.method key: the PTQTP config it recorded
    up, down = art.layers["model.layers.0.mlp.up_proj"], art.layers["model.layers.0.mlp.down_proj"]
    assert (up.planes, up.offsets, down.planes, down.info["method"]) == (2, None, 1, "pt2")
    assert down.offsets is not None and down.perm is not None
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 100, generator=g) * 0.02  # the weight both layers were quantized from
    for layer in (up, down):
        assert float(torch.linalg.norm(layer.dequantize(torch.float64) - w) / torch.linalg.norm(w)) < 0.6
        x = torch.randn(3, 100, generator=g).double().numpy()
        y = GoldenLayer.from_packed(layer).forward(x)
        ref = x @ layer.dequantize(torch.float64).numpy().T
        assert np.linalg.norm(y - ref) < 0.05 * np.linalg.norm(ref)


def test_artifact_records_the_config_really_used(tmp_path):
    from ptqtp import PT2ITFConfig

    w = torch.randn(8, 64) * 0.02
    cfg = PT2ITFConfig(group_size=32, max_rounds=7)
    path = save_artifact(tmp_path / "a.safetensors", {"l": quantize(w, cfg)}, config=cfg)
    art = load_artifact(path)
    assert art.metadata["ptqtp.method"] == "pt2-itf" and art.config() == cfg


def test_base3_round_trip_equals_2bit(tmp_path, layers):
    two = load_artifact(write(tmp_path, layers))
    (tmp_path / "b3").mkdir()
    path3 = write(tmp_path / "b3", layers, packing="base3")
    three = load_artifact(path3)
    for name, r in layers.items():
        a, b = two.layers[name], three.layers[name]
        assert b.packing == "base3" and a.packing == "2bit" and "packing" not in a.info
        assert b.codes.shape[-1] == -(-a.d_pad // 5) and a.codes.shape[-1] == a.d_pad // 4
        assert torch.equal(b.trits(), r.codes) and torch.equal(b.trits(), a.trits())
        assert torch.equal(b.dequantize(torch.float64), a.dequantize(torch.float64))
    assert path3.stat().st_size < (tmp_path / "a.safetensors").stat().st_size


def _set_base3_byte(value, j=7):
    return lambda t: t[f"{Q}.tp_codes"].__setitem__((1, 3, j), value)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (_set_base3_byte(243), r"q_proj.*base-3 byte value 243 >= 243 at plane 1, row 3, byte 7 \(columns 35..39\)"),
        (_set_base3_byte(255, 0), r"q_proj.*byte value 255"),
        # d = 200, d_pad = 256: byte 39 holds columns 195..199, byte 51 holds 255 and four remainder trits
        (_set_base3_byte(1, 40), r"q_proj.*padding columns 200..259 hold nonzero"),
        (_set_base3_byte(1, 51), r"q_proj.*padding columns"),
        (lambda t: t.__setitem__(f"{Q}.tp_codes", torch.zeros(2, 16, 64, dtype=torch.uint8)), r"q_proj.*tp_codes is"),
    ],
)
def test_base3_corruptions_raise(tmp_path, layers, mutate, match):
    path = write(tmp_path, layers, packing="base3")
    rewrite(path, mutate)
    with pytest.raises(ArtifactError, match=match):
        load_artifact(path)


def test_unknown_packing_rejected(tmp_path, layers):
    path = write(tmp_path, layers)

    def meta(m):
        recs = json.loads(m["ptqtp.layers"])
        recs[0]["packing"] = "base4"
        m["ptqtp.layers"] = json.dumps(recs)

    rewrite(path, None, meta)
    with pytest.raises(ArtifactError, match="q_proj.*packing must be one of"):
        load_artifact(path)
