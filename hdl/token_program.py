"""A model for the token core: its memory image and its program (docs/SPEC.md section 11).

``compile_token(weights, params)`` lays out one memory (the engine's weight regions, the int8
table, norm weights, rotary rows and the KV cache) and writes the instruction list that runs
one token through the golden decoder's operations in the golden decoder's order
(``GoldenDecoder.block``). Every table is the golden decoder's own integers, so the core's
next token and logit equal ``GoldenDecoder.step``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ptqtp.golden_decoder import FV, DecoderWeights, IntRows, rope_table

from .engine_model import FILL
from .lmhead import ROWS_PER_BLOCK
from .token_core import TokenParams
from .token_isa import WORDS, Instr, Op, Unit

__all__ = ["TokenImage", "compile_token", "table_bytes", "scratch_map", "program_length", "kv_records", "token_cycles"]

ALIGN = 4096


@dataclass
class TokenImage:
    """The memory image (bytes from address 0), the program, and where the KV cache lives."""

    memory: bytearray
    program: list[Instr]
    kv: dict[tuple[int, int, str], int]  # (block, kv head, "k" | "v") -> its records' address

    def program_words(self) -> list[int]:
        return [w for ins in self.program for w in ins.words()]

    def kv_writes(self, cache, length: int) -> list[tuple[int, bytes]]:
        """The records of a golden ``KVCache``'s first ``length`` positions, where the core
        keeps them: (address, bytes) per (block, kv head, k/v). Loading them and setting POS
        to ``length`` continues a context the golden decoder began."""
        out = []
        for (i, h, which), at in self.kv.items():
            q = cache.k if which == "k" else cache.v
            m = (cache.k_m if which == "k" else cache.v_m)[i, h, :length]
            e = (cache.k_e if which == "k" else cache.v_e)[i, h, :length]
            out.append((at, kv_records(q[i, h, :length], m, e, running=which == "v")))
        return out


def table_bytes(rows: IntRows) -> bytes:
    """The int8 table's layout: blocks of eight rows, each a word of eight int16 a_q then the
    rows, each padded with zeros to whole 16-byte words (padding rows are zero)."""
    if rows.bits != 8 or rows.group:
        raise ValueError(
            f"the token core's table is int8 with one scale per row, not int{rows.bits} in groups of {rows.group}"
        )
    n, cols = rows.q.shape
    rb = -(-cols // 16)
    blocks = -(-n // ROWS_PER_BLOCK)
    q = np.zeros((blocks * ROWS_PER_BLOCK, rb * 16), np.int8)
    q[:n, :cols] = rows.q
    a = np.zeros(blocks * ROWS_PER_BLOCK, "<i2")
    if rows.a_q.min() < -(2**15) or rows.a_q.max() >= 2**15:
        raise ValueError("table scales do not fit 16 bits")
    a[:n] = rows.a_q[:, 0]
    out = np.zeros((blocks, 16 + ROWS_PER_BLOCK * rb * 16), np.uint8)
    out[:, :16] = a.reshape(blocks, ROWS_PER_BLOCK).view(np.uint8).reshape(blocks, 16)
    out[:, 16:] = q.reshape(blocks, -1).view(np.uint8)
    return out.tobytes()


def program_length(arch) -> int:
    """Instructions of a token's program (``compile_token``'s, counted without weights)."""
    per_block = 3 + 3 + 1 + 2 + 2 * (1 + arch.kv_heads) + 2 * arch.heads + 3 + 3 + 3 + 3
    return 1 + arch.layers * per_block + 3 + 1 + 1


def kv_records(values, m, e, running: bool) -> bytes:
    """KV records {m u16, e i16, E i16, 10 zero bytes | values int8} for positions 0..len-1;
    E is the largest e up to the position (``running``, the V cache) or e itself (K)."""
    n, hd = values.shape
    E = np.maximum.accumulate(e) if running and n else np.asarray(e)
    rec = np.zeros((n, 16 + hd), np.uint8)
    head = np.zeros((n, 8), "<i2")
    head[:, 0] = np.asarray(m, np.int64).astype(np.uint16).view(np.int16)
    head[:, 1], head[:, 2] = e, E
    rec[:, :16] = head.view(np.uint8)
    rec[:, 16:] = np.asarray(values, np.int8).view(np.uint8)
    return rec.tobytes()


def scratch_map(arch) -> dict[str, int]:
    """Word addresses of the program's vectors in the core's scratch memory."""
    a = arch
    hd = a.head_dim
    sizes = {
        "H": a.hidden,
        "X": a.hidden,
        "XQ": max(a.hidden, a.intermediate, a.heads * hd),
        "Q": a.heads * hd,
        "K": a.kv_heads * hd,
        "V": a.kv_heads * hd,
        "KQ": a.kv_heads * hd,
        "QQ": hd,
        "ATT": a.heads * hd,
        "G": a.intermediate,
        "U": a.intermediate,
        "T": a.hidden,
        "NW": a.hidden,
        "CS": hd,
    }
    out, at = {}, 0
    for name, size in sizes.items():
        out[name] = at
        at += size
    out["end"] = at
    return out


class _Memory:
    """Regions one after another; ``dry``: addresses and sizes only (the planner's program)."""

    def __init__(self, dry: bool = False):
        self.buf, self.dry, self.size = bytearray(), dry, 0

    def place(self, data, size: int, align: int = ALIGN) -> int:
        """``data()`` (bytes of ``size``) at the next multiple of ``align``; its address."""
        at = self.size + (-self.size % align)
        if not self.dry:
            self.buf += b"\0" * (at - len(self.buf))
            self.buf += data()
        self.size = at + size
        return at

    def reserve(self, size: int, align: int = ALIGN) -> int:
        return self.place(lambda: b"\0" * size, size, align)


def compile_token(weights: DecoderWeights, params: TokenParams, dry: bool = False) -> TokenImage:
    """The memory image and program of ``weights`` for the core built with ``params``.
    ``dry``: the program and addresses only, from the weights' shapes (``plan``'s model of a
    token: see ``ptqtp.workflows.plan.token_core_plan``); the memory stays empty.

    ``ValueError`` names what does not fit: a layer the engine cannot run (or with a stored
    column order), a shape other than the core's, too small a scratch or program memory."""
    a, ep, p = weights.arch, params.engine, params
    if a != params.arch:
        raise ValueError(f"the weights' architecture {a} differs from the core's {params.arch}")
    hd, half = a.head_dim, a.head_dim // 2
    group = a.heads // a.kv_heads
    s = scratch_map(a)
    if s["end"] > p.scratch_words:
        raise ValueError(f"the program needs {s['end']} scratch words; the core has {p.scratch_words}")
    mem = _Memory(dry)
    prog: list[Instr] = []

    def linear(name: str, layer, src: int, dst: int) -> None:
        if layer.perm is not None:
            raise ValueError(f"{name}: a stored column order runs on the host path only (the token core has none)")
        try:
            ep.check_layer(layer.n, layer.d_pad, layer.planes, layer.m_q is not None)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
        size = ep.layout.layer_bytes(layer.n, layer.d_pad, layer.planes)
        at = mem.place(lambda: ep.layout.encode(layer.trits, layer.a_q, layer.m_q), size)
        prog.append(
            Instr(
                Op.LINEAR,
                sreg=0,
                outer=layer.n,
                inner=layer.d,
                a=(src, 0),
                b=(layer.d_pad // ep.lanes, ep.layout.passes(layer.planes)),
                c=(dst, 0),
                d=(layer.F, 0),
                addr=at,
                imm=size // ep.layout.word_bytes,
                note=name,
            )
        )

    def norm(name: str, n, src: int, width: int) -> None:
        at = mem.place(lambda: np.asarray(n.w_q, "<i2").tobytes(), 2 * width, 16)
        prog.append(Instr(Op.LOAD16, inner=width, c=(s["NW"], 0), addr=at, note=f"{name} weights"))
        prog.append(
            Instr(Op.VOP, unit=Unit.RMSNORM, inner=width, a=(src, 0), b=(s["NW"], 0), c=(s["X"], 0), imm=n.F, note=name)
        )

    def residual(i: int) -> None:  # h += the output of the linear just run (in T)
        note = f"block {i} residual"
        prog.append(
            Instr(Op.VOP, unit=Unit.ADD, inner=a.hidden, a=(s["H"], 0), b=(s["T"], 0), c=(s["H"], 0), note=note)
        )

    def quant_a(src: int, width: int, note: str) -> None:
        prog.append(Instr(Op.VOP, unit=Unit.QUANT_A, inner=width, a=(src, 0), c=(s["XQ"], 0), sreg_out=0, note=note))

    tsize = -(-a.vocab // ROWS_PER_BLOCK) * (16 + ROWS_PER_BLOCK * 16 * p.row_beats)
    table = mem.place(lambda: table_bytes(weights.embed), tsize)
    lm_table = table if weights.lm_head is weights.embed else mem.place(lambda: table_bytes(weights.lm_head), tsize)

    def rope_rows() -> bytes:
        cos, sin = rope_table(np.arange(p.capacity), hd, a.rope_theta, p.fmt.rope_frac)
        return np.concatenate([cos, sin], axis=1).astype("<i2").tobytes()

    rope_at = mem.place(rope_rows, p.capacity * 2 * hd)
    rec = 16 * p.record_beats
    kv = {}
    for i in range(a.layers):
        for h in range(a.kv_heads):
            for which in "kv":
                kv[i, h, which] = mem.reserve(p.capacity * rec)
    if not dry:
        mem.buf += b"\0" * (mem.size - len(mem.buf))

    prog.append(Instr(Op.EMBED, inner=a.hidden, c=(s["H"], 0), addr=table, imm=weights.embed.F - FV, note="embed"))
    for i, b in enumerate(weights.blocks):
        L = b.linears
        if b.biases or b.q_norm is not None:
            raise ValueError(f"block {i}: biases and q/k norms run on golden-int only, not on the token core")
        norm(f"block {i} attn_norm", b.attn_norm, s["H"], a.hidden)
        quant_a(s["X"], a.hidden, f"block {i} x")
        for key, dst in (("q", "Q"), ("k", "K"), ("v", "V")):
            linear(f"block {i} {key}_proj", L[key], s["XQ"], s[dst])
        prog.append(Instr(Op.LOAD16, inner=hd, c=(s["CS"], 0), addr=rope_at, imm=2 * hd, note=f"block {i} rope row"))
        for vec, heads in (("Q", a.heads), ("K", a.kv_heads)):
            prog.append(
                Instr(
                    Op.VOP,
                    unit=Unit.ROPE,
                    outer=heads,
                    inner=half,
                    a=(s[vec], hd),
                    b=(s[vec] + half, hd),
                    c=(s["CS"], 0),
                    d=(s["CS"] + half, 0),
                    note=f"block {i} rope {vec.lower()}",
                )
            )
        for vec, which in (("K", "k"), ("V", "v")):
            prog.append(
                Instr(
                    Op.VOP,
                    unit=Unit.QUANT_8,
                    outer=a.kv_heads,
                    inner=hd,
                    a=(s[vec], hd),
                    c=(s["KQ"], hd),
                    sreg_out=1,
                    note=f"block {i} {which} int8",
                )
            )
            for h in range(a.kv_heads):
                prog.append(
                    Instr(
                        Op.KVSTORE,
                        sreg=1 + h,
                        flag=int(which == "v"),
                        inner=hd,
                        a=(s["KQ"] + h * hd, 0),
                        addr=kv[i, h, which],
                        note=f"block {i} {which} cache head {h}",
                    )
                )
        for h in range(a.heads):
            prog.append(
                Instr(
                    Op.VOP,
                    unit=Unit.QUANT_8,
                    inner=hd,
                    a=(s["Q"] + h * hd, 0),
                    c=(s["QQ"], 0),
                    sreg_out=1,
                    note=f"block {i} q head {h} int8",
                )
            )
            prog.append(
                Instr(
                    Op.ATTN,
                    sreg=1,
                    inner=hd,
                    a=(s["QQ"], 0),
                    c=(s["ATT"] + h * hd, 0),
                    addr=kv[i, h // group, "k"],
                    imm=kv[i, h // group, "v"],
                    note=f"block {i} attention head {h}",
                )
            )
        quant_a(s["ATT"], a.heads * hd, f"block {i} attention out")
        linear(f"block {i} o_proj", L["o"], s["XQ"], s["T"])
        residual(i)
        norm(f"block {i} mlp_norm", b.mlp_norm, s["H"], a.hidden)
        quant_a(s["X"], a.hidden, f"block {i} mlp x")
        linear(f"block {i} gate_proj", L["gate"], s["XQ"], s["G"])
        linear(f"block {i} up_proj", L["up"], s["XQ"], s["U"])
        prog.append(
            Instr(
                Op.VOP,
                unit=Unit.SILU,
                inner=a.intermediate,
                a=(s["G"], 0),
                b=(s["U"], 0),
                c=(s["G"], 0),
                note=f"block {i} silu x up",
            )
        )
        quant_a(s["G"], a.intermediate, f"block {i} mlp hidden")
        linear(f"block {i} down_proj", L["down"], s["XQ"], s["T"])
        residual(i)
    norm("final norm", weights.final_norm, s["H"], a.hidden)
    quant_a(s["X"], a.hidden, "lm_head x")
    prog.append(Instr(Op.LMHEAD, sreg=0, outer=a.vocab, inner=a.hidden, a=(s["XQ"], 0), addr=lm_table, note="lm_head"))
    prog.append(Instr(Op.END, note="end"))
    if len(prog) > p.program_instrs:
        raise ValueError(f"the program has {len(prog)} instructions; the core holds {p.program_instrs}")
    assert len(prog) == program_length(a) and all(len(ins.words()) == WORDS for ins in prog)
    return TokenImage(mem.buf, prog, kv)


# -- cycles ------------------------------------------------------------------------------------

#: Cycles each instruction spends outside its opcode's states: eight fetch cycles, the last
#: word's, and dispatch.
INSTR_OVERHEAD = 10
#: Per element and fixed cycles of each vector unit fed by VOP (from the units' FSMs: the
#: feed assembles an element in operands + 1 cycles and hands it over in one more; a row
#: unit loads at the feed's pace, then runs its own passes).
#:   RMSNORM  load 4/elem, sum of squares 5/elem, 1/rms (divide, isqrt) ~155, output 8/elem
#:   QUANT    load 3/elem, two divisions and the scale ~120, output 9/elem
#:   ADD      feed 4/elem; SILU 10/elem (the unit); ROPE 6/pair (feed of four, two writes)
VOP_COST = {
    Unit.RMSNORM: (17, 155),
    Unit.QUANT_A: (12, 120),
    Unit.QUANT_8: (12, 120),
    Unit.ADD: (4, 2),
    Unit.SILU: (10, 2),
    Unit.ROPE: (6, 2),
}


def token_cycles(
    program: list[Instr], params: TokenParams, context: int, bytes_per_cycle: float = 16.0
) -> dict[str, float]:
    """Cycles of one token at ``context`` (its position + 1) by the RTL's opcode classes,
    counted over ``program``; the memory delivers ``bytes_per_cycle`` (at most a 16-byte
    word a cycle, the simulation's). A LINEAR's engine run is the engine's cycle model: its
    issue cycles or its region's words at that bandwidth, plus the pipeline fill. The
    classes are the core's CYC_* counters; ``overhead`` is fetch and dispatch."""
    a, hd, ep = params.arch, params.arch.head_dim, params.engine
    slow = 16 / min(16.0, bytes_per_cycle)  # cycles per decoder word
    word_cycles = ep.data_width / 8 / min(bytes_per_cycle, ep.data_width / 8)  # per engine word

    def engine_run(ins: Instr) -> float:
        run = ep.run(ins.outer, ins.b[0] * ep.lanes, 1, ins.b[1] * ep.planes)
        return max(run.issue_cycles, ins.imm * word_cycles) + FILL

    kv_words = hd // 16
    out = dict.fromkeys(("vop", "load", "linear", "kv", "attn", "lmhead"), 0.0)
    out["overhead"] = INSTR_OVERHEAD * len(program)
    for ins in program:
        if ins.op == Op.VOP:
            per, fixed = VOP_COST[Unit(ins.unit)]
            out["vop"] += ins.outer * (per * ins.inner + fixed)
        elif ins.op == Op.LOAD16:
            out["load"] += ins.inner + 4
        elif ins.op == Op.EMBED:
            out["load"] += params.row_beats * 33 + 10
        elif ins.op == Op.LINEAR:
            d_pad = ins.b[0] * params.engine.lanes
            out["linear"] += 24 + 2 * d_pad + d_pad // ep.lanes + engine_run(ins)
        elif ins.op == Op.KVSTORE:
            out["kv"] += 33 * kv_words + 4 + (5 if ins.flag and context > 1 else 0)
        elif ins.op == Op.ATTN:
            # per key: the q.k words (a KV word a cycle) and the score's tail (drain, two S
            # products of four stages, the scaled t in four: 14), its exp2 (6), the p.v words
            # after the key's probability, scale and weight (5); then the softmax's division
            # and the p.v outputs (3 each)
            per_key = 2 * kv_words + 25
            out["attn"] += context * max(per_key, 2 * params.record_beats * slow) + hd + 3 * hd + 60
        elif ins.op == Op.LMHEAD:
            blocks = -(-a.vocab // 8)
            out["lmhead"] += 33 * params.row_beats + blocks * (1 + 8 * params.row_beats) * slow + 8
    out["total"] = sum(out.values())
    return out
