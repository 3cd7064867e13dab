"""Export an artifact for hardware: the model image the engine reads, from DRAM or from its
on-chip ROM (``ptqtp hdl --rom``)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tqdm import tqdm

from ptqtp.formats.artifact import file_sha256, load_artifact
from ptqtp.formats.model_image import read_model_image, write_model_image
from ptqtp.formats.stream_layout import StreamLayout
from ptqtp.golden import GoldenLayer, IntConfig

__all__ = ["export_model_image", "MODEL_IMAGE_HEADERS"]

#: Column names of :func:`export_model_image`'s rows.
MODEL_IMAGE_HEADERS = ["layer", "n x d", "planes", "offset", "bytes"]


def export_model_image(
    artifact_path: Path,
    folder: Path,
    layout: StreamLayout,
    config: IntConfig,
    pattern: str = ".*",
    progress: bool = True,
) -> list:
    """Write the model image (``ptqtp.formats.model_image``) of every layer matching
    ``pattern``, in artifact order; returns summary rows (name, n x d, planes, offset,
    bytes)."""
    art = load_artifact(artifact_path)
    names = [n for n in art.layers if re.search(pattern, n)]
    if not names:
        raise ValueError(f"no layer matches {pattern!r}")
    layers = {
        name: GoldenLayer.from_packed(art.layers[name], config)
        for name in tqdm(names, desc="model image", unit="layer", file=sys.stderr, disable=not progress)
    }
    image = read_model_image(write_model_image(folder, layers, layout, file_sha256(artifact_path)))
    return [[e["name"], f"{e['n']}x{e['d']}", e["planes"], e["offset"], e["byte_size"]] for e in image.entries]
