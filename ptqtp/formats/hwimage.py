"""Hardware image: `$readmemh` views of one layer for RTL and FPGA flows (docs/SPEC.md section 4).

A folder per layer::

    plane1.hex, plane2.hex   one word per line, P trits x 2 bits (trit 0 of the chunk in the
                             least significant bits), order row r, then chunk c = 0..d_pad/P-1
    scale1.hex, scale2.hex   one S-bit two's complement a_q per line, order row r, then group g
    offset.hex               PT^2-LLM only: one S-bit m_q per line, order row r, then group g
    perm.hex                 with a column order only: perm[j] for j = 0..d-1, ceil(log2 d) bits
    layer.json               n, d, d_pad, G, P, A, S, F, ACC, planes, offset, perm, source
                             sha256, layer name, version, files (name -> SHA-256 of each
                             file above) and sha256 (of layer.json's other fields)

A one-plane layer (PT^2-LLM) has plane1/scale1 only. The host applies perm to x before
quantizing; the accelerator never sees it.

Words are fixed-width lowercase hex, ceil(bits / 4) digits. The image is derived from the
artifact through the golden model (which defines a_q and F); reading it back gives the
same trits and a_q, and every file, line, width and code is validated. From version 3 the
image is self-checking: an edited field of layer.json (F is a free exponent: no file
contradicts it) or a changed byte of any file is reported, naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ptqtp.golden import GoldenLayer, IntConfig, is_permutation

from .atomic import json_sha256

__all__ = ["HardwareImage", "ImageMeta", "ImageError", "write_image", "read_image", "IMAGE_VERSION"]

IMAGE_VERSION = 3  # 2 added planes, offset and perm; 3 the hashes; versions 1 and 2 still read
_MAX_DIM = 1 << 31
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_NIBBLE = np.full(256, 255, dtype=np.uint8)  # ASCII -> nibble, 255 = not a hex digit
_NIBBLE[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_NIBBLE[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_NIBBLE[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


class ImageError(ValueError):
    """A hardware image file is missing, malformed or inconsistent; names file and line."""


@dataclass(frozen=True)
class ImageMeta:
    """``layer.json``: the layer's shape and integer parameters, named as in the file."""

    name: str
    n: int
    d: int
    d_pad: int
    G: int
    P: int
    A: int
    S: int
    F: int
    ACC: int
    planes: int = 2
    offset: bool = False
    perm: bool = False
    source_sha256: str = ""
    version: int = IMAGE_VERSION
    files: dict | None = None  # version 3: file name -> SHA-256

    @classmethod
    def of(cls, golden: GoldenLayer, lanes: int, name: str, source_sha256: str) -> ImageMeta:
        """The metadata of ``golden``'s image with P = ``lanes``."""
        return cls(name=name, n=golden.n, d=golden.d, d_pad=golden.d_pad, G=golden.group_size, P=lanes,
                   A=golden.config.act_bits, S=golden.config.scale_bits, F=golden.F, ACC=golden.acc_bits,
                   planes=golden.planes, offset=golden.m_q is not None, perm=golden.perm is not None,
                   source_sha256=source_sha256)

    def file_names(self) -> list[str]:
        """The data files this layer's image holds."""
        names = [f"{kind}{k + 1}.hex" for k in range(self.planes) for kind in ("plane", "scale")]
        return names + ["offset.hex"] * self.offset + ["perm.hex"] * self.perm

    @classmethod
    def from_json(cls, path: Path) -> ImageMeta:
        """Parse and check ``layer.json``; ``ImageError`` naming the file otherwise."""
        try:
            raw = json.loads(path.read_text())
            ints = {}
            for k in ("n", "d", "d_pad", "G", "P", "A", "S", "F", "ACC"):
                v = raw[k]
                if isinstance(v, bool) or not isinstance(v, int) or not -_MAX_DIM < v < _MAX_DIM:
                    raise ValueError(f"{k} must be an integer of magnitude below 2^31, not {v!r}")
                ints[k] = v
            meta = cls(name=str(raw.get("name", "")), **ints, planes=raw.get("planes", 2),
                       offset=raw.get("offset", False), perm=raw.get("perm", False),
                       source_sha256=str(raw.get("source_sha256", "")), version=raw.get("version"),
                       files=raw.get("files"))
        except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:
            raise ImageError(f"{path}: malformed ({e})") from None
        if meta.version not in (1, 2, IMAGE_VERSION):
            raise ImageError(f"{path}: version {meta.version!r}, expected 1, 2 or {IMAGE_VERSION}")
        if meta.version == IMAGE_VERSION:
            if raw.get("sha256") != _meta_digest(raw):
                raise ImageError(f"{path}: fields do not match the file's sha256 (layer.json edited or corrupt)")
        elif "files" in raw or "sha256" in raw:
            raise ImageError(f"{path}: version {meta.version} has no hashes, but the file carries some")
        if meta.planes not in (1, 2) or not isinstance(meta.offset, bool) or not isinstance(meta.perm, bool):
            raise ImageError(f"{path}: planes must be 1 or 2 and offset/perm booleans, not {meta.planes!r}, "
                             f"{meta.offset!r}, {meta.perm!r}")
        if min(meta.P, meta.G, meta.n, meta.d) < 1 or meta.G % meta.P or meta.d_pad % meta.G or meta.d > meta.d_pad:
            raise ImageError(f"{path}: inconsistent shape n={meta.n} d={meta.d} d_pad={meta.d_pad} G={meta.G} "
                             f"P={meta.P}")
        return meta

    def to_json(self) -> str:
        fields = asdict(self)
        return json.dumps({**fields, "sha256": _meta_digest(fields)}, indent=2) + "\n"

    @property
    def ng(self) -> int:
        return self.d_pad // self.G


@dataclass
class HardwareImage:
    """A layer as the accelerator's memories hold it."""

    trits: np.ndarray  # int8 [planes, n, d_pad]
    a_q: np.ndarray  # int64 [planes, n, ng]
    meta: ImageMeta
    m_q: np.ndarray | None = None  # int64 [n, ng]
    perm: np.ndarray | None = None  # int64 [d]

    @property
    def lanes(self) -> int:
        return self.meta.P

    def golden(self) -> GoldenLayer:
        """The golden model of this image; its F and ACC must agree with layer.json."""
        m = self.meta
        mismatch = ImageError(f"layer.json F={m.F} ACC={m.ACC} disagree with the golden model")
        try:
            g = GoldenLayer.from_fixed_point(self.trits, self.a_q, m.F, m.d, m.G, IntConfig(m.A, m.S), self.m_q,
                                             self.perm)
        except ValueError as e:
            raise mismatch from e
        if g.acc_bits != m.ACC:
            raise mismatch
        return g


def _meta_digest(fields: dict) -> str:
    """SHA-256 of layer.json's fields other than ``sha256`` (compact, sorted keys)."""
    return json_sha256(fields, without="sha256")


# ------------------------------------------------------------------ encoding


def _words_to_hex(nibbles: np.ndarray) -> bytes:
    """[words, digits] nibbles, most significant first -> text, one word per line."""
    text = np.empty((nibbles.shape[0], nibbles.shape[1] + 1), dtype=np.uint8)
    text[:, :-1] = _HEX[nibbles]
    text[:, -1] = ord("\n")
    return text.tobytes()


def _trit_words(trits: np.ndarray, lanes: int) -> np.ndarray:
    """int8 [n, d_pad] -> nibbles [n * d_pad / P, ceil(P / 2)], trit 0 of a chunk lowest."""
    chunks = (trits & 0b11).astype(np.uint8).reshape(-1, lanes)  # 2-bit two's complement: -1 -> 0b11
    if lanes % 2:
        chunks = np.concatenate([chunks, np.zeros((chunks.shape[0], 1), np.uint8)], axis=1)
    nibbles = chunks[:, 0::2] | (chunks[:, 1::2] << 2)  # digit i holds trits 2i, 2i+1
    return nibbles[:, ::-1]


def _int_words(values: np.ndarray, bits: int) -> np.ndarray:
    """Signed ints -> two's complement nibbles [count, ceil(bits / 4)], most significant first."""
    digits = -(-bits // 4)
    u = values.astype(np.int64).reshape(-1) & ((1 << bits) - 1)
    shifts = 4 * np.arange(digits - 1, -1, -1, dtype=np.int64)
    return ((u[:, None] >> shifts) & 0xF).astype(np.uint8)


# ------------------------------------------------------------------ writing


def _perm_bits(d: int) -> int:
    """Bits of one perm.hex word: enough for d - 1 (unsigned, written as non-negative two's complement)."""
    return max(1, (d - 1).bit_length()) + 1


def write_image(folder: str | os.PathLike, golden: GoldenLayer, lanes: int, name: str, source_sha256: str) -> Path:
    """Write one layer's image folder atomically (temp folder, then rename over ``folder``).

    Raises
    ------
    ValueError: ``lanes`` does not divide G.
    """
    if not isinstance(lanes, int) or lanes < 1 or golden.group_size % lanes:
        raise ValueError(f"lanes P must be a positive divisor of G={golden.group_size}, not {lanes!r}")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        S = golden.config.scale_bits
        for k in range(golden.planes):
            (tmp / f"plane{k + 1}.hex").write_bytes(_words_to_hex(_trit_words(golden.trits[k], lanes)))
            (tmp / f"scale{k + 1}.hex").write_bytes(_words_to_hex(_int_words(golden.a_q[k], S)))
        if golden.m_q is not None:
            (tmp / "offset.hex").write_bytes(_words_to_hex(_int_words(golden.m_q, S)))
        if golden.perm is not None:
            (tmp / "perm.hex").write_bytes(_words_to_hex(_int_words(golden.perm, _perm_bits(golden.d))))
        meta = ImageMeta.of(golden, lanes, name, source_sha256)
        files = {f: hashlib.sha256((tmp / f).read_bytes()).hexdigest() for f in meta.file_names()}
        (tmp / "layer.json").write_text(ImageMeta(**{**asdict(meta), "files": files}).to_json())
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old)
        else:
            tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


# ------------------------------------------------------------------ reading


def _read_words(path: Path, count: int, bits: int) -> np.ndarray:
    """Nibbles [count, digits] from a hex file, validating syntax, width and count."""
    if not path.is_file():
        raise ImageError(f"{path}: missing")
    digits = -(-bits // 4)
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if len(lines) != count:
        raise ImageError(f"{path}: {len(lines)} words, expected {count}")
    for i, line in enumerate(lines):
        if len(line.rstrip(b"\r")) != digits:
            raise ImageError(f"{path}:{i + 1}: word {line[:40]!r} is not {digits} hex digits ({bits} bits)")
    raw = np.frombuffer(b"".join(line.rstrip(b"\r") for line in lines), dtype=np.uint8).reshape(count, digits)
    nib = _NIBBLE[raw]
    bad = np.argwhere(nib == 255)
    if len(bad):
        i = int(bad[0][0])
        raise ImageError(f"{path}:{i + 1}: {lines[i]!r} is not hexadecimal")
    top_bits = bits - 4 * (digits - 1)
    over = np.argwhere(nib[:, 0] >= (1 << top_bits))
    if len(over):
        i = int(over[0][0])
        raise ImageError(f"{path}:{i + 1}: {lines[i]!r} is wider than {bits} bits")
    return nib


def _decode_trits(path: Path, nibbles: np.ndarray, lanes: int) -> np.ndarray:
    low = nibbles[:, ::-1]
    codes = np.empty((nibbles.shape[0], 2 * low.shape[1]), dtype=np.uint8)
    codes[:, 0::2] = low & 0b11
    codes[:, 1::2] = low >> 2
    codes = codes[:, :lanes]
    bad = np.argwhere(codes == 0b10)
    if len(bad):
        line, lane = (int(v) for v in bad[0])
        raise ImageError(f"{path}:{line + 1}: invalid trit code 0b10 in lane {lane}")
    return np.array([0, 1, 0, -1], dtype=np.int8)[codes]


def read_image(folder: str | os.PathLike, artifact_sha256: str | None = None) -> HardwareImage:
    """Read and validate an image folder; with ``artifact_sha256``, check its source.

    Raises
    ------
    ImageError: a missing file, bad hex, a word of the wrong width, a wrong word count,
        the invalid trit code, nonzero padding, or a source sha256 mismatch.
    """
    folder = Path(folder)
    meta_path = folder / "layer.json"
    if not meta_path.is_file():
        raise ImageError(f"{meta_path}: missing")
    meta = ImageMeta.from_json(meta_path)
    if artifact_sha256 is not None and meta.source_sha256 != artifact_sha256:
        raise ImageError(f"{meta_path}: source sha256 {meta.source_sha256} does not match the artifact "
                         f"{artifact_sha256}")
    planes, n, d, d_pad, G, P, S = meta.planes, meta.n, meta.d, meta.d_pad, meta.G, meta.P, meta.S
    _check_sizes(folder, meta)  # before allocating anything layer.json's sizes ask for
    trits = np.empty((planes, n, d_pad), dtype=np.int8)
    a_q = np.empty((planes, n, d_pad // G), dtype=np.int64)
    for k in range(planes):
        path = folder / f"plane{k + 1}.hex"
        words = _read_words(path, n * d_pad // P, 2 * P)
        trits[k] = _decode_trits(path, words, P).reshape(n, d_pad)
        if trits[k][:, d:].any():
            raise ImageError(f"{path}: padding columns {d}..{d_pad - 1} hold nonzero trits")
        a_q[k] = _read_ints(folder / f"scale{k + 1}.hex", n * (d_pad // G), S).reshape(n, -1)
    m_q = _read_ints(folder / "offset.hex", n * (d_pad // G), S).reshape(n, -1) if meta.offset else None
    perm = None
    if meta.perm:
        path = folder / "perm.hex"
        perm = _read_ints(path, d, _perm_bits(d))
        if not is_permutation(perm, d):
            raise ImageError(f"{path}: not a permutation of 0..{d - 1}")
    if meta.version == IMAGE_VERSION:
        _check_hashes(folder, meta)
    return HardwareImage(trits=trits, a_q=a_q, meta=meta, m_q=m_q, perm=perm)


def _word_counts(meta: ImageMeta) -> dict[str, tuple[int, int]]:
    """File name -> (words, bits per word) that layer.json implies."""
    groups = meta.n * meta.ng
    counts = {}
    for k in range(meta.planes):
        counts[f"plane{k + 1}.hex"] = (meta.n * meta.d_pad // meta.P, 2 * meta.P)
        counts[f"scale{k + 1}.hex"] = (groups, meta.S)
    if meta.offset:
        counts["offset.hex"] = (groups, meta.S)
    if meta.perm:
        counts["perm.hex"] = (meta.d, _perm_bits(meta.d))
    return counts


def _check_sizes(folder: Path, meta: ImageMeta) -> None:
    """Each file's size against layer.json's shape, coarsely (the line-by-line parse names the
    exact line): a file far from words x (digits + newline) bytes means layer.json's sizes are
    wrong, and nothing that large is allocated."""
    for name, (count, bits) in _word_counts(meta).items():
        path = folder / name
        if not path.is_file():
            raise ImageError(f"{path}: missing")
        line = -(-bits // 4) + 1
        size = path.stat().st_size
        if not count * line <= 2 * size and size <= 2 * count * (line + 1):
            raise ImageError(f"{path}: {size} bytes cannot hold {count} words of {bits} bits "
                             f"(layer.json: n={meta.n}, d_pad={meta.d_pad}, P={meta.P})")


def _check_hashes(folder: Path, meta: ImageMeta) -> None:
    files = meta.files if isinstance(meta.files, dict) else {}
    if sorted(files) != sorted(meta.file_names()):
        raise ImageError(f"{folder / 'layer.json'}: lists files {sorted(files)}, the layer needs "
                         f"{sorted(meta.file_names())}")
    for name, digest in files.items():
        if hashlib.sha256((folder / name).read_bytes()).hexdigest() != digest:
            raise ImageError(f"{folder / name}: SHA-256 does not match layer.json (edited or corrupt)")


def _read_ints(path: Path, count: int, bits: int) -> np.ndarray:
    """``count`` two's complement ``bits``-bit words of a hex file as int64."""
    nib = _read_words(path, count, bits).astype(np.int64)
    u = np.zeros(nib.shape[0], dtype=np.int64)
    for c in range(nib.shape[1]):
        u = (u << 4) | nib[:, c]
    return u - ((u >> (bits - 1)) & 1) * (1 << bits)
