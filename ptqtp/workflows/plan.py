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

__all__ = [
    "Board",
    "load_boards",
    "LayerShape",
    "plan",
    "HOST_SIDE",
    "DecoderUnit",
    "token_parts",
    "whole_token_plan",
    "ZTACHIP",
]

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
    #: the share of the peak a weight stream sustains on this board's memory (measured where
    #: ``efficiency_source`` names a measurement; 1.0 is the peak, an assumption)
    dram_efficiency: float = 1.0
    efficiency_source: str = "not measured: 100% of the peak assumed"
    #: external memory (MiB); 0: unknown
    memory_mb: int = 0

    @property
    def sustained_gbs(self) -> float:
        return self.bandwidth_gbs * self.dram_efficiency

    @property
    def bytes_per_cycle(self) -> float:
        """What the memory delivers per engine clock: the peak times the measured efficiency."""
        return self.sustained_gbs * 1e9 / (self.fmax_mhz * 1e6)


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
            float(v.get("dram_efficiency", 1.0)),
            v.get("efficiency_source", "not measured: 100% of the peak assumed"),
            int(v.get("memory_mb", 0)),
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
        one = params.run(layer.n, layer.d_pad, 1, layer.planes)
        batch = params.run(layer.n, layer.d_pad, params.vectors, layer.planes)
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
        "dram_efficiency": board.dram_efficiency,
        "efficiency_source": board.efficiency_source,
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
        "bandwidth_used": min(1.0, total["bytes"] * decode_tps / (board.sustained_gbs * 1e9)),
        "compute_bound_tokens_per_s": hz / total["issue"],
        "memory_mb": board.memory_mb,
        "fits_memory": not board.memory_mb or total["bytes"] <= board.memory_mb * 2**20,
        "host_side": HOST_SIDE,
    }


# -- whole tokens (issue 27): the decoder's bytes and cycles besides the linears -------------

#: the reference point the README compares with: ztachip runs every op of SmolLM2-135M on an
#: Arty A7 (Q4 weights, FP16 KV cache) at 8 tok/s with 1.2 GB/s (its README, 2025)
ZTACHIP = {"tokens_per_s": 8.0, "bandwidth_gbs": 1.2, "source": "github.com/ztachip/ztachip (SmolLM2-135M on Arty A7)"}

#: bytes of one KV-cache entry's scale: a 16-bit mantissa and an 8-bit exponent, padded to 4
KV_SCALE_BYTES = 4


@dataclass(frozen=True)
class DecoderUnit:
    """The planned decoder units beside the engine: ``lanes`` element operations a cycle in the
    vector/attention unit (norms, RoPE, softmax, q.k and p.v products, SiLU); ``lm_macs``
    int8 multiply-accumulates a cycle on the lm_head path."""

    lanes: int = 16
    lm_macs: int = 64


def token_parts(arch, fmt, context: int, unit: DecoderUnit, bytes_per_cycle: float) -> dict[str, dict]:
    """Bytes and cycles per decoded token of everything but the block linears, at ``context``
    tokens in the KV cache. ``arch``: a :class:`ptqtp.golden_decoder.DecoderArch`; ``fmt``: its
    :class:`DecoderFormat`. Each part takes max(memory, compute) cycles; parts run one after
    another (no overlap is assumed)."""
    L, hd = arch.layers, arch.head_dim
    kv_entry = hd * fmt.kv_bits // 8 + KV_SCALE_BYTES
    lm_groups = -(-arch.hidden // fmt.lm_group) if fmt.lm_group else 1
    row_bytes = -(-arch.hidden * fmt.lm_bits // 8) + 2 * lm_groups  # packed entries, 16-bit scales
    lm_bytes = arch.vocab * row_bytes
    parts = {
        "lm_head": (lm_bytes, arch.vocab * arch.hidden / unit.lm_macs),
        "embedding row": (row_bytes, arch.hidden / unit.lanes),
        "KV cache": (
            L * arch.kv_heads * 2 * (context + 1) * kv_entry,
            # q.k and p.v products, the softmax's exp and sums
            L * arch.heads * context * (2 * hd + 3) / unit.lanes,
        ),
        "norms, RoPE, SiLU, quantizers": (
            (2 * L + 1) * arch.hidden * 2,  # 16-bit norm weights
            (
                L
                * (
                    4 * arch.hidden  # two norms: sum of squares, scale
                    + 2 * (arch.heads + arch.kv_heads) * hd  # RoPE
                    + 3 * arch.intermediate  # SiLU x up
                    + 2 * (arch.hidden + arch.heads * hd + arch.intermediate)  # quantizers: max, scale
                    + 2 * arch.hidden  # residual adds
                )
                + 3 * arch.hidden
            )
            / unit.lanes,
        ),
    }
    return {
        k: {
            "bytes": int(b),
            "cycles": max(b / bytes_per_cycle, c),
            "bound": "memory" if b / bytes_per_cycle >= c else "compute",
        }
        for k, (b, c) in parts.items()
    }


def whole_token_plan(
    layers: list[LayerShape],
    params: EngineParams,
    board: Board,
    arch,
    fmt,
    context: int,
    unit: DecoderUnit | None = None,
) -> dict:
    """The linears' :func:`plan` plus every other byte and cycle of a decoded token
    (:func:`token_parts`): decode tokens/s and tokens/s per GB/s of the board's bandwidth."""
    unit = unit or DecoderUnit()
    base = plan(layers, params, board)
    bpc = min(board.bytes_per_cycle, params.data_width / 8)
    parts = token_parts(arch, fmt, context, unit, bpc)
    parts = {
        "linears": {"bytes": base["bytes_per_token"], "cycles": base["decode_cycles_per_token"], "bound": "engine"}
    } | parts
    cycles = sum(p["cycles"] for p in parts.values())
    total = sum(p["bytes"] for p in parts.values())
    tps = board.fmax_mhz * 1e6 / cycles
    return base | {
        "context": context,
        "parts": parts,
        "token_bytes": total,
        "token_cycles": cycles,
        "token_tokens_per_s": tps,
        "tokens_per_s_per_gbs": tps / board.bandwidth_gbs,
        "decoder_unit": {"lanes": unit.lanes, "lm_macs": unit.lm_macs},
        "formats": {"kv_bits": fmt.kv_bits, "lm_bits": fmt.lm_bits, "lm_group": fmt.lm_group, "act_bits": fmt.act_bits},
    }


def token_core_plan(
    arch, layers: list[LayerShape], board: Board, context: int, packing: str = "2bit", group_size: int = 128
) -> dict:
    """The token core as built (``ptqtp.hdl.token_core``): its cycles per token at ``context``
    on ``board``, counted over the program the core runs (``token_program.token_cycles``,
    within 0.1% of the RTL at context 512), with the engine's cycle model for the linears at
    the board's sustained bytes per cycle. {cycles, parts, tokens_per_s, tokens_per_s_per_gbs}."""
    from types import SimpleNamespace

    from ptqtp.formats.decoder_weights import BLOCK_LINEARS
    from ptqtp.golden_decoder import DecoderWeights
    from ptqtp.hdl.token_program import compile_token, token_cycles

    from .token import token_params

    params = token_params(arch, capacity=max(context, 1), packing=packing, group_size=group_size)
    ep = params.engine
    by_name = {layer.name: layer for layer in layers}

    def shape(name: str):
        layer = by_name.get(name)
        if layer is None:
            raise ValueError(f"the token core runs every block linear on the engine; {name} is not quantized")
        return SimpleNamespace(
            n=layer.n,
            d=layer.d_pad,
            d_pad=layer.d_pad,
            planes=layer.planes,
            m_q=True if layer.offset else None,
            perm=None,
            F=0,
        )

    norm = SimpleNamespace(F=0, w_q=None)
    blocks = [
        SimpleNamespace(
            linears={k: shape(f"model.layers.{i}.{v}") for k, v in BLOCK_LINEARS.items()},
            biases={},
            q_norm=None,
            attn_norm=norm,
            mlp_norm=norm,
        )
        for i in range(arch.layers)
    ]
    table = SimpleNamespace(F=0)
    weights = DecoderWeights(arch, table, blocks, norm, table)  # type: ignore[arg-type]
    image = compile_token(weights, params, dry=True)
    parts = token_cycles(image.program, params, context, min(board.bytes_per_cycle, ep.data_width / 8))
    tps = board.fmax_mhz * 1e6 / parts["total"]
    per_gbs = tps / board.bandwidth_gbs
    return {"cycles": parts["total"], "parts": parts, "tokens_per_s": tps, "tokens_per_s_per_gbs": per_gbs}
