"""Integrity: every tensor and header entry of an artifact is hashed and checked on load;
a layer record needs exactly its tensors; bias is validated (issue: nothing silently wrong)."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ptqtp import ArtifactError, PT2Config, PTQTPConfig, load_artifact, quantize, save_artifact
from ptqtp.formats.artifact import HASH_KEY, artifact_metadata, tensor_sha256, verify_artifact, with_hashes

P2 = "model.layers.0.mlp.up_proj"
Q = "model.layers.0.self_attn.q_proj"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    g = torch.Generator().manual_seed(1)
    layers = {
        Q: quantize(torch.randn(16, 256, generator=g) * 0.02, config=PTQTPConfig()),
        P2: quantize(torch.randn(8, 256, generator=g) * 0.02, PT2Config(), hessian=torch.eye(256) + 0.1),
    }
    tensors = {"model.embed_tokens.weight": torch.randn(10, 4, generator=g), f"{Q}.bias": torch.randn(16, generator=g)}
    path = save_artifact(tmp_path_factory.mktemp("src") / "a.safetensors", layers, tensors, config=PTQTPConfig())
    return path


def read(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def rewrite(path, tensors, meta, rehash):
    if rehash:
        meta.pop(HASH_KEY, None)
        meta = with_hashes(meta, {k: tensor_sha256(v) for k, v in tensors.items()})
    save_file(tensors, str(path), metadata=meta)


@pytest.fixture
def art(source, tmp_path):
    path = tmp_path / "a.safetensors"
    path.write_bytes(source.read_bytes())
    return path


def test_records_say_which_tensors_a_layer_has(art):
    recs = {r["name"]: r for r in json.loads(read(art)[1]["ptqtp.layers"])}
    assert (recs[Q]["offset"], recs[Q]["perm"]) == (False, False)
    assert (recs[P2]["offset"], recs[P2]["perm"], recs[P2]["planes"]) == (True, True, 1)


@pytest.mark.parametrize("suffix", ["tp_offsets", "tp_perm"])
def test_pt2_layer_without_its_tensor_is_refused_even_if_rehashed(art, suffix):
    tensors, meta = read(art)
    del tensors[f"{P2}.{suffix}"]
    rewrite(art, tensors, meta, rehash=True)
    with pytest.raises(ArtifactError, match=rf"up_proj.*{suffix}' is missing"):
        load_artifact(art)


def test_tensor_the_record_does_not_list_is_refused(art):
    tensors, meta = read(art)
    tensors[f"{Q}.tp_offsets"] = torch.zeros(16, 2, dtype=torch.float16)
    rewrite(art, tensors, meta, rehash=True)
    with pytest.raises(ArtifactError, match=r"q_proj.*tp_offsets' is present but the record says"):
        load_artifact(art)


@pytest.mark.parametrize(
    "bias,match",
    [
        (torch.full((16,), float("nan")), "NaN or Inf"),
        (torch.full((16,), float("inf")), "NaN or Inf"),
        (torch.zeros(16, dtype=torch.int32), "floating-point"),
        (torch.zeros(3), "bias shape"),
    ],
)
def test_bad_bias_is_refused(art, bias, match):
    tensors, meta = read(art)
    tensors[f"{Q}.bias"] = bias
    rewrite(art, tensors, meta, rehash=True)
    with pytest.raises(ArtifactError, match=rf"q_proj.*{match}"):
        load_artifact(art)
    with pytest.raises(ArtifactError, match=match):  # and never written in the first place
        save_artifact(art.with_name("b.safetensors"), {Q: quantize(torch.randn(16, 256) * 0.02)}, {f"{Q}.bias": bias})


@pytest.mark.parametrize(
    "key",
    [f"{Q}.tp_codes", f"{Q}.tp_scales", f"{P2}.tp_offsets", f"{P2}.tp_perm", f"{Q}.bias", "model.embed_tokens.weight"],
)
def test_a_changed_value_anywhere_is_reported_with_its_name(art, key):
    tensors, meta = read(art)
    flat = tensors[key].view(-1).view(torch.uint8)
    flat[len(flat) // 2] ^= 0b0100_0000  # one bit; still a valid code/finite/permutation or not: either way caught
    rewrite(art, tensors, meta, rehash=False)
    with pytest.raises(ArtifactError, match=rf"{key}' does not match its SHA-256"):
        load_artifact(art)
    with pytest.raises(ArtifactError, match="SHA-256"):
        verify_artifact(art)


def test_verify_false_skips_only_the_hashes(art, source):
    tensors, meta = read(art)
    tensors["model.embed_tokens.weight"][0, 0] += 1.0
    rewrite(art, tensors, meta, rehash=False)
    loaded = load_artifact(art, verify=False)  # the opt-out: the changed value comes through
    assert not torch.equal(
        loaded.tensors["model.embed_tokens.weight"], load_artifact(source).tensors["model.embed_tokens.weight"]
    )


@pytest.mark.parametrize(
    "edit",
    [
        lambda r: r[0].__setitem__("in_features", 255),  # same groups, zero padding: loads as a different model
        lambda r: r[0].__setitem__("method", "ternary"),
        lambda r: r[1].__setitem__("group_size", 64),
    ],
)
def test_an_edited_header_is_refused(art, edit):
    tensors, meta = read(art)
    recs = json.loads(meta["ptqtp.layers"])
    edit(recs)
    meta["ptqtp.layers"] = json.dumps(recs)
    rewrite(art, tensors, meta, rehash=False)
    with pytest.raises(ArtifactError, match="header .* does not match its SHA-256"):
        load_artifact(art)
    with pytest.raises(ArtifactError, match="header .* does not match its SHA-256"):
        artifact_metadata(art)  # the header-only reader checks it too


@pytest.mark.parametrize(
    "name,field,value,match",
    [
        (["x"], None, None, "name that is not a string"),
        (Q, "in_features", 1e400, "in_features must be a positive integer"),
        (Q, "out_features", -3, "out_features must be a positive integer"),
        (Q, "group_size", 0, "group_size must be a positive integer"),
        (Q, "planes", True, "planes must be 1, 2, 3 or 4"),
        (Q, "planes", 5, "planes must be 1, 2, 3 or 4"),
        (Q, "offset", "yes", "offset must be true or false"),
    ],
)
def test_malformed_records_raise_clean_errors(art, name, field, value, match):
    tensors, meta = read(art)
    recs = json.loads(meta["ptqtp.layers"])
    recs[0]["name"] = name
    if field:
        recs[0][field] = value
    meta["ptqtp.layers"] = json.dumps(recs)
    rewrite(art, tensors, meta, rehash=True)
    with pytest.raises(ArtifactError, match=match):
        load_artifact(art)


def test_verify_artifact_streams_and_agrees_with_load(art):
    assert verify_artifact(art) == 2 == len(load_artifact(art).layers)


def test_artifact_without_hashes_still_loads(art):
    """Artifacts written before the hashes (tests/data) load, checked structurally."""
    tensors, meta = read(art)
    meta.pop(HASH_KEY)
    save_file(tensors, str(art), metadata=meta)
    assert set(load_artifact(art).layers) == {Q, P2}
