"""Tokens per second of a quantized model on the streaming engine, per board (``ptqtp plan``).

For each quantized linear the engine's cycle model (``ptqtp.hdl.engine_model``) gives the
cycles of one run: the compute side (every lane busy) or the memory side (the layer's
region at the board's bandwidth), whichever is longer. Decode runs every linear once per
token (m = 1); prefill runs them on batches of M tokens, reading the weights once per
batch. What stays on the host (attention, norms, embeddings and an unquantized lm_head) is
not counted: the figures are for the linears the engine runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from ptqtp.hdl.engine_model import EngineParams

__all__ = ["Board", "load_boards", "LayerShape", "plan", "HOST_SIDE"]

HOST_SIDE = (
    "attention (scores, softmax, KV cache), RMSNorm/LayerNorm, rotary embeddings, the embedding table and an "
    "unquantized lm_head"
)


@dataclass(frozen=True)
class Board:
    key: str
    name: str
    bandwidth_gbs: float
    fmax_mhz: float
    luts: int = 0
    source: str = ""
    family: str = ""
    ffs: int = 0
    bram_blocks: int = 0
    dsps: int = 0

    @property
    def bytes_per_cycle(self) -> float:
        return self.bandwidth_gbs * 1e9 / (self.fmax_mhz * 1e6)


def load_boards() -> dict[str, Board]:
    """The boards of ``boards.json`` (each figure with its source)."""
    raw = json.loads(resources.files("ptqtp.workflows").joinpath("boards.json").read_text())
    return {
        k: Board(
            k,
            v["name"],
            float(v["bandwidth_gbs"]),
            float(v["fmax_mhz"]),
            int(v.get("luts", 0)),
            v.get("source", ""),
            v.get("family", ""),
            int(v.get("ffs", 0)),
            int(v.get("bram_blocks", 0)),
            int(v.get("dsps", 0)),
        )
        for k, v in raw.items()
        if not k.startswith("_")
    }


@dataclass(frozen=True)
class LayerShape:
    name: str
    n: int
    d_pad: int
    planes: int = 2
    offset: bool = False


def _kind(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def plan(layers: list[LayerShape], params: EngineParams, board: Board) -> dict:
    """Per layer kind and in total: cycles (decode, prefill per token), bound, bytes per token,
    tokens/s and the share of the board's bandwidth the engine uses."""
    bpc = board.bytes_per_cycle
    kinds: dict[str, dict] = {}
    total = {"decode_cycles": 0.0, "prefill_cycles": 0.0, "bytes": 0, "issue": 0, "layers": 0}
    for layer in layers:
        params.check_layer(layer.n, layer.d_pad, layer.planes, layer.offset)
        one, batch = params.run(layer.n, layer.d_pad, 1), params.run(layer.n, layer.d_pad, params.vectors)
        row = kinds.setdefault(
            _kind(layer.name), {"layers": 0, "decode_cycles": 0.0, "prefill_cycles": 0.0, "bytes": 0, "bound": set()}
        )
        dec, pre = one.cycles(bpc), batch.cycles(bpc) / params.vectors
        row["layers"] += 1
        row["decode_cycles"] += dec
        row["prefill_cycles"] += pre
        row["bytes"] += one.layer_bytes
        bound = one.bound(bpc)
        # Memory-bound because the AXI bus (DW / 8 bytes a cycle) is narrower than the board's memory.
        row["bound"].add("bus (DW)" if bound == "bandwidth" and bpc > params.data_width / 8 else bound)
        total["decode_cycles"] += dec
        total["prefill_cycles"] += pre
        total["bytes"] += one.layer_bytes
        total["issue"] += one.issue_cycles
        total["layers"] += 1
    hz = board.fmax_mhz * 1e6
    decode_tps = hz / total["decode_cycles"]
    return {
        "board": board.key,
        "board_name": board.name,
        "bandwidth_gbs": board.bandwidth_gbs,
        "fmax_mhz": board.fmax_mhz,
        "engine": {
            "lanes": params.lanes,
            "rows": params.rows,
            "vectors": params.vectors,
            "data_width": params.data_width,
            "planes": params.planes,
            "offset": params.offset,
            "packing": params.packing,
        },
        "kinds": {k: {**v, "bound": "/".join(sorted(v["bound"]))} for k, v in kinds.items()},
        "layers": total["layers"],
        "bytes_per_token": total["bytes"],
        "decode_cycles_per_token": total["decode_cycles"],
        "prefill_cycles_per_token": total["prefill_cycles"],
        "decode_tokens_per_s": decode_tps,
        "prefill_tokens_per_s": hz / total["prefill_cycles"],
        "bandwidth_used": min(1.0, total["bytes"] * decode_tps / (board.bandwidth_gbs * 1e9)),
        "compute_bound_tokens_per_s": hz / total["issue"],
        "host_side": HOST_SIDE,
    }
