"""Packed artifact: a complete safetensors checkpoint with trit-plane linears (docs/SPEC.md section 2).

For each quantized linear ``NAME``::

    NAME.tp_codes    uint8   [planes, n, d_pad / 4]  trit codes, see ptqtp.packing
    NAME.tp_scales   float16 [planes, n, ng]         a_k per plane, row, group
    NAME.tp_offsets  float16 [n, ng]                 offset m per row, group (PT^2-LLM only)
    NAME.tp_perm     int32   [d]                     stored column j = input column perm[j] (optional)
    NAME.bias        (unchanged, if the layer has one)

planes is 2 (PTQTP) or 1 (PT^2-LLM); the layer record's ``planes`` says which (absent: 2).

plus every other tensor unchanged. Header ``__metadata__``: ``ptqtp.format`` = "1",
``ptqtp.layers`` = JSON list of per-layer records, ``ptqtp.config`` = the quantizer's
parameters. Files are written to a temporary name and renamed, so a reader never sees
half a file; everything is validated on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ptqtp.golden import is_permutation
from ptqtp.methods import MethodConfig, TritPlaneResult, artifact_config, dequantize_planes

from .packing import invalid_code_positions, pack_trits, unpack_trits

__all__ = [
    "ArtifactError",
    "PackedLayer",
    "Artifact",
    "pack_layer",
    "save_artifact",
    "load_artifact",
    "file_sha256",
    "atomic_write",
    "LAYER_SUFFIXES",
    "FORMAT_VERSION",
]

FORMAT_VERSION = "1"
#: The tensors a quantized layer may store besides its bias.
LAYER_SUFFIXES = ("tp_codes", "tp_scales", "tp_offsets", "tp_perm")
_REQUIRED_INFO = ("name", "in_features", "out_features", "group_size", "method", "iterations", "rel_error")
_FP16_MAX = float(torch.finfo(torch.float16).max)


class ArtifactError(ValueError):
    """A packed artifact is missing, truncated, corrupt or inconsistent."""


@dataclass
class PackedLayer:
    """One quantized linear as stored: packed codes, float16 scales, optional bias."""

    name: str
    codes: torch.Tensor  # uint8 [planes, n, d_pad / 4]
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
        return int(self.codes.shape[-1]) * 4

    @property
    def planes(self) -> int:
        return int(self.codes.shape[0])

    def trits(self) -> torch.Tensor:
        """int8 trits [planes, n, d_pad]."""
        return unpack_trits(self.codes)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """W_hat (n, in_features), input column order, from the stored (float16) scales and offsets."""
        return dequantize_planes(self.trits(), self.scales, self.group_size, self.in_features, dtype, self.offsets,
                                 self.perm)


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


def pack_layer(result: TritPlaneResult, name: str) -> dict[str, torch.Tensor]:
    """The stored tensors of one result by suffix: ``tp_codes`` (uint8), ``tp_scales``
    (float16), and ``tp_offsets`` (float16) / ``tp_perm`` (int32) where the method has them.
    Scales and offsets must fit float16."""
    out = {"tp_codes": pack_trits(result.codes.detach().cpu()), "tp_scales": _float16(result.scales, name, "scale")}
    if result.offsets is not None:
        out["tp_offsets"] = _float16(result.offsets, name, "offset", flush_ok=True)
    if result.perm is not None:
        out["tp_perm"] = result.perm.detach().to("cpu", torch.int32)
    return out


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``; no partial file is ever left at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_artifact(
    path: str | os.PathLike,
    layers: dict[str, TritPlaneResult],
    tensors: dict[str, torch.Tensor] | None = None,
    config: MethodConfig | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write quantized ``layers`` (name -> result) and the other ``tensors`` atomically;
    ``config`` (the one really used) goes into the header as ``ptqtp.method`` + ``ptqtp.config``.

    Raises
    ------
    ArtifactError: a scale outside float16's range, or a tensor name clash.
    """
    tensors = dict(tensors or {})
    out: dict[str, torch.Tensor] = {}
    records = []
    for name, result in layers.items():
        for suffix, value in pack_layer(result, name).items():
            key = f"{name}.{suffix}"
            if key in tensors:
                raise ArtifactError(f"tensor {key!r} is both a quantized layer and a plain tensor")
            out[key] = value
        records.append({"name": name, **result.info()})
    for key, value in tensors.items():
        out[key] = value.detach().cpu().contiguous()
    header = {"ptqtp.format": FORMAT_VERSION, "ptqtp.layers": json.dumps(records)}
    if config is not None:
        header.update(config.to_metadata())
    header.update(metadata or {})
    path = Path(path)
    atomic_write(path, lambda tmp: save_file(out, str(tmp), metadata=header))
    return path


def _fail(path, msg: str):
    raise ArtifactError(f"{path}: {msg}")


def load_artifact(path: str | os.PathLike, device: str = "cpu") -> Artifact:
    """Read and validate an artifact.

    Raises
    ------
    ArtifactError: missing or truncated file, wrong format version, a layer record
        without its tensors (or tensors without a record), wrong dtypes or shapes,
        the invalid code 0b10, or non-finite scales -- each naming the layer.
    """
    path = Path(path)
    if not path.is_file():
        _fail(path, "no such artifact file")
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            metadata = f.metadata() or {}
            keys = list(f.keys())
            raw = {k: f.get_tensor(k) for k in keys}
    except (SafetensorError, OSError, RuntimeError) as e:
        _fail(path, f"not a readable safetensors file (truncated or corrupt?): {e}")
    if metadata.get("ptqtp.format") != FORMAT_VERSION:
        _fail(path, f"ptqtp.format is {metadata.get('ptqtp.format')!r}, expected {FORMAT_VERSION!r}")
    try:
        records = json.loads(metadata["ptqtp.layers"])
    except (KeyError, ValueError):
        records = None
    if not isinstance(records, list):
        _fail(path, "header ptqtp.layers is missing or not a JSON list")
    layers: dict[str, PackedLayer] = {}
    for rec in records:
        if not isinstance(rec, dict) or any(k not in rec for k in _REQUIRED_INFO):
            _fail(path, f"layer record {rec!r} lacks one of {_REQUIRED_INFO}")
        name = rec["name"]
        if name in layers:
            _fail(path, f"layer {name!r} is listed twice")
        layers[name] = _validated_layer(path, name, rec, raw)
    stray = [k for k in raw if k.endswith(tuple(f".{s}" for s in LAYER_SUFFIXES)) and k.rsplit(".", 1)[0] not in layers]
    if stray:
        _fail(path, f"tensors {stray} belong to no listed layer")
    quantized = {f"{n}.{s}" for n in layers for s in LAYER_SUFFIXES}
    tensors = {k: v for k, v in raw.items() if k not in quantized}
    for name, layer in layers.items():
        layer.bias = tensors.get(f"{name}.bias")
        if layer.bias is not None and tuple(layer.bias.shape) != (layer.out_features,):
            _fail(path, f"layer {name!r}: bias shape {tuple(layer.bias.shape)} != ({layer.out_features},)")
    return Artifact(layers=layers, tensors=tensors, metadata=metadata, path=path)


def _validated_layer(path, name: str, rec: dict, raw: dict) -> PackedLayer:
    try:
        n, d, G = int(rec["out_features"]), int(rec["in_features"]), int(rec["group_size"])
    except (TypeError, ValueError):
        _fail(path, f"layer {name!r}: non-integer shape fields in {rec!r}")
    if n < 1 or d < 1 or G < 4 or G % 4:
        _fail(path, f"layer {name!r}: invalid shape n={n}, d={d}, group_size={G}")
    ng = -(-d // G)
    planes = rec.get("planes", 2)
    if planes not in (1, 2):
        _fail(path, f"layer {name!r}: planes must be 1 or 2, not {planes!r}")
    expect = {
        "tp_codes": (torch.uint8, (planes, n, ng * G // 4)),
        "tp_scales": (torch.float16, (planes, n, ng)),
        "tp_offsets": (torch.float16, (n, ng)),
        "tp_perm": (torch.int32, (d,)),
    }
    got = {}
    for suffix, (dtype, shape) in expect.items():
        key = f"{name}.{suffix}"
        if key not in raw:
            if suffix in ("tp_offsets", "tp_perm"):
                got[suffix] = None
                continue
            _fail(path, f"layer {name!r}: tensor {key!r} is missing")
        t = raw[key]
        if t.dtype != dtype or tuple(t.shape) != shape:
            _fail(path, f"layer {name!r}: {key} is {t.dtype} {tuple(t.shape)}, expected {dtype} {shape}")
        got[suffix] = t
    bad = invalid_code_positions(got["tp_codes"])
    if len(bad):
        plane, row, col = (int(i) for i in bad[0])
        _fail(path, f"layer {name!r}: invalid trit code 0b10 at plane {plane}, row {row}, column {col} "
                    f"({len(bad)} in all)")
    pad = unpack_trits(got["tp_codes"])[..., d:]
    if bool(pad.any()):
        _fail(path, f"layer {name!r}: padding columns {d}..{ng * G - 1} hold nonzero trits")
    if not bool(torch.isfinite(got["tp_scales"]).all()):
        _fail(path, f"layer {name!r}: non-finite scales")
    if got["tp_offsets"] is not None and not bool(torch.isfinite(got["tp_offsets"]).all()):
        _fail(path, f"layer {name!r}: non-finite offsets")
    perm = got["tp_perm"]
    if perm is not None and not is_permutation(perm.cpu(), d):
        _fail(path, f"layer {name!r}: tp_perm is not a permutation of 0..{d - 1}")
    return PackedLayer(name=name, codes=got["tp_codes"], scales=got["tp_scales"], info=dict(rec),
                       offsets=got["tp_offsets"], perm=perm)
