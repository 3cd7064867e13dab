"""Quality against speed (``ptqtp dse --quality``): perplexity per allocation against
whole-token decode tokens/s per board.

An *allocation* is one row of ``ptqtp eval --json``: a method (every layer at its plane
count) or a mixed-precision budget (``METHOD@B``, its ``planes`` per layer), with the
perplexity measured for it. Each is planned on the engine (both packings) with the integer
decoder's whole token (``plan.whole_token_plan``: linears with each layer's K in passes,
int8 lm_head, KV cache at the context, embedding row, norms), so the bytes the K planes cost
are the bytes the board reads. Rows the engine cannot run (uniform-grid baselines) are
references: their perplexity only.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ptqtp.hdl.engine_model import EngineParams

from .figures import pyplot
from .plan import Board, DecoderUnit, LayerShape, whole_token_plan

__all__ = ["layer_planes", "quality_points", "quality_front", "best_under_target", "plot_quality_front"]


def layer_planes(row: dict, layers: list[LayerShape]) -> dict[str, int] | None:
    """Each layer's plane count in an eval row (its ``planes``, or its method's uniform K);
    None for a row the engine cannot run (fp, RTN, GPTQ's uniform grids)."""
    from ptqtp.methods import REGISTRY

    if "planes" in row:
        missing = sorted({layer.name for layer in layers} - set(row["planes"]))
        if missing:
            raise ValueError(f"row {row['method']!r}: no plane count for {missing[0]} (and {len(missing) - 1} more)")
        return {layer.name: int(row["planes"][layer.name]) for layer in layers}
    spec = REGISTRY.get(str(row["method"]).split("@")[0])
    if spec is None or not spec.packable or spec.offsets or spec.planes < 1:
        return None
    return {layer.name: spec.planes for layer in layers}  # stored planes, a zero one included


def quality_points(
    rows: list[dict],
    layers: list[LayerShape],
    params: EngineParams,
    boards: list[Board],
    arch,
    fmt,
    context: int = 512,
    unit: DecoderUnit | None = None,
) -> tuple[list[dict], list[dict]]:
    """(points, references): a point per (board, runnable row, packing, engine datapath of 1
    or 2 planes) with its perplexity, bits per weight, whole-token tokens/s and tokens/s per
    GB/s; a reference per other row. A one-plane datapath streams exactly K planes a layer
    (K passes); a two-plane one pads an odd K with a zero plane, twice the cycles per pass
    saved against those bytes."""
    points, refs = [], []
    for row in rows:
        planes = layer_planes(row, layers)
        if planes is None:
            if row["method"] != "fp":
                refs.append({"method": row["method"], "perplexity": row["perplexity"], "bits": row.get("bits")})
            continue
        shaped = [replace(layer, planes=planes[layer.name]) for layer in layers]
        for board in boards:
            for packing, datapath in ((pk, dp) for pk in ("2bit", "base3") for dp in (1, 2)):
                engine = replace(params, packing=packing, planes=datapath, max_planes=4)
                w = whole_token_plan(shaped, engine, board, arch, fmt, context, unit)
                points.append(
                    {
                        "board": board.key,
                        "method": row["method"],
                        "packing": packing,
                        "engine_planes": datapath,
                        "bits": row.get("bits"),
                        "perplexity": row["perplexity"],
                        "tokens_per_s": w["token_tokens_per_s"],
                        "tokens_per_s_per_gbs": w["tokens_per_s_per_gbs"],
                        "token_bytes": w["token_bytes"],
                        "linear_bytes": w["parts"]["linears"]["bytes"],
                    }
                )
    return points, refs


def quality_front(points: list[dict], board: str) -> list[dict]:
    """The board's points no other beats on both perplexity (lower) and tokens/s (higher), by tokens/s."""
    mine = [p for p in points if p["board"] == board]
    front = [
        p
        for p in mine
        if not any(
            q["perplexity"] <= p["perplexity"]
            and q["tokens_per_s"] >= p["tokens_per_s"]
            and (q["perplexity"], q["tokens_per_s"]) != (p["perplexity"], p["tokens_per_s"])
            for q in mine
        )
    ]
    return sorted(front, key=lambda p: p["tokens_per_s"])


def best_under_target(points: list[dict], board: str, tokens_per_s: float) -> dict | None:
    """The lowest-perplexity point of ``board`` that decodes at least ``tokens_per_s`` (ties: faster)."""
    ok = [p for p in points if p["board"] == board and p["tokens_per_s"] >= tokens_per_s]
    return min(ok, key=lambda p: (p["perplexity"], -p["tokens_per_s"])) if ok else None


def plot_quality_front(path: Path, points: list[dict], refs: list[dict], boards: list[str], context: int) -> Path:
    """Perplexity against whole-token tokens/s, one panel per board: every point, its front,
    and the reference rows' perplexities as horizontal lines."""
    plt = pyplot()
    cols = min(3, len(boards))
    rows_ = -(-len(boards) // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(5 * cols, 4 * rows_), squeeze=False)
    for ax, board in zip(axes.flat, boards):
        mine = [p for p in points if p["board"] == board]
        for (packing, planes), marker in zip(
            [(pk, dp) for pk in ("2bit", "base3") for dp in (1, 2)], ("o", "s", "^", "D")
        ):
            sel = [p for p in mine if p["packing"] == packing and p["engine_planes"] == planes]
            label = f"{packing}, {planes}-plane engine"
            ax.scatter([p["tokens_per_s"] for p in sel], [p["perplexity"] for p in sel], marker=marker, label=label)
        front = quality_front(points, board)
        ax.plot([p["tokens_per_s"] for p in front], [p["perplexity"] for p in front], "k--", lw=0.8, label="front")
        for p in front:
            ax.annotate(
                p["method"], (p["tokens_per_s"], p["perplexity"]), fontsize=6, xytext=(3, 3), textcoords="offset points"
            )
        for r in refs:
            ax.axhline(r["perplexity"], color="grey", ls=":", lw=0.8)
            ax.text(ax.get_xlim()[0], r["perplexity"], f" {r['method']}", fontsize=6, color="grey", va="bottom")
        ax.set_yscale("log")
        ax.set_title(f"{board}, context {context}")
        ax.set_xlabel("whole-token decode tokens/s")
        ax.set_ylabel("perplexity")
        ax.grid(True, which="both", lw=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(boards) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
