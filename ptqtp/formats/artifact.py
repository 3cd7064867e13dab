"""Packed artifact: a complete safetensors checkpoint with trit-plane linears (docs/SPEC.md section 2).

For each quantized linear ``NAME``::

    NAME.tp_codes    uint8   [planes, n, d_pad / 4]  trit codes, see ptqtp.formats.packing
                             ([planes, n, ceil(d_pad / 5)] with the record's packing "base3")
    NAME.tp_scales   float16 [planes, n, ng]         a_k per plane, row, group
    NAME.tp_offsets  float16 [n, ng]                 offset m per row, group (PT^2-LLM only)
    NAME.tp_perm     int32   [d]                     stored column j = input column perm[j] (optional)
    NAME.bias        (unchanged, if the layer has one)

planes is 2 (PTQTP), 1 (PT^2-LLM, or PTQTP with K = 1), 3 or 4 (PTQTP with K planes); the
layer record's ``planes`` says which (absent: 2),
its ``packing`` how the codes are packed (absent: "2bit").

plus every other tensor unchanged. Header ``__metadata__``: ``ptqtp.format`` = "1",
``ptqtp.layers`` = JSON list of per-layer records (each says ``planes``, ``offset`` and
``perm``, so a layer needs exactly its tensors), ``ptqtp.config`` = the quantizer's
parameters, and ``ptqtp.sha256``: the SHA-256 of every tensor (dtype, shape and bytes, see
:func:`tensor_sha256`) and of the other ``ptqtp.*`` header entries, checked on load. Files
are written to a temporary name and renamed, so a reader never sees half a file;
everything is validated on load.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ptqtp.golden import is_permutation
from ptqtp.methods import MethodConfig, TritPlaneResult, artifact_config, dequantize_planes

from .atomic import atomic_write, json_sha256
from .packing import PACKINGS, TRITS_PER_BYTE, check_packing, invalid_bytes, pack_trits, packed_width, unpack_trits

__all__ = [
    "ArtifactError",
    "PackedLayer",
    "Artifact",
    "pack_layer",
    "save_artifact",
    "load_artifact",
    "verify_artifact",
    "artifact_metadata",
    "tensor_sha256",
    "header_sha256",
    "file_sha256",
    "atomic_write",
    "check_bias",
    "layer_record",
    "with_hashes",
    "LAYER_SUFFIXES",
    "GUARD",
    "guard_tensors",
    "FORMAT_VERSION",
]

FORMAT_VERSION = "1"
#: The tensors a quantized layer may store besides its bias.
LAYER_SUFFIXES = ("tp_codes", "tp_scales", "tp_offsets", "tp_perm")
#: A quantized layer may also store ``NAME.weight`` with shape [0]: in a transformers model
#: folder it makes plain transformers (without ``import ptqtp``) refuse the checkpoint with a
#: size mismatch instead of loading random weights into the layer.
GUARD = "weight"
_REQUIRED_INFO = ("name", "in_features", "out_features", "group_size", "method", "iterations", "rel_error")
#: Header entry holding the hashes; its key ``__header__`` covers the other ``ptqtp.*`` entries.
HASH_KEY = "ptqtp.sha256"
_HEADER_HASH = "__header__"
#: Methods whose layers always carry offsets (records written before ``offset`` was stored).
_OFFSET_METHODS = ("pt2", "pt2-itf")
_FP16_MAX = float(torch.finfo(torch.float16).max)


class ArtifactError(ValueError):
    """A packed artifact is missing, truncated, corrupt or inconsistent."""


@dataclass
class PackedLayer:
    """One quantized linear as stored: packed codes, float16 scales, optional bias."""

    name: str
    codes: torch.Tensor  # uint8 [planes, n, packed_width(d_pad, packing)]
    scales: torch.Tensor  # float16 [planes, n, ng]
    info: dict
    bias: torch.Tensor | None = None
    offsets: torch.Tensor | None = None  # float16 [n, ng]
    perm: torch.Tensor | None = None  # int32 [d]

    @property
    def in_features(self) -> int:
        return int(self.info["in_features"])

    @property
    def out_features(self) -> int:
        return int(self.info["out_features"])

    @property
    def group_size(self) -> int:
        return int(self.info["group_size"])

    @property
    def d_pad(self) -> int:
        return -(-self.in_features // self.group_size) * self.group_size

    @property
    def packing(self) -> str:
        return self.info.get("packing", "2bit")

    @property
    def planes(self) -> int:
        return int(self.codes.shape[0])

    def trits(self) -> torch.Tensor:
        """int8 trits [planes, n, d_pad]."""
        return unpack_trits(self.codes, self.packing, self.d_pad)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """W_hat (n, in_features), input column order, from the stored (float16) scales and offsets."""
        return dequantize_planes(
            self.trits(), self.scales, self.group_size, self.in_features, dtype, self.offsets, self.perm
        )


@dataclass
class Artifact:
    """A loaded artifact: quantized layers, the other tensors, and the header."""

    layers: dict[str, PackedLayer]
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)
    path: Path | None = None

    def config(self) -> MethodConfig | None:
        """The method config the artifact records (None if it records none)."""
        try:
            return artifact_config(self.metadata)
        except (ValueError, TypeError) as e:
            raise ArtifactError(f"{self.path}: bad ptqtp.config / ptqtp.method header: {e}") from None


def _float16(values: torch.Tensor, name: str, what: str, flush_ok: bool = False) -> torch.Tensor:
    """float16 values; overflow is refused, and so is a nonzero value that flushes to 0 unless
    ``flush_ok`` (an offset below 6e-8 is rounding noise; a scale of 0 would lose a group)."""
    values = values.detach().to("cpu", torch.float64)
    big = values.abs().max().item() if values.numel() else 0.0
    if big > _FP16_MAX:
        raise ArtifactError(f"{name}: {what} {big:.4g} overflows float16 (max {_FP16_MAX}); rescale the weights")
    half = values.to(torch.float16)
    lost = (values != 0) & (half == 0)
    if not flush_ok and bool(lost.any()):
        raise ArtifactError(
            f"{name}: {int(lost.sum())} nonzero {what}s underflow to 0 in float16 "
            f"(smallest {values[lost].abs().min().item():.3g}); rescale the weights"
        )
    return half


def pack_layer(result: TritPlaneResult, name: str, packing: str = "2bit") -> dict[str, torch.Tensor]:
    """The stored tensors of one result by suffix: ``tp_codes`` (uint8, in ``packing``),
    ``tp_scales`` (float16), and ``tp_offsets`` (float16) / ``tp_perm`` (int32) where the
    method has them. Scales and offsets must fit float16."""
    out = {
        "tp_codes": pack_trits(result.codes.detach().cpu(), check_packing(packing)),
        "tp_scales": _float16(result.scales, name, "scale"),
    }
    if result.offsets is not None:
        out["tp_offsets"] = _float16(result.offsets, name, "offset", flush_ok=True)
    if result.perm is not None:
        out["tp_perm"] = result.perm.detach().to("cpu", torch.int32)
    return out


def tensor_sha256(t: torch.Tensor) -> str:
    """SHA-256 of a tensor as stored: ``"<dtype> <shape>\\n"`` then its bytes (row-major), so a
    changed dtype or shape is caught like a flipped bit."""
    t = t.detach().to("cpu").contiguous()
    h = hashlib.sha256(f"{str(t.dtype).removeprefix('torch.')} {list(t.shape)}\n".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def header_sha256(metadata: dict[str, str]) -> str:
    """SHA-256 of the ``ptqtp.*`` header entries other than the hashes themselves."""
    return json_sha256({k: v for k, v in metadata.items() if k.startswith("ptqtp.")}, without=HASH_KEY)


def layer_record(name: str, result: TritPlaneResult, packing: str = "2bit") -> dict:
    """A layer's header record: its info, which optional tensors it stores, and its packing
    (only when not the default, so 2-bit artifacts stay as they were)."""
    rec = {"name": name, **result.info(), "offset": result.offsets is not None, "perm": result.perm is not None}
    if check_packing(packing) != "2bit":
        rec["packing"] = packing
    return rec


def with_hashes(metadata: dict[str, str], tensor_hashes: dict[str, str]) -> dict[str, str]:
    """``metadata`` plus ``ptqtp.sha256`` over ``tensor_hashes`` and the header itself."""
    return {**metadata, HASH_KEY: json.dumps({**tensor_hashes, _HEADER_HASH: header_sha256(metadata)}, sort_keys=True)}


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_artifact(
    path: str | os.PathLike,
    layers: dict[str, TritPlaneResult],
    tensors: dict[str, torch.Tensor] | None = None,
    config: MethodConfig | None = None,
    metadata: dict[str, str] | None = None,
    packing: str = "2bit",
) -> Path:
    """Write quantized ``layers`` (name -> result) and the other ``tensors`` atomically;
    ``config`` (the one really used) goes into the header as ``ptqtp.method`` + ``ptqtp.config``;
    ``packing`` ("2bit" or "base3", ``ptqtp.formats.packing``) packs every layer's codes.

    Raises
    ------
    ArtifactError: a scale outside float16's range, or a tensor name clash.
    """
    tensors = dict(tensors or {})
    out: dict[str, torch.Tensor] = {}
    records = []
    for name, result in layers.items():
        for suffix, value in pack_layer(result, name, packing).items():
            key = f"{name}.{suffix}"
            if key in tensors:
                raise ArtifactError(f"tensor {key!r} is both a quantized layer and a plain tensor")
            out[key] = value
        records.append(layer_record(name, result, packing))
        if f"{name}.bias" in tensors:
            check_bias(tensors[f"{name}.bias"], name, result.out_features)
    for key, value in tensors.items():
        out[key] = value.detach().cpu().contiguous()
    header = {"ptqtp.format": FORMAT_VERSION, "ptqtp.layers": json.dumps(records)}
    if config is not None:
        header.update(config.to_metadata())
    header.update(metadata or {})
    header = with_hashes(header, {k: tensor_sha256(v) for k, v in out.items()})
    path = Path(path)
    atomic_write(path, lambda tmp: save_file(out, str(tmp), metadata=header))
    return path


def guard_tensors(names) -> dict[str, torch.Tensor]:
    """The empty ``NAME.weight`` guard of every quantized layer name (see ``GUARD``)."""
    return {f"{n}.{GUARD}": torch.zeros(0, dtype=torch.float16) for n in names}


def check_bias(bias, name: str, n: int, path=None) -> None:
    """A layer's bias must be a finite floating-point vector of ``n`` values."""
    where = f"{path}: layer {name!r}" if path else f"layer {name!r}"
    if not isinstance(bias, torch.Tensor) or not bias.is_floating_point():
        raise ArtifactError(
            f"{where}: bias must be a floating-point tensor, not {getattr(bias, 'dtype', type(bias).__name__)}"
        )
    if tuple(bias.shape) != (n,):
        raise ArtifactError(f"{where}: bias shape {tuple(bias.shape)} != ({n},)")
    if not bool(torch.isfinite(bias).all()):
        raise ArtifactError(f"{where}: bias holds NaN or Inf")


def _fail(path, msg: str) -> NoReturn:
    raise ArtifactError(f"{path}: {msg}")


class _LazyTensors(Mapping):
    """The tensors of a safetensors file, each read on access with the file opened just for
    it (a file kept mapped would count every page read into the resident memory)."""

    def __init__(self, path: Path, keys: list[str]):
        self._path, self._keys = path, keys

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        with safe_open(str(self._path), framework="pt") as f:
            return f.get_tensor(key)

    def __contains__(self, key):
        return key in self._keys

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)


def load_artifact(path: str | os.PathLike, device: str = "cpu", verify: bool = True) -> Artifact:
    """Read and validate an artifact.

    ``verify=False`` skips the SHA-256 checks (for speed; never the default: a flipped bit
    must be reported). An artifact written before hashes were stored loads with
    ``metadata`` lacking ``ptqtp.sha256`` and is checked structurally only.

    Raises
    ------
    ArtifactError: missing or truncated file, wrong format version, a layer record
        without exactly its tensors (or tensors without a record), wrong dtypes or shapes,
        the invalid code 0b10, non-finite scales or bias, or a hash mismatch -- each naming
        the file and the layer or tensor.
    """
    path = _artifact_file(path)
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            metadata = f.metadata() or {}
            raw = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        _open_failed(path, e)
    layers, tensors = _validate(path, metadata, raw, verify)
    return Artifact(layers=layers, tensors=tensors, metadata=metadata, path=path)


def verify_artifact(path: str | os.PathLike) -> int:
    """Check an artifact as :func:`load_artifact` does, holding one tensor at a time (for
    checkpoints larger than memory); returns the number of quantized layers."""
    path = _artifact_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata, keys = f.metadata() or {}, list(f.keys())
        layers, _ = _validate(path, metadata, _LazyTensors(path, keys), True, keep=False)
    except (SafetensorError, OSError, RuntimeError) as e:
        _open_failed(path, e)
    return len(layers)


def artifact_metadata(path: str | os.PathLike) -> dict[str, str]:
    """An artifact's header alone (format and header hash checked, no tensor read): for
    work on an artifact just written and verified."""
    path = _artifact_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, RuntimeError) as e:
        _open_failed(path, e)
    _check_format(path, metadata)
    _hashes(path, metadata)
    return metadata


def _artifact_file(path) -> Path:
    """The artifact file of ``path``: the file itself, or a model folder's ``model.safetensors``."""
    path = Path(path)
    if path.is_dir():
        if not (path / "model.safetensors").is_file():
            _fail(path, "is a folder without model.safetensors (not a quantized model folder)")
        return path / "model.safetensors"
    return path


def _open_failed(path: Path, e: Exception):
    if not path.exists():
        _fail(path, "no such artifact file")
    if path.is_dir():
        _fail(path, "is a folder, not an artifact file")
    if not os.access(path, os.R_OK):
        _fail(path, "not readable (permission denied)")
    _fail(path, f"not a readable safetensors file (truncated or corrupt?): {e}")


def _hashes(path: Path, metadata: dict) -> dict | None:
    if HASH_KEY not in metadata:
        return None  # written before hashes existed
    try:
        hashes = json.loads(metadata[HASH_KEY])
        if not isinstance(hashes, dict) or not all(isinstance(v, str) for v in hashes.values()):
            raise ValueError("not a JSON object of strings")
    except ValueError as e:
        _fail(path, f"header {HASH_KEY} is malformed ({e})")
    if hashes.get(_HEADER_HASH) != header_sha256(metadata):
        _fail(path, "header (ptqtp.layers / ptqtp.config / ...) does not match its SHA-256: edited or corrupt")
    return hashes


def _check_format(path: Path, metadata: dict) -> None:
    fmt = metadata.get("ptqtp.format")
    if fmt is None:
        _fail(
            path,
            "a safetensors file but not a ptqtp artifact (no ptqtp metadata); quantize the checkpoint "
            "with `ptqtp quantize` to make one",
        )
    if fmt != FORMAT_VERSION:
        _fail(path, f"ptqtp.format is {fmt!r}, expected {FORMAT_VERSION!r}")


def _validate(path: Path, metadata: dict, raw: Mapping, verify: bool, keep: bool = True):
    """(layers, other tensors) of an open artifact, every check applied."""
    _check_format(path, metadata)
    hashes = _hashes(path, metadata) if verify else None
    if hashes is not None:
        unhashed = sorted(set(raw) - set(hashes))
        missing = sorted(set(hashes) - set(raw) - {_HEADER_HASH})
        if unhashed or missing:
            _fail(
                path,
                f"tensors {unhashed or missing} {'have no hash' if unhashed else 'are missing'} "
                f"(ptqtp.sha256 lists the file's tensors)",
            )
    try:
        records = json.loads(metadata["ptqtp.layers"])
    except (KeyError, ValueError):
        records = None
    if not isinstance(records, list):
        _fail(path, "header ptqtp.layers is missing or not a JSON list")

    def tensor(key: str) -> torch.Tensor:
        t = raw[key]
        if hashes is not None and tensor_sha256(t) != hashes[key]:
            owner = next(
                (
                    f"layer {r['name']!r}: "
                    for r in records
                    if isinstance(r, dict) and isinstance(r.get("name"), str) and key.startswith(r["name"] + ".")
                ),
                "",
            )
            _fail(path, f"{owner}tensor {key!r} does not match its SHA-256 (corrupt or edited)")
        return t

    layers: dict[str, PackedLayer | None] = {}  # None: checked, not kept
    for rec in records:
        if not isinstance(rec, dict) or any(k not in rec for k in _REQUIRED_INFO):
            _fail(path, f"layer record {str(rec)[:200]} lacks one of {_REQUIRED_INFO}")
        name = rec["name"]
        if not isinstance(name, str) or not name:
            _fail(path, f"layer record has a name that is not a string: {name!r}")
        if name in layers:
            _fail(path, f"layer {name!r} is listed twice")
        layer = _validated_layer(path, name, rec, raw, tensor)
        bias_key = f"{name}.bias"
        if bias_key in raw:
            layer.bias = tensor(bias_key)
            check_bias(layer.bias, name, layer.out_features, path)
        guard = f"{name}.{GUARD}"
        if guard in raw and tuple(tensor(guard).shape) != (0,):
            _fail(
                path,
                f"layer {name!r}: {guard} is {tuple(tensor(guard).shape)}; in a quantized layer it is the "
                f"empty guard tensor (shape [0])",
            )
        if keep:
            layers[name] = layer
        else:
            layers[name] = None
    stray = [k for k in raw if k.endswith(tuple(f".{s}" for s in LAYER_SUFFIXES)) and k.rsplit(".", 1)[0] not in layers]
    if stray:
        _fail(path, f"tensors {stray} belong to no listed layer")
    quantized = {f"{n}.{s}" for n in layers for s in (*LAYER_SUFFIXES, GUARD)}
    tensors = {}
    for k in raw:
        if k not in quantized:
            t = tensor(k)
            if keep:
                tensors[k] = t
    return layers, tensors


def _int_field(path, name: str, rec: dict, key: str) -> int:
    v = rec[key]
    if (
        isinstance(v, bool)
        or not isinstance(v, (int, float))
        or not math.isfinite(v)
        or v != int(v)
        or not 0 < v < 1 << 31
    ):
        _fail(path, f"layer {name!r}: {key} must be a positive integer below 2^31, not {v!r}")
    return int(v)


def _validated_layer(path, name: str, rec: dict, raw: Mapping, tensor) -> PackedLayer:
    n, d, G = (_int_field(path, name, rec, k) for k in ("out_features", "in_features", "group_size"))
    if G < 4 or G % 4:
        _fail(path, f"layer {name!r}: invalid group_size {G} (a positive multiple of 4)")
    ng = -(-d // G)
    planes = rec.get("planes", 2)
    if planes not in (1, 2, 3, 4) or isinstance(planes, bool):
        _fail(path, f"layer {name!r}: planes must be 1, 2, 3 or 4, not {planes!r}")
    packing = rec.get("packing", "2bit")
    if packing not in PACKINGS:
        _fail(path, f"layer {name!r}: packing must be one of {PACKINGS}, not {packing!r}")
    # Which optional tensors the layer stores; records from before these fields say it by method.
    needs = {"tp_offsets": rec.get("offset", rec["method"] in _OFFSET_METHODS), "tp_perm": rec.get("perm")}
    for suffix, want in needs.items():
        if want is not None and not isinstance(want, bool):
            _fail(
                path,
                f"layer {name!r}: record field {suffix.removeprefix('tp_').replace('offsets', 'offset')} "
                f"must be true or false, not {want!r}",
            )
    expect = {
        "tp_codes": (torch.uint8, (planes, n, packed_width(ng * G, packing))),
        "tp_scales": (torch.float16, (planes, n, ng)),
        "tp_offsets": (torch.float16, (n, ng)),
        "tp_perm": (torch.int32, (d,)),
    }
    got: dict[str, torch.Tensor | None] = {}
    for suffix, (dtype, shape) in expect.items():
        key = f"{name}.{suffix}"
        want = needs.get(suffix, True)
        if key not in raw:
            if want:
                _fail(path, f"layer {name!r}: tensor {key!r} is missing (the record says the layer has it)")
            got[suffix] = None
            continue
        if want is False:
            _fail(path, f"layer {name!r}: tensor {key!r} is present but the record says the layer has none")
        t = tensor(key)
        if t.dtype != dtype or tuple(t.shape) != shape:
            _fail(path, f"layer {name!r}: {key} is {t.dtype} {tuple(t.shape)}, expected {dtype} {shape}")
        got[suffix] = t
    codes, scales = got["tp_codes"], got["tp_scales"]
    if codes is None or scales is None:  # both always required above
        _fail(path, f"layer {name!r}: codes or scales missing")
    bad = invalid_bytes(codes, packing)
    if len(bad):
        plane, row, j = (int(i) for i in bad[0])
        byte = int(codes[plane, row, j])
        if packing == "2bit":
            col = 4 * j + next(i for i in range(4) if (byte >> 2 * i) & 3 == 0b10)
            what = f"invalid trit code 0b10 at plane {plane}, row {row}, column {col}"
        else:
            what = (
                f"base-3 byte value {byte} >= 243 at plane {plane}, row {row}, byte {j} (columns {5 * j}..{5 * j + 4})"
            )
        _fail(path, f"layer {name!r}: {what} ({len(bad)} bad bytes in all)")
    per = TRITS_PER_BYTE[packing]
    pad = unpack_trits(codes[..., d // per :], packing)[..., d % per :]  # only the bytes holding padding
    if bool(pad.any()):
        _fail(path, f"layer {name!r}: padding columns {d}..{codes.shape[-1] * per - 1} hold nonzero trits")
    if not bool(torch.isfinite(scales).all()):
        _fail(path, f"layer {name!r}: non-finite scales")
    if got["tp_offsets"] is not None and not bool(torch.isfinite(got["tp_offsets"]).all()):
        _fail(path, f"layer {name!r}: non-finite offsets")
    perm = got["tp_perm"]
    if perm is not None and not is_permutation(perm.cpu(), d):
        _fail(path, f"layer {name!r}: tp_perm is not a permutation of 0..{d - 1}")
    return PackedLayer(name=name, codes=codes, scales=scales, info=dict(rec), offsets=got["tp_offsets"], perm=perm)
