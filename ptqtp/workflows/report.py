"""Small helpers for reports: a sample weight matrix, Markdown tables."""

from __future__ import annotations

import math

import torch

__all__ = ["sample_weight", "markdown_table"]


def sample_weight(n: int = 768, d: int = 2048, seed: int = 0) -> torch.Tensor:
    """The embedded default matrix: LLM-like weights, generated, identical on every machine.

    Student-t(4) entries (heavy tails, like trained linears), per-row scales spread
    log-normally, a few outlier input channels x8, overall std about 0.02.
    """
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
