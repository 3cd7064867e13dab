"""Atomic file writes (nothing half-written is ever left at the destination) and the
canonical JSON digest every self-checking header uses."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "json_sha256"]


def json_sha256(fields: dict, without: str | None = None) -> str:
    """Hex SHA-256 of ``fields`` (minus the key ``without``) as compact sorted-key JSON."""
    rest = {k: v for k, v in fields.items() if k != without}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


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
