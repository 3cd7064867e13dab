"""Fuzzing the readers: mutated artifacts, hardware images, model images and protocol frames
are either rejected with an error naming the file / layer / field, or provably harmless
(what loads is identical to the original). Never accepted wrong.

Mutations (hypothesis): truncation, single bit flips, byte substitutions, edits of header
and manifest fields (random values, including oversized and non-integer ones). The default
run is bounded (about half a minute); ``--runslow`` runs 10x more examples. The counts are
printed in the test summary (``conftest.pytest_terminal_summary``).
"""

from __future__ import annotations

import errno
import json
import shutil
import socket
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptqtp import ArtifactError, PT2Config, PTQTPConfig, load_artifact, quantize, save_artifact
from ptqtp.formats.model_image import ModelImageError, read_model_image, write_model_image
from ptqtp.formats.stream_layout import StreamLayout
from ptqtp.formats.wire import HEADER, FrameError, MsgType, decode_layer, encode_layer, frame
from ptqtp.golden import GoldenLayer
from ptqtp.runtime.backends import GoldenBackend
from ptqtp.runtime.client import RemoteBackend
from ptqtp.runtime.server import serve

#: outcome counts per target, reported at the end of the run
COUNTS: dict[str, Counter] = {}


def examples(request_config, base: int) -> int:
    return base * (10 if request_config.getoption("--runslow") else 1)


def tally(target: str, outcome: str) -> None:
    COUNTS.setdefault(target, Counter())[outcome] += 1
    assert outcome != "accepted-wrong", f"{target}: a mutation was accepted and changed the result"


def fuzz(pytestconfig, base: int):
    """hypothesis settings for a bounded run (``--runslow``: 10x)."""
    return settings(
        max_examples=examples(pytestconfig, base), deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )


def judge(target: str, load, errors, names: str, is_same) -> None:
    """Tally one mutant: ``load()`` raising ``errors`` whose message names ``names`` is
    rejected; anything it loads must satisfy ``is_same`` (harmless) or the test fails."""
    try:
        got = load()
    except errors as e:
        assert names in str(e), str(e)
        tally(target, "rejected")
        return
    tally(target, "harmless" if is_same(got) else "accepted-wrong")


# ------------------------------------------------------------------ mutations


def mutation():
    """(kind, position in [0, 1), value) applied by :func:`mutate`."""
    return st.tuples(
        st.sampled_from(["flip", "substitute", "truncate", "delete", "insert"]),
        st.floats(0, 1, exclude_max=True),
        st.integers(0, 255),
    )


def mutate(data: bytes, m) -> bytes:
    kind, where, value = m
    i = int(where * len(data))
    if kind == "flip":
        return data[:i] + bytes([data[i] ^ (1 << (value % 8))]) + data[i + 1 :]
    if kind == "substitute":
        new = value if value != data[i] else (value + 1) % 256
        return data[:i] + bytes([new]) + data[i + 1 :]
    if kind == "truncate":
        return data[:i]
    if kind == "delete":
        return data[:i] + data[i + 1 :]
    return data[:i] + bytes([value]) + data[i:]


FIELD_VALUES = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 2, -1, 1e400, 1e20, 0.5, True, None, "x", [], {}]),
    st.text(max_size=5),
)


# ------------------------------------------------------------------ artifacts


def _artifact(folder: Path) -> Path:
    g = torch.Generator().manual_seed(3)
    layers = {
        "model.layers.0.self_attn.q_proj": quantize(
            torch.randn(8, 96, generator=g) * 0.02, config=PTQTPConfig(group_size=32)
        ),
        "model.layers.0.mlp.up_proj": quantize(
            torch.randn(6, 64, generator=g) * 0.02, PT2Config(group_size=32), hessian=torch.eye(64) + 0.1
        ),
    }
    tensors = {
        "model.embed_tokens.weight": torch.randn(5, 8, generator=g),
        "model.layers.0.self_attn.q_proj.bias": torch.randn(8, generator=g),
    }
    return save_artifact(folder / "a.safetensors", layers, tensors, config=PTQTPConfig(group_size=32))


def _model_of(art) -> dict:
    """Everything that decides what the artifact computes."""
    out = {k: v.clone() for k, v in art.tensors.items()}
    for name, layer in art.layers.items():
        out[name] = (
            layer.codes,
            layer.scales,
            layer.offsets,
            layer.perm,
            layer.bias,
            layer.in_features,
            layer.out_features,
            layer.group_size,
        )
    return out


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, tuple):
            if not all(
                (u is None and v is None)
                or (
                    isinstance(u, torch.Tensor)
                    and isinstance(v, torch.Tensor)
                    and u.dtype == v.dtype
                    and torch.equal(u, v)
                )
                or u == v
                for u, v in zip(x, y)
            ):
                return False
        elif not (x.dtype == y.dtype and torch.equal(x, y)):
            return False
    return True


@pytest.fixture(scope="module")
def artifact_bytes(tmp_path_factory):
    path = _artifact(tmp_path_factory.mktemp("fuzz-art"))
    return path.read_bytes(), _model_of(load_artifact(path))


def test_fuzz_artifact_bytes(artifact_bytes, tmp_path_factory, pytestconfig):
    data, reference = artifact_bytes
    folder = tmp_path_factory.mktemp("fuzz-art-bytes")

    @fuzz(pytestconfig, 1000)
    @given(m=mutation())
    def run(m):
        path = folder / "m.safetensors"
        path.write_bytes(mutate(data, m))
        judge(
            "artifact bytes",
            lambda: load_artifact(path),
            ArtifactError,
            str(path),
            lambda art: _same(_model_of(art), reference),
        )

    run()


def test_fuzz_artifact_header_fields(artifact_bytes, tmp_path_factory, pytestconfig):
    """Edit one field of one layer record (or of the config) in the header, as a user with
    a text editor would; the hashes are left as they were."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    data, reference = artifact_bytes
    folder = tmp_path_factory.mktemp("fuzz-art-header")
    src = folder / "src.safetensors"
    src.write_bytes(data)
    with safe_open(str(src), "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())
    records = json.loads(meta["ptqtp.layers"])
    fields = sorted({k for r in records for k in r})

    @fuzz(pytestconfig, 300)
    @given(i=st.integers(0, len(records) - 1), field=st.sampled_from(fields), value=FIELD_VALUES)
    def run(i, field, value):
        recs = json.loads(meta["ptqtp.layers"])
        recs[i][field] = value
        path = folder / "m.safetensors"
        save_file(tensors, str(path), metadata={**meta, "ptqtp.layers": json.dumps(recs)})
        judge(
            "artifact header fields",
            lambda: load_artifact(path),
            ArtifactError,
            str(path),
            lambda art: _same(_model_of(art), reference),
        )

    run()


# ------------------------------------------------------------------ hardware images


def _golden(pt2: bool, planes: int = 2) -> GoldenLayer:
    g = torch.Generator().manual_seed(4)
    w = torch.randn(6, 80, generator=g) * 0.02
    if pt2:
        r = quantize(w, PT2Config(group_size=32), hessian=torch.eye(80) + 0.1)
    else:
        r = quantize(w, config=PTQTPConfig(group_size=32, planes=planes))
    from ptqtp.formats.artifact import PackedLayer, pack_layer

    packed = pack_layer(r, "l")
    layer = PackedLayer(
        "l",
        packed["tp_codes"],
        packed["tp_scales"],
        {**r.info(), "name": "l"},
        offsets=packed.get("tp_offsets"),
        perm=packed.get("tp_perm"),
    )
    return GoldenLayer.from_packed(layer)


def _fresh_copy(original: Path, folder: Path) -> Path:
    """``folder`` as an unmutated copy of the image folder ``original``."""
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(original, folder)
    return folder


# ------------------------------------------------------------------ model images


def test_fuzz_model_image(tmp_path_factory, pytestconfig):
    base = tmp_path_factory.mktemp("fuzz-model-image")
    layers = {"a": _golden(False), "b": _golden(True), "c": _golden(False, planes=3)}  # c: two passes
    original = write_model_image(base / "orig", layers, StreamLayout(16, 2, 2, True, 32, 16, 64), "cd" * 32, align=64)

    def state(img):
        return {
            k: (
                g.trits.tobytes(),
                g.a_q.tobytes(),
                None if g.m_q is None else g.m_q.tobytes(),
                None if g.perm is None else g.perm.tobytes(),
                g.F,
                g.config,
                g.d,
            )
            for k, g in img.layers.items()
        }

    reference = state(read_model_image(original))

    @fuzz(pytestconfig, 300)
    @given(name=st.sampled_from(["weights.bin", "manifest.json"]), m=mutation())
    def run(name, m):
        folder = _fresh_copy(original, base / "m")
        (folder / name).write_bytes(mutate((folder / name).read_bytes(), m))
        judge(
            "model image files",
            lambda: read_model_image(folder),
            ModelImageError,
            str(folder),
            lambda img: state(img) == reference,
        )

    run()


def test_fuzz_model_image_manifest_fields(tmp_path_factory, pytestconfig):
    """Any field of the manifest or of a layer record set to any value, the manifest's own hash
    forged to match: every edit is refused or loads identical."""
    from ptqtp.formats.model_image import _manifest_digest

    base = tmp_path_factory.mktemp("fuzz-model-image-json")
    original = write_model_image(
        base / "orig",
        {"a": _golden(False), "b": _golden(True), "c": _golden(False, planes=3)},  # c: two passes
        StreamLayout(16, 2, 2, True, 32, 16, 64),
        "cd" * 32,
        align=64,
    )
    manifest = json.loads((original / "manifest.json").read_text())
    reference = read_model_image(original)
    fields = [("", k) for k in sorted(manifest) if k != "sha256"] + [
        (i, k) for i, rec in enumerate(manifest["layers"]) for k in sorted(rec)
    ]

    def same(img):
        return (
            img.layout == reference.layout
            and img.layers.keys() == reference.layers.keys()
            and all(
                np.array_equal(img.layers[k].trits, g.trits)
                and np.array_equal(img.layers[k].a_q, g.a_q)
                and img.layers[k].F == g.F
                and img.layers[k].d == g.d
                for k, g in reference.layers.items()
            )
        )

    @fuzz(pytestconfig, 500)
    @given(where=st.sampled_from(fields), value=FIELD_VALUES)
    def run(where, value):
        index, field = where
        edited = json.loads(json.dumps(manifest))
        (edited if index == "" else edited["layers"][index])[field] = value
        edited.pop("sha256")
        edited["sha256"] = _manifest_digest(edited)
        folder = _fresh_copy(original, base / "m")
        (folder / "manifest.json").write_text(json.dumps(edited))
        judge(
            "model image manifest fields (hash forged)",
            lambda: read_model_image(folder),
            ModelImageError,
            str(folder),
            same,
        )

    run()


# ------------------------------------------------------------------ protocol


def test_fuzz_load_layer_payload(pytestconfig):
    g = _golden(True)
    payload = encode_layer(3, g)

    @fuzz(pytestconfig, 500)
    @given(m=mutation())
    def run(m):
        try:
            layer_id, back = decode_layer(mutate(payload, m))
        except FrameError as e:
            assert e.code == 5 and not e.fatal
            tally("LOAD_LAYER payloads", "rejected")
            return
        same = (
            layer_id == 3
            and np.array_equal(back.trits, g.trits)
            and np.array_equal(back.a_q, g.a_q)
            and np.array_equal(back.m_q, g.m_q)
            and back.F == g.F
            and back.config == g.config
            and back.d == g.d
        )
        # a changed id or value that still decodes is a different but well-formed request: the
        # server answers it as asked, so it is only "wrong" if the decode misreads the bytes
        tally("LOAD_LAYER payloads", "harmless" if same else "well-formed, different request")

    run()


def test_fuzz_frames_against_a_live_server(pytestconfig):
    """Mutated frames at a server: it answers (a frame) or closes the connection, and keeps
    serving a correct client afterwards."""
    srv = serve(GoldenBackend(), frame_timeout=0.5, idle_timeout=2.0)
    g = _golden(False)
    x = np.zeros((2, g.d_pad), np.int64)
    x[:, : g.d] = 3
    valid = [
        frame(MsgType.HELLO, 1),
        frame(MsgType.LOAD_LAYER, 2, encode_layer(0, g)),
        frame(MsgType.RUN, 3, struct.pack("<II", 0, 2) + x.astype("<i4").tobytes()),
    ]
    try:

        @fuzz(pytestconfig, 100)
        @given(which=st.integers(0, 2), m=mutation())
        def run(which, m):
            s = socket.create_connection(srv.server_address, timeout=5)
            got = b""
            try:
                s.sendall(valid[1] + mutate(valid[which], m))  # a layer is loaded first, then the mutant
                s.shutdown(socket.SHUT_WR)
                while True:
                    chunk = s.recv(1 << 16)
                    if not chunk:
                        break
                    got += chunk
            except OSError as e:  # the server closed a broken frame's connection (reset, pipe, or not connected
                if e.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):  # by the time we shut down)
                    raise
                tally("protocol frames", "connection closed by the server")
                return
            finally:
                s.close()
            assert len(got) >= HEADER.size  # at least the reply to the valid LOAD
            tally("protocol frames", "answered")

        run()
        with RemoteBackend(*srv.server_address, timeout=5) as remote:  # still serving
            remote.load(0, g)
            np.testing.assert_array_equal(remote.run(0, x), g.acc(x))
    finally:
        srv.shutdown()
        srv.server_close()
