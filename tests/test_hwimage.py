import json

import numpy as np
import pytest
import torch

from ptqtp import load_artifact, quantize, save_artifact
from ptqtp.formats.artifact import file_sha256
from ptqtp.golden import GoldenLayer, IntConfig
from ptqtp.formats.hwimage import ImageError, read_image, write_image
from ptqtp.tools.cli import main


def golden_layer(n=5, d=200, G=32, S=16, seed=0):
    rng = np.random.default_rng(seed)
    d_pad = -(-d // G) * G
    trits = rng.integers(-1, 2, size=(2, n, d_pad)).astype(np.int8)
    trits[:, :, d:] = 0
    scales = rng.standard_normal((2, n, d_pad // G)).astype(np.float16).astype(np.float64)
    return GoldenLayer(trits, scales, d, G, IntConfig(8, S))


def test_word_layout_by_hand(tmp_path):
    # row 0: trits +1, -1, 0, +1 | 0, 0, 0, -1 with P = 4 -> codes 01 11 00 01 = 0x4d, then 11 << 6 = 0xc0
    trits = np.zeros((2, 1, 8), dtype=np.int8)
    trits[0, 0, :4] = [1, -1, 0, 1]
    trits[0, 0, 7] = -1
    g = GoldenLayer(trits, np.array([[[0.5, -0.25]], [[0.0, 0.125]]]), 8, 4, IntConfig(8, 8))
    write_image(tmp_path / "img", g, 4, "x", "0" * 64)
    assert (tmp_path / "img" / "plane1.hex").read_text() == "4d\nc0\n"
    # S = 8: F = 7 (0.5 * 2^8 = 128 > 127); a_q = 64, -32 -> 40, e0 (two's complement)
    assert (tmp_path / "img" / "scale1.hex").read_text() == "40\ne0\n"
    assert (tmp_path / "img" / "scale2.hex").read_text() == "00\n10\n"


@pytest.mark.parametrize("P,G,S", [(4, 32, 16), (32, 32, 16), (8, 64, 12), (3, 12, 10), (64, 128, 16)])
def test_round_trip(tmp_path, P, G, S):
    g = golden_layer(d=3 * G - 5, G=G, S=S)
    write_image(tmp_path / "img", g, P, "layer", "ab" * 32)
    img = read_image(tmp_path / "img", artifact_sha256="ab" * 32)
    np.testing.assert_array_equal(img.trits, g.trits)
    np.testing.assert_array_equal(img.a_q, g.a_q)
    meta = img.meta
    assert (meta.n, meta.d, meta.d_pad, meta.G, meta.P, meta.S, meta.F, meta.ACC) == (
        g.n, g.d, g.d_pad, G, P, S, g.F, g.acc_bits)
    assert np.array_equal(img.golden().a_q, g.a_q)
    x = np.random.default_rng(1).standard_normal((3, g.d))
    np.testing.assert_array_equal(img.golden().forward(x), g.forward(x))
    lines = (tmp_path / "img" / "plane1.hex").read_text().splitlines()
    assert len(lines) == g.n * g.d_pad // P and {len(x) for x in lines} == {-(-2 * P // 4)}


@pytest.fixture
def image(tmp_path):
    g = golden_layer()
    return write_image(tmp_path / "img", g, 8, "layer", "cd" * 32)


def edit_line(path, line, new):
    lines = path.read_text().splitlines()
    lines[line] = new(lines[line])
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "file,edit,match",
    [
        ("plane1.hex", lambda s: "g" + s[1:], r"plane1.hex:3: .* is not hexadecimal"),
        ("plane2.hex", lambda s: s + "0", r"plane2.hex:3: word .* is not 4 hex digits \(16 bits\)"),
        ("plane1.hex", lambda s: s[:-1] + "2", r"plane1.hex:3: invalid trit code 0b10 in lane 0"),
        ("scale1.hex", lambda s: s[:-1], r"scale1.hex:3: word .* is not 4 hex digits"),
    ],
)
def test_corruptions(image, file, edit, match):
    edit_line(image / file, 2, edit)
    with pytest.raises(ImageError, match=match):
        read_image(image)


def test_scale_wider_than_bits(tmp_path):
    g = golden_layer(S=10)
    write_image(tmp_path / "img", g, 8, "layer", "0" * 64)
    edit_line(tmp_path / "img" / "scale2.hex", 0, lambda s: "7ff")
    with pytest.raises(ImageError, match=r"scale2.hex:1: .* wider than 10 bits"):
        read_image(tmp_path / "img")


def test_missing_file_and_count(image):
    lines = (image / "plane2.hex").read_text().splitlines()
    (image / "plane2.hex").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ImageError, match=r"plane2.hex: \d+ words, expected \d+"):
        read_image(image)
    (image / "scale2.hex").unlink()
    (image / "plane2.hex").write_text("\n".join(lines) + "\n")
    with pytest.raises(ImageError, match=r"scale2.hex: missing"):
        read_image(image)
    (image / "layer.json").unlink()
    with pytest.raises(ImageError, match=r"layer.json: missing"):
        read_image(image)


def rehashed(meta: dict) -> dict:
    from ptqtp.formats.hwimage import _meta_digest

    return {**meta, "sha256": _meta_digest(meta)}


@pytest.mark.parametrize("field,value", [("planes", 1), ("offset", True), ("S", 12), ("A", 6), ("F", 3), ("d", 40),
                                         ("P", 16), ("name", "other")])
def test_any_edit_of_layer_json_is_caught(image, field, value):
    meta = json.loads((image / "layer.json").read_text())
    assert meta[field] != value
    meta[field] = value
    (image / "layer.json").write_text(json.dumps(meta))
    with pytest.raises(ImageError, match="layer.json edited or corrupt"):
        read_image(image)


def test_a_changed_word_that_still_parses_is_caught(image):
    edit_line(image / "scale1.hex", 1, lambda s: ("1" if s[-1] != "1" else "2").join([s[:-1], ""]))
    with pytest.raises(ImageError, match="scale1.hex: SHA-256 does not match layer.json"):
        read_image(image)


def test_dropped_file_list_entry_is_caught(image):
    meta = json.loads((image / "layer.json").read_text())
    del meta["files"]["plane2.hex"]
    (image / "layer.json").write_text(json.dumps(rehashed(meta)))
    with pytest.raises(ImageError, match="lists files"):
        read_image(image)


@pytest.mark.parametrize("field,value,match", [("G", 0, "inconsistent shape"), ("n", 10**12, "must be an integer"),
                                               ("n", 10**9, "cannot hold"), ("F", 1e20, "must be an integer")])
def test_absurd_sizes_are_refused_before_allocating(image, field, value, match):
    meta = json.loads((image / "layer.json").read_text())
    meta[field] = value
    (image / "layer.json").write_text(json.dumps(rehashed(meta)))
    with pytest.raises(ImageError, match=match):
        read_image(image)


def test_sha_mismatch_and_bad_json(image):
    with pytest.raises(ImageError, match="source sha256 .* does not match"):
        read_image(image, artifact_sha256="ee" * 32)
    meta = json.loads((image / "layer.json").read_text())
    meta["ACC"] -= 1  # F is a free exponent of the image, ACC follows from its shape, A and S
    (image / "layer.json").write_text(json.dumps(meta))
    with pytest.raises(ImageError, match="layer.json edited or corrupt"):
        read_image(image)
    (image / "layer.json").write_text(json.dumps(rehashed(meta)))  # a consistent writer's mistake
    with pytest.raises(ImageError, match="disagree with the golden model"):
        read_image(image).golden()
    (image / "layer.json").write_text("{")
    with pytest.raises(ImageError, match="malformed"):
        read_image(image)


def test_nonzero_padding_rejected(tmp_path):
    g = golden_layer(d=30, G=32)
    write_image(tmp_path / "img", g, 32, "l", "0" * 64)
    edit_line(tmp_path / "img" / "plane1.hex", 0, lambda s: "1" + s[1:])  # trit 31 of row 0 = +1
    with pytest.raises(ImageError, match="padding columns 30..31"):
        read_image(tmp_path / "img")


def test_invalid_lanes(tmp_path):
    with pytest.raises(ValueError, match="lanes P must be a positive divisor of G=32, not 5"):
        write_image(tmp_path / "img", golden_layer(), 5, "l", "0" * 64)
    assert not (tmp_path / "img").exists()


def test_rewrite_replaces_atomically(tmp_path):
    write_image(tmp_path / "img", golden_layer(seed=0), 8, "l", "0" * 64)
    g2 = golden_layer(seed=1)
    write_image(tmp_path / "img", g2, 8, "l", "0" * 64)
    np.testing.assert_array_equal(read_image(tmp_path / "img").trits, g2.trits)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img"]


def test_export_command(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    layers = {f"model.layers.{i}.mlp.up_proj": quantize(torch.randn(8, 160, generator=g) * 0.02) for i in range(3)}
    art = save_artifact(tmp_path / "a.safetensors", layers)
    assert main(["export", str(art), "-o", str(tmp_path / "img"), "--layers", r"layers\.[02]\.", "--lanes", "16"]) == 0
    out = capsys.readouterr().out
    assert "2 layer images (P=16, A=8, S=16)" in out
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == ["model.layers.0.mlp.up_proj", "model.layers.2.mlp.up_proj"]
    packed = load_artifact(art).layers["model.layers.2.mlp.up_proj"]
    img = read_image(tmp_path / "img" / "model.layers.2.mlp.up_proj", artifact_sha256=file_sha256(art))
    np.testing.assert_array_equal(img.trits, packed.trits().numpy())
    np.testing.assert_array_equal(img.a_q, GoldenLayer.from_packed(packed).a_q)
    assert main(["export", str(art), "-o", str(tmp_path / "x"), "--layers", "nothing"]) == 2
    assert "no layer matches" in capsys.readouterr().err
    assert main(["budget", str(art)]) == 0
    assert "integer output vs float planes" in capsys.readouterr().out
