"""Figures for reports (matplotlib, PNG): quantization error per layer and the A x S
error budget. The engine's resource and roofline figures are in ``ptqtp.workflows.dse``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

__all__ = ["pyplot", "error_histogram", "error_by_layer", "budget_heatmap", "layer_index"]


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def layer_index(name: str) -> int | None:
    """The decoder block number in a layer name (``model.layers.12.mlp.up_proj`` -> 12)."""
    m = re.search(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def error_histogram(path: Path, records: list[dict]) -> Path:
    """Histogram of the layers' relative weight error ||W - W_hat|| / ||W||."""
    plt = pyplot()
    errors = [float(r["rel_error"]) for r in records]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.hist(errors, bins=min(40, max(5, len(errors) // 4)), color="tab:blue", edgecolor="white")
    ax.set_xlabel("relative weight error per layer")
    ax.set_ylabel("layers")
    ax.set_title(f"{len(errors)} layers: median {np.median(errors):.4f}, max {max(errors):.4f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def error_by_layer(path: Path, records: list[dict]) -> Path:
    """Relative weight error against the block index, one line per layer kind."""
    plt = pyplot()
    kinds: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        i = layer_index(r["name"])
        if i is not None:
            kinds.setdefault(r["name"].rsplit(".", 1)[-1], []).append((i, float(r["rel_error"])))
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for kind, pts in sorted(kinds.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=kind)
    ax.set_xlabel("decoder block")
    ax.set_ylabel("relative weight error")
    ax.set_title("relative weight error by decoder block and layer kind", fontsize=9)
    ax.grid(True, lw=0.3)
    if kinds:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def budget_heatmap(
    path: Path,
    rows: list[dict],
    column: str = "integer output vs float planes",
    layer: str = "",
    default: tuple[int, int] | None = None,
) -> Path:
    """The A x S error budget (``ptqtp.workflows.budget.budget_sweep`` rows) of ``layer`` as a
    heat map of ``column`` (log colour scale), each cell labelled; ``default`` (A, S) is boxed."""
    plt = pyplot()
    from matplotlib.colors import LogNorm

    A = sorted({r["A"] for r in rows})
    S = sorted({r["S"] for r in rows})
    grid = np.full((len(S), len(A)), np.nan)
    for r in rows:
        grid[S.index(r["S"]), A.index(r["A"])] = r[column]
    fig, ax = plt.subplots(figsize=(1.3 * len(A) + 2, 0.8 * len(S) + 1.8))
    positive = grid[np.isfinite(grid) & (grid > 0)]
    norm = LogNorm(positive.min(), positive.max()) if positive.size and positive.min() < positive.max() else None
    im = ax.imshow(np.where(grid > 0, grid, np.nan), cmap="viridis_r", norm=norm, aspect="auto", origin="lower")
    for (i, j), v in np.ndenumerate(grid):
        dark = norm is not None and v > 0 and norm(v) > 0.5  # high errors are the dark end of viridis_r
        ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=8, color="w" if dark else "k")
    ax.set_xticks(range(len(A)), [str(a) for a in A])
    ax.set_yticks(range(len(S)), [str(s) for s in S])
    ax.set_xlabel("activation bits A")
    ax.set_ylabel("scale bits S")
    if default is not None and default[0] in A and default[1] in S:
        j, i = A.index(default[0]), S.index(default[1])
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2, ec="red"))
        ax.text(j, i + 0.32, "default", ha="center", va="center", fontsize=7, color="red")
    ax.set_title(f"{layer}: {column}" if layer else column, fontsize=9)
    fig.colorbar(im, ax=ax, label="relative output error")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
