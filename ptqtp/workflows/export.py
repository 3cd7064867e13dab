"""Export hardware images (``$readmemh`` folders, one per layer) from an artifact."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tqdm import tqdm

from ptqtp.formats.artifact import file_sha256, load_artifact
from ptqtp.formats.hwimage import write_image
from ptqtp.golden import GoldenLayer, IntConfig

__all__ = ["export_layers", "EXPORT_HEADERS"]

#: Column names of :func:`export_layers`' rows.
EXPORT_HEADERS = ["layer", "n x d", "F", "ACC", "words/plane", "size"]


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
