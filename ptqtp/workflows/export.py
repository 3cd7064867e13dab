"""Export an artifact for hardware: per-layer hardware images (``$readmemh`` folders for ROM
flows) or one model image for the streaming engine."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tqdm import tqdm

from ptqtp.formats.artifact import file_sha256, load_artifact
from ptqtp.formats.hwimage import write_image
from ptqtp.formats.model_image import read_model_image, write_model_image
from ptqtp.formats.stream_layout import StreamLayout
from ptqtp.golden import GoldenLayer, IntConfig

__all__ = ["export_layers", "export_model_image", "EXPORT_HEADERS", "MODEL_IMAGE_HEADERS"]

#: Column names of :func:`export_layers`' rows.
EXPORT_HEADERS = ["layer", "n x d", "F", "ACC", "words/plane", "size"]
#: Column names of :func:`export_model_image`'s rows.
MODEL_IMAGE_HEADERS = ["layer", "n x d", "planes", "offset", "bytes"]


def export_layers(artifact_path: Path, out: Path, lanes: int, config: IntConfig, pattern: str = ".*",
                  progress: bool = True) -> list:
    """Write one hardware image folder per layer matching ``pattern``; returns summary rows."""
    art = load_artifact(artifact_path)
    sha = file_sha256(artifact_path)
    names = [n for n in art.layers if re.search(pattern, n)]
    if not names:
        raise ValueError(f"no layer matches {pattern!r}")
    rows = []
    for name in tqdm(names, desc="export", unit="layer", file=sys.stderr, disable=not progress):
        golden = GoldenLayer.from_packed(art.layers[name], config)
        folder = write_image(Path(out) / name, golden, lanes, name, sha)
        size = sum(p.stat().st_size for p in folder.iterdir())
        rows.append([name, f"{golden.n}x{golden.d}", golden.F, golden.acc_bits, golden.n * golden.d_pad // lanes,
                     f"{size / 1024:.1f} KiB"])
    return rows


def export_model_image(artifact_path: Path, folder: Path, layout: StreamLayout, config: IntConfig,
                       pattern: str = ".*", progress: bool = True) -> list:
    """Write the model image (``ptqtp.formats.model_image``) of every layer matching
    ``pattern``, in artifact order; returns summary rows (name, n x d, planes, offset,
    bytes)."""
    art = load_artifact(artifact_path)
    names = [n for n in art.layers if re.search(pattern, n)]
    if not names:
        raise ValueError(f"no layer matches {pattern!r}")
    layers = {name: GoldenLayer.from_packed(art.layers[name], config)
              for name in tqdm(names, desc="model image", unit="layer", file=sys.stderr, disable=not progress)}
    image = read_model_image(write_model_image(folder, layers, layout, file_sha256(artifact_path)))
    return [[e["name"], f"{e['n']}x{e['d']}", e["planes"], e["offset"], e["byte_size"]] for e in image.entries]
