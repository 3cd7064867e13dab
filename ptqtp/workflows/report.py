"""Small helpers for reports: a sample weight matrix, LLM-like test activations, Markdown
tables. Torch is imported only by :func:`sample_weight`."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["sample_weight", "random_activations", "markdown_table"]


def random_activations(m: int, d: int, seed: int = 0) -> np.ndarray:
    """LLM-like test inputs: Gaussian with a few outlier channels x10 (fixed seed)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, d))
    x[:, rng.choice(d, size=max(1, d // 128), replace=False)] *= 10
    return x


def sample_weight(n: int = 768, d: int = 2048, seed: int = 0):
    """The embedded default matrix: LLM-like weights, generated, identical on every machine.

    Student-t(4) entries (heavy tails, like trained linears), per-row scales spread
    log-normally, a few outlier input channels x8, overall std about 0.02.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    df = 4.0
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    chi2 = (torch.randn(n, d, int(df), generator=g, dtype=torch.float64) ** 2).sum(-1)
    t = z / torch.sqrt(chi2 / df)
    rows = torch.exp(0.3 * torch.randn(n, 1, generator=g, dtype=torch.float64))
    cols = torch.ones(1, d, dtype=torch.float64)
    cols[0, torch.randperm(d, generator=g)[: max(1, d // 256)]] = 8.0
    return (0.02 / math.sqrt(df / (df - 2)) * t * rows * cols).to(torch.float32)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub Markdown table; floats are shown with 4 significant digits."""

    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
