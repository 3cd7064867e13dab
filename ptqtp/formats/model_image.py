"""Model image: every quantized layer of an artifact in the engine's memory order (docs/SPEC.md section 6).

A folder with two files::

    weights.bin     the layers' regions one after another, each in the stream layout
                    (ptqtp.formats.stream_layout) and starting at a multiple of ``align``
                    bytes (default 4096: a DMA burst never crosses a 4 KiB boundary); zero fill
    manifest.json   {"format": "ptqtp-model-image", "version": 1, "layout": {lanes, rows,
                    planes, offset, group_size, scale_bits, data_width}, "act_bits", "align",
                    "source_sha256", "blob": "weights.bin", "blob_bytes", "blob_sha256",
                    "layers": [{name, n, d, d_pad, G, planes, offset, F, ACC, byte_offset,
                    byte_size, beats, sha256, perm}], "sha256"}

``perm`` is the stored column order (a list of d indices) or null; ``sha256`` hashes the
layer's region followed by its entry's fields (name, n, d, d_pad, G, planes, offset, F,
ACC, perm as compact sorted-key JSON), so an edited F (a free exponent: it would scale the
layer's output silently) is caught like a flipped bit; the manifest's own ``sha256`` covers
every other field of it (layout, act_bits, offsets), compact sorted-key JSON. A layer's
descriptor is its (n, d_pad / P, byte_offset, beats).
:func:`read_model_image` checks every field and hash and gives the golden layers back
bit-exactly; the manifest is written last, so a folder without one is not an image.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

from ptqtp.golden import GoldenLayer, IntConfig, is_permutation

from .atomic import json_sha256
from .stream_layout import StreamLayout

__all__ = ["ModelImage", "ModelImageError", "write_model_image", "read_model_image", "MODEL_IMAGE_VERSION"]

MODEL_IMAGE_VERSION = 2  # 2 added the manifest's own sha256
_FORMAT = "ptqtp-model-image"
_BLOB = "weights.bin"


class ModelImageError(ValueError):
    """A model image is missing, malformed, inconsistent or corrupt; names the file and layer."""


@dataclass
class ModelImage:
    """A read model image: its layout, the layers' manifest entries and golden layers."""

    folder: Path
    layout: StreamLayout
    act_bits: int
    entries: list[dict]
    layers: dict[str, GoldenLayer]
    source_sha256: str

    @property
    def blob(self) -> Path:
        return self.folder / _BLOB

    def blob_bytes(self) -> bytes:
        return self.blob.read_bytes()


_HASHED = ("name", "n", "d", "d_pad", "G", "planes", "offset", "F", "ACC", "perm")


def _digest(region: bytes, entry: dict) -> str:
    fields = json.dumps({k: entry.get(k) for k in _HASHED}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(region + fields.encode()).hexdigest()


def _manifest_digest(man: dict) -> str:
    return json_sha256(man, without="sha256")


def write_model_image(
    folder: str | os.PathLike,
    layers: dict[str, GoldenLayer],
    layout: StreamLayout,
    source_sha256: str = "",
    align: int = 4096,
) -> Path:
    """Write the image of ``layers`` (name -> golden layer, in order) for ``layout``, atomically.

    Raises
    ------
    ValueError: a layer that does not run on the layout (planes, offsets, group size,
        scale bits), different activation bits across layers, or a bad ``align``.
    """
    if not isinstance(align, int) or align < layout.word_bytes or align & (align - 1):
        raise ValueError(f"align must be a power of two >= {layout.word_bytes}, not {align!r}")
    if not layers:
        raise ValueError("a model image needs at least one layer")
    act_bits = {g.config.act_bits for g in layers.values()}
    if len(act_bits) != 1:
        raise ValueError(f"layers disagree on the activation bits A: {sorted(act_bits)}")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        entries, offset = [], 0
        blob_hash = hashlib.sha256()
        with open(tmp / _BLOB, "wb") as blob:
            for name, g in layers.items():
                if g.group_size != layout.group_size or g.config.scale_bits != layout.scale_bits:
                    raise ValueError(
                        f"{name}: G={g.group_size}, S={g.config.scale_bits} do not match the layout's "
                        f"G={layout.group_size}, S={layout.scale_bits}"
                    )
                try:
                    region = layout.encode(g.trits, g.a_q, g.m_q)
                except ValueError as e:
                    raise ValueError(f"{name}: {e}") from None
                pad = -offset % align
                blob.write(b"\0" * pad)
                blob_hash.update(b"\0" * pad)
                offset += pad
                blob.write(region)
                blob_hash.update(region)
                entry = {
                    "name": name,
                    "n": g.n,
                    "d": g.d,
                    "d_pad": g.d_pad,
                    "G": g.group_size,
                    "planes": g.planes,
                    "offset": g.m_q is not None,
                    "F": g.F,
                    "ACC": g.acc_bits,
                    "byte_offset": offset,
                    "byte_size": len(region),
                    "beats": len(region) // layout.word_bytes,
                    "perm": None if g.perm is None else [int(i) for i in g.perm],
                }
                entry["sha256"] = _digest(region, entry)
                entries.append(entry)
                offset += len(region)
        manifest = {
            "format": _FORMAT,
            "version": MODEL_IMAGE_VERSION,
            "layout": asdict(layout),
            "act_bits": act_bits.pop(),
            "align": align,
            "source_sha256": source_sha256,
            "blob": _BLOB,
            "blob_bytes": offset,
            "blob_sha256": blob_hash.hexdigest(),
            "layers": entries,
        }
        manifest["sha256"] = _manifest_digest(manifest)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _fail(path, msg: str) -> NoReturn:
    raise ModelImageError(f"{path}: {msg}")


def read_model_image(folder: str | os.PathLike, verify: bool = True) -> ModelImage:
    """Read and check a model image; ``verify=False`` skips the SHA-256 of the blob and regions
    (never the default: a flipped bit must be reported).

    Raises
    ------
    ModelImageError: a missing file, a malformed manifest, a wrong size or hash (naming the
        layer), or a region that does not decode (invalid code, data in padding).
    """
    folder = Path(folder)
    mpath = folder / "manifest.json"
    if not mpath.is_file():
        _fail(mpath, "missing (not a model image; `ptqtp export ARTIFACT -o DIR` writes one)")
    try:
        man = json.loads(mpath.read_text())
        if man.get("version") == 1:
            raise ValueError("version 1 (before the manifest hash): export the image again")
        if man.get("sha256") != _manifest_digest(man):
            raise ValueError("fields do not match the manifest's sha256 (edited or corrupt)")
        layout = StreamLayout(**man["layout"])
        act_bits, entries = int(man["act_bits"]), list(man["layers"])
        config = IntConfig(act_bits, layout.scale_bits)
        align = man["align"]
        if not isinstance(align, int) or align < layout.word_bytes or align & (align - 1):
            raise ValueError(f"align {align!r} is not a power of two >= a word")
        if man.get("format") != _FORMAT or man.get("version") != MODEL_IMAGE_VERSION:
            raise ValueError(f"format {man.get('format')!r} version {man.get('version')!r}")
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as err:
        _fail(mpath, f"malformed manifest ({err})")
    blob_path = folder / _BLOB
    if not blob_path.is_file():
        _fail(blob_path, "missing")
    blob = blob_path.read_bytes()
    if len(blob) != man.get("blob_bytes"):
        _fail(blob_path, f"{len(blob)} bytes, the manifest says {man.get('blob_bytes')}")
    if verify and hashlib.sha256(blob).hexdigest() != man.get("blob_sha256"):
        _fail(blob_path, "SHA-256 does not match the manifest (corrupt or edited)")
    layers: dict[str, GoldenLayer] = {}
    end = 0  # regions tile the blob: each at the next multiple of align, nothing after the last
    for e in entries:
        name = e.get("name") if isinstance(e, dict) else None
        try:
            n, d, d_pad, G, planes, F = (int(e[k]) for k in ("n", "d", "d_pad", "G", "planes", "F"))
            start, size, offset = int(e["byte_offset"]), int(e["byte_size"]), e["offset"]
            if (
                not isinstance(offset, bool)
                or G != layout.group_size
                or size != layout.layer_bytes(n, d_pad, planes)
                or start % layout.word_bytes
                or start + size > len(blob)
                or int(e["beats"]) * layout.word_bytes != size
                or name in layers
                or not isinstance(name, str)
                or start != end + (-end % align)
            ):
                raise ValueError("inconsistent shape, size, offset or name")
            end = start + size
        except (ValueError, KeyError, TypeError, OverflowError) as err:
            _fail(mpath, f"layer {name!r}: bad entry ({err})")
        region = blob[start : start + size]
        if verify and _digest(region, e) != e.get("sha256"):
            _fail(blob_path, f"layer {name!r}: region SHA-256 does not match the manifest (region or entry edited)")
        try:
            trits, a_q, m_q = layout.decode(region, n, d_pad, planes, offset)
            perm = None if e.get("perm") is None else np.asarray(e["perm"], dtype=np.int64)
            if perm is not None and not is_permutation(perm, d):
                raise ValueError(f"perm is not a permutation of 0..{d - 1}")
            g = GoldenLayer.from_fixed_point(trits, a_q, F, d, G, config, m_q, perm)
            if g.acc_bits != int(e["ACC"]):
                raise ValueError(f"ACC {e['ACC']} disagrees with the golden model's {g.acc_bits}")
        except (ValueError, KeyError, TypeError, OverflowError) as err:
            _fail(blob_path, f"layer {name!r}: {err}")
        layers[str(name)] = g
    if end != len(blob):
        _fail(
            blob_path,
            f"{len(blob) - end} bytes after the last layer's region (the manifest lists {len(entries)} layers)",
        )
    return ModelImage(
        folder=folder,
        layout=layout,
        act_bits=act_bits,
        entries=entries,
        layers=layers,
        source_sha256=str(man.get("source_sha256", "")),
    )
