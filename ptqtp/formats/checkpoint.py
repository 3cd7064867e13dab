"""Quantize a safetensors checkpoint tensor by tensor, with bounded memory and resume.

Input: one ``.safetensors`` file, a folder holding ``model.safetensors`` or a sharded
``model.safetensors.index.json``, that index file, or a ``.gguf`` file (dequantized to
float32 tensor by tensor and named as transformers names them: ``gguf_source``). Each
tensor is read alone (``safe_open``); linear weights in decoder blocks are quantized, everything else copied.
Every finished tensor becomes a small part file in ``OUT.parts/`` (written atomically,
with its tensors' SHA-256), next to a manifest naming the source files by content (size
and SHA-256 of each file) and the parameters. A rerun with the same manifest skips
finished parts; a different one is refused, so an artifact never mixes runs. Finally the
parts are streamed into ``OUT`` (temporary name, then rename), the result is re-opened and
verified tensor by tensor, and only then is the parts folder removed. Peak memory: about
the largest tensor plus the quantizer's temporaries, not the model.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import sys
from collections import defaultdict
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from ptqtp.methods import MethodConfig, PTQTPConfig, method_of, quantize, resolve_config

from .artifact import (
    FORMAT_VERSION,
    ArtifactError,
    atomic_write,
    file_sha256,
    guard_tensors,
    layer_record,
    pack_layer,
    tensor_sha256,
    verify_artifact,
    with_hashes,
)
from .packing import check_packing

__all__ = ["checkpoint_files", "stream_quantize", "shard_of", "BLOCK_PATTERN"]

#: A module inside a decoder block: ``...layers.N.``, ``...h.N.`` (GPT-2) or ``...blocks.N.``.
BLOCK_PATTERN = re.compile(r"(^|\.)(layers|h|blocks)\.\d+\.")


def checkpoint_files(src: str | os.PathLike) -> list[Path]:
    """The safetensors files of a checkpoint (file, folder or index), in shard order."""
    src = Path(src)
    if src.is_file() and src.name.endswith(".index.json"):
        index, folder = src, src.parent
    elif src.is_file():
        return [src]
    elif src.is_dir():
        index, folder = src / "model.safetensors.index.json", src
        if not index.exists():
            single = sorted(src.glob("*.safetensors"))
            if len(single) != 1:
                raise ValueError(
                    f"{src}: expected one .safetensors file or model.safetensors.index.json, found {len(single)} files"
                )
            return single
    else:
        raise FileNotFoundError(f"{src}: no such checkpoint")
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (ValueError, KeyError) as e:
        raise ValueError(f"{index}: not a safetensors index ({e})") from None
    files = sorted(set(weight_map.values()))
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{index}: shard files missing: {missing}")
    return [folder / f for f in files]


def _hf_config(src: Path) -> dict | None:
    if src.is_file() and src.suffix.lower() == ".gguf":
        return _gguf(src).hf_config()
    folder = src if src.is_dir() else src.parent
    path = folder / "config.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _selected(key: str, include: re.Pattern, exclude: re.Pattern | None) -> bool:
    return key.endswith(".weight") and include.search(key) is not None and not (exclude and exclude.search(key))


def _not_quantizable(shape, dtype: str) -> str | None:
    """Why a selected ``*.weight`` is copied as it is (None: it is quantized)."""
    if len(shape) != 2:
        return f"{len(shape)}-D"
    if dtype not in ("F16", "BF16", "F32", "F64"):
        return f"dtype {dtype}"
    return None


def _keys(files: list[Path]) -> list[tuple[Path, str, tuple, str]]:
    """(file, key, shape, safetensors dtype) of every tensor; a key in two shards is an error.
    A ``.gguf`` file gives its tensors under transformers names (``gguf_source``)."""
    if len(files) == 1 and files[0].suffix.lower() == ".gguf":
        source = _gguf(files[0])
        return [(files[0], k, shape, dtype) for k, shape, dtype in source.entries()]
    keys: list = []
    seen: dict = {}
    for f in files:
        try:
            with safe_open(str(f), "pt") as h:
                for k in h.keys():
                    if k in seen:
                        raise ValueError(f"tensor {k!r} is in two shards: {seen[k].name} and {f.name}")
                    seen[k] = f
                    sl = h.get_slice(k)
                    keys.append((f, k, tuple(sl.get_shape()), sl.get_dtype()))
        except SafetensorError as e:
            raise ValueError(f"{f}: not a readable safetensors file (truncated or corrupt?): {e}") from None
    return keys


def _read(f: Path, key: str):
    try:
        if f.suffix.lower() == ".gguf":
            return _gguf(f).read(key)
        with safe_open(str(f), "pt") as h:
            return h.get_tensor(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"{f}: tensor {key!r} cannot be read (truncated or corrupt?): {e}") from None


_GGUF_CACHE: dict = {}


def _gguf(path: Path):
    """One open reader per GGUF file (memory-mapped; tensors are read one at a time)."""
    from .gguf_source import GGUFSource

    key = str(path.resolve())
    if key not in _GGUF_CACHE:
        _GGUF_CACHE.clear()
        _GGUF_CACHE[key] = GGUFSource(path)
    return _GGUF_CACHE[key]


def _check_paths(files: list[Path], out: Path, parts: Path) -> None:
    if out.is_dir():
        raise ValueError(f"{out}: is a folder; -o takes the artifact file to write")
    if parts.exists() and not parts.is_dir():
        raise ValueError(f"{parts}: exists and is not a folder (the parts folder of {out.name})")
    for f in files:
        if out.resolve() == f.resolve() or (out.exists() and os.path.samefile(out, f)):
            raise ValueError(f"{out}: is the input checkpoint; write the artifact elsewhere")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def stream_quantize(
    src: str | os.PathLike,
    out: str | os.PathLike,
    method: str | MethodConfig = "ptqtp",
    config: MethodConfig | None = None,
    include: str = BLOCK_PATTERN.pattern,
    exclude: str | None = None,
    progress: bool = True,
    log=_stderr,
    guards: bool = False,
    rank: int = 0,
    world: int = 1,
    barrier=None,
    packing: str = "2bit",
) -> Path:
    """Quantize checkpoint ``src`` into the artifact ``out`` (see module doc) with a
    data-free, packable method (a config, or a name with ``config`` as in ``quantize``).

    Raises
    ------
    ArtifactError: the parts folder belongs to another run (different source content or
        parameters), or the written artifact does not verify.
    ValueError: NaN/Inf weights (naming the tensor), an unreadable checkpoint, a key in two
        shards, an output that is the input or a folder, or nothing to quantize.

    ``log`` receives one line per kind of selected weight copied unquantized (not 2-D, or
    not floating point). ``guards`` stores each layer's empty ``NAME.weight`` guard (for a
    transformers model folder, ``artifact.GUARD``). ``packing`` packs the codes ("2bit" or
    "base3", ``ptqtp.formats.packing``).

    Distributed (``world`` processes, this one ``rank``; ``barrier()`` waits for all, e.g.
    ``torch.distributed.barrier``): rank 0 checks the sources and writes the manifest; the
    tensors are shared out by size (:func:`shard_of`), each rank writing its parts into the
    common parts folder; rank 0 assembles once all are done. The parts are the same as one
    process writes, so the artifact is byte-identical; a rank that dies leaves its finished
    parts for the rerun.
    """
    config = resolve_config(method, config or PTQTPConfig())
    spec = method_of(config)
    if spec.calibrated or not spec.packable:
        raise ValueError(f"streaming quantization takes a data-free trit-plane method, not {spec.name!r}")
    src, out = Path(src), Path(out)
    parts = out.with_name(out.name + ".parts")
    files = checkpoint_files(src)
    _check_paths(files, out, parts)
    hf = _hf_config(src)
    conv1d = (hf or {}).get("model_type") == "gpt2"  # GPT-2 Conv1D weights are stored (in, out)
    try:
        inc, exc = re.compile(include), re.compile(exclude) if exclude else None
    except re.error as e:
        raise ValueError(f"bad --include/--exclude regex: {e}") from None
    keys = _keys(files)
    skipped = defaultdict(list)
    for _, key, shape, dtype in keys:
        if _selected(key, inc, exc) and (why := _not_quantizable(shape, dtype)):
            skipped[why].append(key)
    if not any(_selected(k, inc, exc) and not _not_quantizable(sh, dt) for _, k, sh, dt in keys):
        raise ValueError(
            f"no 2-D floating-point '*.weight' of {src} matches --include {include!r}"
            f"{f' and not --exclude {exclude!r}' if exclude else ''} ({len(keys)} tensors): "
            f"nothing to quantize"
        )
    for why, names in skipped.items():
        log(f"copied unquantized ({why}): {len(names)} selected weight(s), e.g. {names[0]}")
    if not (isinstance(world, int) and world >= 1 and 0 <= rank < world) or (world > 1 and barrier is None):
        raise ValueError(f"rank {rank!r} of world {world!r} (with a barrier when world > 1)")
    mpath = parts / "manifest.json"
    run = {"method": spec.name, "include": include, "exclude": exclude, **config.to_metadata()}
    if check_packing(packing) != "2bit":  # 2-bit parts folders keep their manifest
        run["packing"] = packing
    if rank == 0:
        manifest = {"sources": [[f.name, f.stat().st_size, file_sha256(f)] for f in files], **run}
        parts.mkdir(parents=True, exist_ok=True)
        if mpath.exists():
            try:
                same = json.loads(mpath.read_text()) == manifest
            except ValueError:
                same = False
            if not same:
                raise ArtifactError(
                    f"{parts} holds parts of a different run (source content or parameters "
                    f"changed); delete it to start over"
                )
        else:
            atomic_write(mpath, lambda tmp: tmp.write_text(json.dumps(manifest)))
        for stale in [*parts.glob(".*.tmp"), *out.parent.glob(f".{out.name}.*.tmp")]:
            stale.unlink(missing_ok=True)  # left by a killed run; no rank writes yet
    if world > 1:
        barrier()  # rank 0 has checked the sources and written the manifest
        theirs = json.loads(mpath.read_text())
        if {k: theirs.get(k) for k in run} != run:
            raise ArtifactError(f"{parts}: the manifest's parameters differ from rank {rank}'s")
    mine = shard_of([shape for _, _, shape, _ in keys], rank, world)
    bar = tqdm(
        [(i, keys[i]) for i in mine],
        desc=f"quantize ({spec.name})" + (f" rank {rank}/{world}" if world > 1 else ""),
        unit="tensor",
        disable=not progress,
    )
    for i, (f, key, shape, dtype) in bar:
        part = parts / f"{i:06d}.safetensors"
        if part.exists():
            continue  # finished in an earlier run
        t = _read(f, key)
        if _selected(key, inc, exc) and not _not_quantizable(shape, dtype):
            name = key.removesuffix(".weight")
            w = t.t() if conv1d and "c_" in key else t
            r = quantize(w, config, name=name)
            tensors = {f"{name}.{suffix}": v for suffix, v in pack_layer(r, name, packing).items()}
            if guards:  # a transformers model folder's guard (artifact.GUARD)
                tensors.update(guard_tensors([name]))
            meta = {"record": json.dumps(layer_record(name, r, packing))}
            bar.set_postfix_str(f"{name}: {r.rel_error:.4f}")
        else:
            tensors, meta = {key: t.contiguous()}, {}
        meta["sha256"] = json.dumps({k: tensor_sha256(v) for k, v in tensors.items()})
        atomic_write(part, lambda tmp, ts=tensors, md=meta: save_file(ts, str(tmp), metadata=md))
        del t, tensors  # only one tensor in memory at a time
    if world > 1:
        barrier()  # every rank's parts are written
        if rank != 0:
            return out
    header = {"ptqtp.format": FORMAT_VERSION, **config.to_metadata()}
    if hf is not None:
        header["ptqtp.hf_config"] = json.dumps(hf)
    atomic_write(out, lambda tmp: _assemble(sorted(parts.glob("[0-9]*.safetensors")), tmp, header))
    verify_artifact(out)  # re-open what was written before reporting success
    shutil.rmtree(parts)
    return out


def shard_of(shapes: list[tuple], rank: int, world: int) -> list[int]:
    """The tensor indices rank ``rank`` of ``world`` quantizes: largest first, each to the
    rank with the fewest elements so far (ties: lower rank), in index order."""
    load = [0] * world
    owner = {}
    for i in sorted(range(len(shapes)), key=lambda i: (-math.prod(shapes[i]), i)):
        r = min(range(world), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += math.prod(shapes[i])
    return [i for i in range(len(shapes)) if owner[i] == rank]


def _read_header(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), 8 + n


def _assemble(parts: list[Path], dest: Path, metadata: dict) -> None:
    """Concatenate part files into one safetensors file without loading tensors; the header
    carries every part's tensor hashes (checked again by the final verification)."""
    entries, records, hashes, offset = [], [], {}, 0
    for p in parts:
        head, data_start = _read_header(p)
        meta = head.pop("__metadata__", {}) or {}
        if "record" in meta:
            records.append(json.loads(meta["record"]))
        hashes.update(json.loads(meta.get("sha256", "{}")))
        for name, info in sorted(head.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            begin, end = info["data_offsets"]
            entries.append((name, info, p, data_start + begin, end - begin, offset))
            offset += end - begin
    metadata = with_hashes(dict(metadata, **{"ptqtp.layers": json.dumps(records)}), hashes)
    header: dict[str, object] = {"__metadata__": metadata}
    for name, info, _, _, size, start in entries:
        header[name] = {"dtype": info["dtype"], "shape": info["shape"], "data_offsets": [start, start + size]}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(dest, "wb") as out:
        out.write(struct.pack("<Q", len(blob)))
        out.write(blob)
        for _, _, p, start, size, _ in entries:
            with open(p, "rb") as f:
                f.seek(start)
                remaining = size
                while remaining:
                    chunk = f.read(min(remaining, 1 << 24))
                    out.write(chunk)
                    remaining -= len(chunk)
