"""The token core: a whole decoder token on chip (docs/SPEC.md section 11).

    host (AXI4-Lite) --> TOKEN, POS, CTRL.start --> the program (instructions in on-chip memory)
    scratch (V words) <--> vector units (RMSNorm, quantizers, add, SwiGLU, RoPE)
    scratch --> x stream --> TritEngine (weights over m_axi) --> y --> scale --> scratch
    KV records and the int8 table over m_axi_dr (reads) / m_axi_dw (writes)
    ScoreUnit --> SoftmaxUnit --> PVUnit (one head over the cache); LMHeadUnit (argmax)

The program, compiled from a model by ``ptqtp.hdl.token_program``, holds every layer's
addresses; the core adds only what depends on the token: its id (EMBED) and position (RoPE
row, KV record, keys to attend). Each instruction runs to completion before the next.
Every unit is the golden decoder's arithmetic bit for bit; the token's next id and its
integer logit equal ``GoldenDecoder.step``'s argmax.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ptqtp.golden_decoder import FV, DecoderArch, DecoderFormat

from .axi import AxiBurstReader, AxiLiteRegs, AxiLiteSignature, AxiReadSignature, AxiWordWriter, AxiWriteSignature
from .contract import CTRL, Reg
from .engine import TritEngine
from .engine_model import EngineParams
from .lmhead import ROWS_PER_BLOCK, LMHeadUnit
from .pv import PVUnit
from .rmsnorm import RMSNormUnit
from .rope import RopeUnit
from .scores import ScoreUnit
from .softmax import SoftmaxUnit
from .swiglu import SiluMulUnit
from .token_isa import ERR, TOKEN_ID, WORDS, Op, TokenReg, Unit
from .vquant import MANT, VectorQuantizer

__all__ = ["TokenParams", "TokenCore", "DEC_WIDTH"]

DEC_WIDTH = 128  # the decoder's memory port: 16 int8 values a word
V_MAX = 2**31 - 1
SREGS = 8


@dataclass(frozen=True)
class TokenParams:
    """What the token core is elaborated with: the model's shape, the decoder's formats, the
    engine's parameters, the KV cache's capacity and the on-chip memories' sizes."""

    arch: DecoderArch
    engine: EngineParams
    fmt: DecoderFormat = field(default_factory=DecoderFormat)
    capacity: int = 256
    scratch_words: int = 4096
    program_instrs: int = 1024

    def __post_init__(self):
        a, f = self.arch, self.fmt
        if self.engine.act_bits != f.act_bits:
            raise ValueError(f"the engine's A = {self.engine.act_bits} differs from the decoder's {f.act_bits}")
        if (f.q_bits, f.kv_bits, f.lm_bits, f.lm_group) != (8, 8, 8, 0):
            raise ValueError(f"the token core runs int8 queries, KV cache and lm_head per row, not {f.describe()}")
        if a.head_dim % 16 or a.head_dim % 2:
            raise ValueError(f"head_dim {a.head_dim} must be a multiple of 16 (whole KV words)")
        if a.qk_norm:
            raise ValueError(f"the token core runs llama and mistral blocks, not {a.name}'s q/k norms")
        if not 1 <= self.capacity <= 4096:
            raise ValueError(f"capacity must be in 1..4096 tokens, not {self.capacity}")
        if a.vocab >= 2**16 or self.scratch_words > 2**16:
            raise ValueError("vocab and scratch must stay below 2^16")

    @property
    def record_beats(self) -> int:
        """DW words of one KV record: a scale word, then head_dim int8 values."""
        return 1 + self.arch.head_dim // 16

    @property
    def row_beats(self) -> int:
        """DW words of one row of the int8 table (zero past the last column)."""
        return -(-self.arch.hidden // 16)


#: The FSM states each CYC_* counter counts (token_program.token_cycles models the same classes).
COUNTED_STATES = {
    "vop": ("VOP",),
    "load": ("LOAD_DATA", "EMB_WORD", "EMB_MUL", "EMB_WRITE"),
    "linear": ("LIN_REG", "LIN_B", "LIN_RD", "LIN_CAP", "LIN_BEAT", "LIN_Y", "LIN_SCALE"),
    "kv": ("KV_E", "KV_SEND", "KV_RD", "KV_CAP", "KV_WAIT"),
    "attn": ("ATT_Q", "ATT_KSCALE", "ATT_K", "ATT_ECMD", "ATT_E", "ATT_VCMD", "ATT_P", "ATT_VSCALE", "ATT_V"),
    "lmhead": ("LM_X", "LM_XCAP", "LM_XW", "LM_RUN"),
}


def _round_shift(m: Module, v, sh, width: int, name: str) -> Signal:
    """rnd(v / 2^sh) for sh > 0 (add half, shift right), v 2^-sh for sh <= 0: combinational."""
    out = Signal(signed(width), name=name)
    right = Mux(sh > 0, sh, 0).as_unsigned()[:7]
    left = Mux(sh < 0, -sh, 0).as_unsigned()[:7]
    half = Mux(right > 0, Const(1, 64) << (right - 1)[:6], 0)
    m.d.comb += out.eq(Mux(sh > 0, (v + half) >> right, v << left))
    return out


def _saturate(v):
    return Mux(v > V_MAX, V_MAX, Mux(v < -V_MAX, -V_MAX, v))


class TokenCore(wiring.Component):
    """Ports: ``s_axil`` (the host's registers, :class:`TokenReg`), ``m_axi`` (the engine's
    weight reads), ``m_axi_dr`` / ``m_axi_dw`` (the decoder's reads and writes: table rows,
    norm weights, rotary rows, KV records), all on one memory."""

    def __init__(self, params: TokenParams):
        self.params = p = params
        super().__init__(
            {
                "s_axil": In(AxiLiteSignature(8)),
                "m_axi": Out(AxiReadSignature(p.engine.addr_width, p.engine.data_width)),
                "m_axi_dr": Out(AxiReadSignature(32, DEC_WIDTH)),
                "m_axi_dw": Out(AxiWriteSignature(32, DEC_WIDTH)),
            }
        )

    def elaborate(self, platform):  # noqa: C901 -- one FSM, a state group per opcode
        m = Module()
        p, a, f, ep = self.params, self.params.arch, self.params.fmt, self.params.engine
        hd, A = a.head_dim, f.act_bits

        # -- blocks ------------------------------------------------------------------------
        m.submodules.engine = eng = TritEngine(ep)
        wiring.connect(m, eng.m_axi, wiring.flipped(self.m_axi))
        m.submodules.regs = regs = AxiLiteRegs(8)
        wiring.connect(m, wiring.flipped(self.s_axil), regs.bus)
        m.submodules.reader = rdr = AxiBurstReader(32, DEC_WIDTH, burst=16, outstanding=2, split_4k=True)
        wiring.connect(m, rdr.bus, wiring.flipped(self.m_axi_dr))
        m.submodules.writer = wtr = AxiWordWriter(32, DEC_WIDTH)
        wiring.connect(m, wtr.bus, wiring.flipped(self.m_axi_dw))
        m.submodules.prog = prog = Memory(shape=32, depth=WORDS * p.program_instrs, init=[])
        pw, pr = prog.write_port(), prog.read_port()
        m.submodules.scratch = scratch = Memory(shape=signed(32), depth=p.scratch_words, init=[])
        sw, sr = scratch.write_port(), scratch.read_port()

        m.submodules.rmsnorm = u_norm = RMSNormUnit(a.hidden, a.eps, FV)
        widest = max(a.hidden, a.intermediate, a.heads * hd)
        m.submodules.quant_a = u_qa = VectorQuantizer(bits=A, frac=FV, depth=widest)
        m.submodules.quant_8 = u_q8 = VectorQuantizer(bits=8, frac=FV, depth=max(hd, 2))
        m.submodules.silu = u_silu = SiluMulUnit(f.sigmoid_step_bits)
        m.submodules.rope = u_rope = RopeUnit(f.rope_frac)
        m.submodules.score = u_score = ScoreUnit(hd, f.score_frac, lanes=16)
        m.submodules.softmax = u_soft = SoftmaxUnit(f.score_frac, depth=p.capacity)
        m.submodules.pv = u_pv = PVUnit(hd, lanes=16)
        m.submodules.lmhead = u_lm = LMHeadUnit(16, A, max_row_beats=p.row_beats)

        # -- host registers ------------------------------------------------------------------
        token, pos = Signal(16), Signal(16)
        busy, done, error = Signal(), Signal(), Signal()
        err_code = Signal(8)
        result, logit = Signal(16), Signal(64)
        cycles = Signal(32)
        op_cycles = {k: Signal(32, name=f"cyc_{k}") for k in COUNTED_STATES}
        prog_addr = Signal(range(WORDS * p.program_instrs + 1))
        start = Signal()
        wr = regs.write
        with m.If(wr.valid):
            with m.Switch(wr.addr):
                with m.Case(TokenReg.CTRL):
                    m.d.comb += start.eq(wr.data[0] & ~busy)
                    with m.If(wr.data[1] & ~busy):
                        m.d.sync += [done.eq(0), error.eq(0), err_code.eq(0)]
                with m.Case(TokenReg.TOKEN):
                    with m.If(~busy):
                        m.d.sync += token.eq(wr.data)
                with m.Case(TokenReg.POS):
                    with m.If(~busy):
                        m.d.sync += pos.eq(wr.data)
                with m.Case(TokenReg.PROG_ADDR):
                    m.d.sync += prog_addr.eq(wr.data)
                with m.Case(TokenReg.PROG_DATA):
                    m.d.comb += [pw.en.eq(~busy), pw.addr.eq(prog_addr), pw.data.eq(wr.data)]
                    m.d.sync += prog_addr.eq(prog_addr + 1)
        reads = {
            TokenReg.ID: TOKEN_ID,
            TokenReg.STATUS: Cat(busy, done, error, Const(0, 5), err_code),
            TokenReg.TOKEN: token,
            TokenReg.POS: pos,
            TokenReg.RESULT: result,
            TokenReg.LOGIT_LO: logit[:32],
            TokenReg.LOGIT_HI: logit[32:],
            TokenReg.CYCLES: cycles,
            TokenReg.VOCAB: a.vocab,
            TokenReg.CAPACITY: p.capacity,
            TokenReg.CYC_VOP: op_cycles["vop"],
            TokenReg.CYC_LOAD: op_cycles["load"],
            TokenReg.CYC_LINEAR: op_cycles["linear"],
            TokenReg.CYC_KV: op_cycles["kv"],
            TokenReg.CYC_ATTN: op_cycles["attn"],
            TokenReg.CYC_LMHEAD: op_cycles["lmhead"],
        }
        with m.Switch(regs.read_addr):
            for reg, value in reads.items():
                with m.Case(reg):
                    m.d.comb += regs.read_data.eq(value)

        # -- the instruction -----------------------------------------------------------------
        pc = Signal(range(p.program_instrs + 1))
        word_i = Signal(range(WORDS + 1))
        iw = Array(Signal(32, name=f"iw{i}") for i in range(WORDS))
        op, unit = iw[0][:4], iw[0][4:8]
        sreg, sreg_out, flag = iw[0][8:11], iw[0][11:14], iw[0][14]
        outer, inner = iw[1][:16], iw[1][16:]
        bases = [iw[2 + k][:16] for k in range(4)]
        strides = [iw[2 + k][16:] for k in range(4)]
        addr, imm = iw[6], iw[7].as_signed()
        s_m = Array(Signal(MANT, name=f"sm{i}") for i in range(SREGS))
        s_e = Array(Signal(signed(12), name=f"se{i}") for i in range(SREGS))

        # shared loop state
        fo, fi, fk = Signal(16), Signal(16), Signal(3)  # feed: row, element, operand step
        wo, wi = Signal(16), Signal(16)  # write-back: row, element
        rowb = Array(Signal(16, name=f"rowb{k}") for k in range(4))  # operand row bases (feed)
        wrow = Array(Signal(16, name=f"wrow{k}") for k in range(3))  # output row bases: a, b, c
        opnd = Array(Signal(signed(32), name=f"opnd{k}") for k in range(4))
        have = Signal()  # an element's operands are assembled
        feed_done, second = Signal(), Signal()
        scales_in = Signal(16)
        beats_left = Signal(32)
        lane = Signal(5)
        word = Signal(DEC_WIDTH)
        tmp = Signal(signed(64))
        kmant, kexp = Signal(MANT), Signal(signed(12))
        E = Signal(signed(16))
        key = Signal(16)
        kout = Signal(16)
        pn = Signal(17)
        qreg = Array(Signal(signed(8), name=f"q{i}") for i in range(hd))
        qword = Array(Cat(*(qreg[16 * w + j] for j in range(16))) for w in range(hd // 16))  # a KV word's q
        xbeat = Array(Signal(A, name=f"x{i}") for i in range(max(ep.lanes, 16)))
        e16 = Signal(signed(16))
        m.d.comb += e16.eq(s_e[sreg])
        reg_i = Signal(4)

        nops = Array([Const(n, 3) for n in (2, 1, 1, 2, 2, 4)] + [Const(0, 3)] * 10)[unit]
        is_quant = (unit == Unit.QUANT_A) | (unit == Unit.QUANT_8)
        rec_bytes = 16 * p.record_beats

        m.d.comb += [u_rope.i.payload.a.eq(opnd[0])]  # payloads: the assembled operands
        m.d.comb += [
            u_norm.i.payload.h.eq(opnd[0]),
            u_norm.i.payload.w.eq(opnd[1]),
            u_norm.i.payload.F.eq(imm),
            u_norm.i.payload.last.eq(fi == inner - 1),
            u_qa.i.payload.value.eq(opnd[0]),
            u_qa.i.payload.last.eq(fi == inner - 1),
            u_q8.i.payload.value.eq(opnd[0]),
            u_q8.i.payload.last.eq(fi == inner - 1),
            u_silu.i.payload.g.eq(opnd[0]),
            u_silu.i.payload.u.eq(opnd[1]),
            u_silu.i.payload.last.eq(fi == inner - 1),
            u_rope.i.payload.b.eq(opnd[1]),
            u_rope.i.payload.c.eq(opnd[2]),
            u_rope.i.payload.s.eq(opnd[3]),
            u_rope.i.payload.last.eq(fi == inner - 1),
        ]
        add_full, add_y = Signal(), Signal(signed(32))
        units_i = {
            Unit.RMSNORM: u_norm.i,
            Unit.QUANT_A: u_qa.i,
            Unit.QUANT_8: u_q8.i,
            Unit.SILU: u_silu.i,
            Unit.ROPE: u_rope.i,
        }

        # score -> softmax: t straight through, the last key flagged
        m.d.comb += [
            u_soft.i.valid.eq(u_score.o.valid),
            u_soft.i.payload.t.eq(u_score.o.payload.t),
            u_soft.i.payload.last.eq(kout == pos),
            u_score.o.ready.eq(u_soft.i.ready),
        ]
        with m.If(u_score.o.valid & u_score.o.ready):
            m.d.sync += kout.eq(kout + 1)

        m.d.sync += [rdr.clear.eq(0), wtr.clear.eq(0)]
        with m.If(busy):
            m.d.sync += cycles.eq(cycles + 1)

        def fail(code):
            m.d.sync += [error.eq(1), err_code.eq(code), busy.eq(0)]
            m.next = "IDLE"

        def next_instr():
            m.d.sync += [pc.eq(pc + 1), word_i.eq(0)]
            m.next = "FETCH"

        def begin_loops():
            m.d.sync += [fo.eq(0), fi.eq(0), fk.eq(0), wo.eq(0), wi.eq(0), have.eq(0), feed_done.eq(0)]
            m.d.sync += [second.eq(0), scales_in.eq(0), add_full.eq(0)]
            for k in range(4):
                m.d.sync += rowb[k].eq(bases[k])
            for k in range(3):
                m.d.sync += wrow[k].eq(bases[k])

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(start):
                    m.d.sync += [busy.eq(1), done.eq(0), cycles.eq(0), pc.eq(0), word_i.eq(0), kout.eq(0)]
                    for s in op_cycles.values():
                        m.d.sync += s.eq(0)
                    with m.If(token >= a.vocab):
                        m.d.sync += [error.eq(1), err_code.eq(ERR.TOKEN_RANGE), busy.eq(0)]
                    with m.Elif(pos >= p.capacity):
                        m.d.sync += [error.eq(1), err_code.eq(ERR.CONTEXT_FULL), busy.eq(0)]
                    with m.Else():
                        m.next = "FETCH"

            with m.State("FETCH"):  # eight words, one a cycle (the read answers a cycle later)
                m.d.comb += pr.addr.eq(pc * WORDS + word_i)
                m.d.sync += word_i.eq(word_i + 1)
                with m.If(word_i != 0):
                    m.d.sync += iw[(word_i - 1)[:3]].eq(pr.data)
                with m.If(word_i == WORDS):
                    m.next = "DISPATCH"

            with m.State("DISPATCH"):
                begin_loops()
                with m.Switch(op):
                    with m.Case(Op.END):
                        m.d.sync += [busy.eq(0), done.eq(1), pos.eq(pos + 1)]
                        m.next = "IDLE"
                    with m.Case(Op.VOP):
                        with m.If(unit > Unit.ROPE):
                            fail(ERR.BAD_OP)
                        with m.Else():
                            m.next = "VOP"
                    with m.Case(Op.LOAD16):
                        m.next = "LOAD_CMD"
                    with m.Case(Op.EMBED):
                        m.next = "EMB_SCMD"
                    with m.Case(Op.LINEAR):
                        m.d.sync += reg_i.eq(0)
                        m.next = "LIN_REG"
                    with m.Case(Op.KVSTORE):
                        m.d.sync += E.eq(s_e[sreg])
                        with m.If(flag & (pos != 0)):
                            m.next = "KV_ECMD"
                        with m.Else():
                            m.next = "KV_WCMD"
                    with m.Case(Op.ATTN):
                        m.d.sync += [key.eq(0), kout.eq(0)]
                        m.next = "ATT_Q"
                    with m.Case(Op.LMHEAD):
                        m.next = "LM_X"
                    with m.Default():
                        fail(ERR.BAD_OP)

            # ---- VOP: feed operands to the unit, write its outputs back, concurrently
            with m.State("VOP"):
                m.d.comb += sr.addr.eq(rowb[fk[:2]] + fi)
                with m.If(~have & ~feed_done):
                    m.d.sync += fk.eq(fk + 1)
                    with m.If(fk != 0):
                        m.d.sync += opnd[(fk - 1)[:2]].eq(sr.data)
                    with m.If(fk == nops):
                        m.d.sync += [have.eq(1), fk.eq(0)]
                with m.If(have):
                    taken = Signal()
                    with m.Switch(unit):
                        for u, port in units_i.items():
                            with m.Case(u):
                                m.d.comb += [port.valid.eq(1), taken.eq(port.ready)]
                        with m.Case(Unit.ADD):
                            m.d.comb += taken.eq(~add_full)
                            with m.If(~add_full):
                                m.d.sync += [add_full.eq(1), add_y.eq(_saturate(opnd[0] + opnd[1]))]
                    with m.If(taken):
                        m.d.sync += have.eq(0)
                        with m.If(fi == inner - 1):
                            m.d.sync += fi.eq(0)
                            for k in range(4):
                                m.d.sync += rowb[k].eq(rowb[k] + strides[k])
                            with m.If(fo == outer - 1):
                                m.d.sync += feed_done.eq(1)
                            m.d.sync += fo.eq(fo + 1)
                        with m.Else():
                            m.d.sync += fi.eq(fi + 1)
                # write-back: one output a cycle (RoPE's pair in two)
                y, y_valid, y_ready = Signal(signed(32)), Signal(), Signal()
                target = Signal(16)
                with m.Switch(unit):
                    with m.Case(Unit.RMSNORM):
                        m.d.comb += [y.eq(u_norm.o.payload.y), y_valid.eq(u_norm.o.valid)]
                        m.d.comb += u_norm.o.ready.eq(y_ready)
                    for u, quant in ((Unit.QUANT_A, u_qa), (Unit.QUANT_8, u_q8)):  # values to c, scales to sregs
                        with m.Case(u):
                            m.d.comb += [y.eq(quant.o.payload.q), y_valid.eq(quant.o.valid)]
                            m.d.comb += [quant.o.ready.eq(y_ready), quant.scale.ready.eq(1)]
                            with m.If(quant.scale.valid):
                                m.d.sync += [
                                    s_m[sreg_out + scales_in].eq(quant.scale.payload.m),
                                    s_e[sreg_out + scales_in].eq(quant.scale.payload.e),
                                    scales_in.eq(scales_in + 1),
                                ]
                    with m.Case(Unit.ADD):
                        m.d.comb += [y.eq(add_y), y_valid.eq(add_full)]
                        with m.If(y_ready):
                            m.d.sync += add_full.eq(0)
                    with m.Case(Unit.SILU):
                        m.d.comb += [y.eq(u_silu.o.payload.y), y_valid.eq(u_silu.o.valid), u_silu.o.ready.eq(y_ready)]
                    with m.Case(Unit.ROPE):
                        m.d.comb += [
                            y.eq(Mux(second, u_rope.o.payload.b, u_rope.o.payload.a)),
                            y_valid.eq(u_rope.o.valid),
                            u_rope.o.ready.eq(y_ready),
                        ]
                is_rope = unit == Unit.ROPE
                m.d.comb += target.eq(Mux(is_rope, Mux(second, wrow[1], wrow[0]), wrow[2]) + wi)
                wb_done = wo == outer
                with m.If(y_valid & ~wb_done):
                    m.d.comb += [sw.en.eq(1), sw.addr.eq(target), sw.data.eq(y)]
                    with m.If(is_rope & ~second):
                        m.d.sync += second.eq(1)
                    with m.Else():
                        m.d.comb += y_ready.eq(1)
                        m.d.sync += second.eq(0)
                        with m.If(wi == inner - 1):
                            m.d.sync += [wi.eq(0), wo.eq(wo + 1)]
                            for k in range(3):
                                m.d.sync += wrow[k].eq(wrow[k] + strides[k])
                        with m.Else():
                            m.d.sync += wi.eq(wi + 1)
                with m.If(feed_done & wb_done & (~is_quant | (scales_in == outer))):
                    next_instr()

            # ---- LOAD16: inner int16 values from DRAM (addr + POS imm) to scratch c
            with m.State("LOAD_CMD"):
                beats = (inner + 7) >> 3
                m.d.comb += [rdr.cmd.valid.eq(1), rdr.cmd.payload.addr.eq(addr + pos * imm)]
                m.d.comb += rdr.cmd.payload.beats.eq(beats)
                with m.If(rdr.cmd.ready):
                    m.d.sync += [beats_left.eq(beats), lane.eq(0), wi.eq(0)]
                    m.next = "LOAD_DATA"
            with m.State("LOAD_DATA"):
                with m.If(beats_left == 0):
                    next_instr()
                with m.Elif(rdr.data.valid):
                    value = rdr.data.payload.word_select(lane[:3], 16).as_signed()
                    with m.If(wi < inner):
                        m.d.comb += [sw.en.eq(1), sw.addr.eq(bases[2] + wi), sw.data.eq(value)]
                    m.d.sync += [wi.eq(wi + 1), lane.eq(lane + 1)]
                    with m.If(lane == 7):
                        m.d.comb += rdr.data.ready.eq(1)
                        m.d.sync += [lane.eq(0), beats_left.eq(beats_left - 1)]

            # ---- EMBED: the scale word of the TOKEN's block, then its row, scaled
            row_beats = p.row_beats
            block_bytes = 16 * (1 + ROWS_PER_BLOCK * row_beats)
            blk_addr = addr + (token >> 3) * block_bytes
            with m.State("EMB_SCMD"):
                m.d.comb += [rdr.cmd.valid.eq(1), rdr.cmd.payload.addr.eq(blk_addr), rdr.cmd.payload.beats.eq(1)]
                with m.If(rdr.cmd.ready):
                    m.next = "EMB_SCALE"
            with m.State("EMB_SCALE"):
                m.d.comb += rdr.data.ready.eq(1)
                with m.If(rdr.data.valid):
                    m.d.sync += kmant.eq(rdr.data.payload.word_select(token[:3], 16))
                    m.next = "EMB_RCMD"
            with m.State("EMB_RCMD"):
                m.d.comb += [
                    rdr.cmd.valid.eq(1),
                    rdr.cmd.payload.addr.eq(blk_addr + 16 + token[:3] * (16 * row_beats)),
                    rdr.cmd.payload.beats.eq(row_beats),
                ]
                with m.If(rdr.cmd.ready):
                    m.d.sync += [beats_left.eq(row_beats), lane.eq(0), wi.eq(0)]
                    m.next = "EMB_WORD"
            with m.State("EMB_WORD"):
                with m.If(beats_left == 0):
                    next_instr()
                with m.Elif(rdr.data.valid):
                    m.d.sync += word.eq(rdr.data.payload)
                    m.d.comb += rdr.data.ready.eq(1)
                    m.d.sync += [beats_left.eq(beats_left - 1), lane.eq(0)]
                    m.next = "EMB_MUL"
            with m.State("EMB_MUL"):  # q a_q (a_q signed 16)
                m.d.sync += tmp.eq(word.word_select(lane[:4], 8).as_signed() * kmant.as_signed())
                m.next = "EMB_WRITE"
            with m.State("EMB_WRITE"):
                y = _round_shift(m, tmp, imm, 64, "emb_y")
                with m.If(wi < inner):
                    m.d.comb += [sw.en.eq(1), sw.addr.eq(bases[2] + wi), sw.data.eq(_saturate(y))]
                m.d.sync += [wi.eq(wi + 1), lane.eq(lane + 1)]
                with m.If(lane == 15):
                    m.next = "EMB_WORD"
                with m.Else():
                    m.next = "EMB_MUL"

            # ---- LINEAR: the descriptor over the engine's AXI4-Lite, x out, y back scaled
            writes = [
                (Reg.PASSES, strides[1]),
                (Reg.N, outer),
                (Reg.CHUNKS, bases[1]),
                (Reg.M, 1),
                (Reg.ADDR_LO, addr),
                (Reg.ADDR_HI, 0),
                (Reg.BEATS, imm.as_unsigned()),
                (Reg.CTRL, CTRL.pack(start=1)),
            ]
            reg_addr = Array(Const(int(r) * 4, 8) for r, _ in writes)[reg_i]
            reg_val = Array(v if not isinstance(v, int) else Const(v, 32) for _, v in writes)[reg_i]
            d_pad = bases[1] * ep.lanes
            with m.State("LIN_REG"):
                m.d.comb += [
                    eng.s_axil.awaddr.eq(reg_addr),
                    eng.s_axil.wdata.eq(reg_val),
                    eng.s_axil.wstrb.eq(0xF),
                    eng.s_axil.awvalid.eq(1),
                    eng.s_axil.wvalid.eq(1),
                ]
                with m.If(eng.s_axil.awready):
                    m.next = "LIN_B"
            with m.State("LIN_B"):
                m.d.comb += eng.s_axil.bready.eq(1)
                with m.If(eng.s_axil.bvalid):
                    m.d.sync += reg_i.eq(reg_i + 1)
                    with m.If(reg_i == len(writes) - 1):
                        m.d.sync += [fi.eq(0), lane.eq(0)]
                        m.next = "LIN_RD"
                    with m.Else():
                        m.next = "LIN_REG"
            with m.State("LIN_RD"):  # x_q[fi] (zero past d), two cycles an element
                m.d.comb += sr.addr.eq(bases[0] + fi)
                m.next = "LIN_CAP"
            with m.State("LIN_CAP"):
                m.d.sync += [xbeat[lane[:4]].eq(Mux(fi < inner, sr.data[:A], 0)), fi.eq(fi + 1)]
                m.d.sync += lane.eq(lane + 1)
                with m.If(lane == ep.lanes - 1):
                    m.d.sync += lane.eq(0)
                    m.next = "LIN_BEAT"
                with m.Else():
                    m.next = "LIN_RD"
            with m.State("LIN_BEAT"):
                last = fi == d_pad
                m.d.comb += [
                    eng.s_axis_x.tdata.eq(Cat(*xbeat)),
                    eng.s_axis_x.tvalid.eq(1),
                    eng.s_axis_x.tlast.eq(last),
                    eng.s_axis_x.tuser.eq(last),
                ]
                with m.If(eng.s_axis_x.tready):
                    with m.If(last):
                        m.d.sync += wi.eq(0)
                        m.next = "LIN_Y"
                    with m.Else():
                        m.next = "LIN_RD"
            with m.State("LIN_Y"):  # y = saturate(rnd(acc m / 2^(F - FV - e)))
                with m.If(wi == outer):
                    next_instr()
                with m.Else():
                    m.d.comb += eng.m_axis_y.tready.eq(1)
                    with m.If(eng.m_axis_y.tvalid):
                        acc_in = eng.m_axis_y.tdata.as_signed()
                        m.d.sync += tmp.eq(acc_in * s_m[sreg])
                        m.next = "LIN_SCALE"
            with m.State("LIN_SCALE"):
                sh = Signal(signed(16))
                m.d.comb += sh.eq(bases[3].as_signed() - FV - s_e[sreg])
                y = _round_shift(m, tmp, sh, 64, "lin_y")
                m.d.comb += [sw.en.eq(1), sw.addr.eq(bases[2] + wi), sw.data.eq(_saturate(y))]
                m.d.sync += wi.eq(wi + 1)
                m.next = "LIN_Y"

            # ---- KVSTORE: a record {m, e, E | head_dim int8} at addr + POS record bytes
            with m.State("KV_ECMD"):  # V: the running largest exponent from the previous record
                m.d.comb += [
                    rdr.cmd.valid.eq(1),
                    rdr.cmd.payload.addr.eq(addr + (pos - 1) * rec_bytes),
                    rdr.cmd.payload.beats.eq(1),
                ]
                with m.If(rdr.cmd.ready):
                    m.next = "KV_E"
            with m.State("KV_E"):
                m.d.comb += rdr.data.ready.eq(1)
                with m.If(rdr.data.valid):
                    prev = rdr.data.payload[32:48].as_signed()
                    with m.If(prev > E):
                        m.d.sync += E.eq(prev)
                    m.next = "KV_WCMD"
            with m.State("KV_WCMD"):
                m.d.comb += [
                    wtr.cmd.valid.eq(1),
                    wtr.cmd.payload.addr.eq(addr + pos * rec_bytes),
                    wtr.cmd.payload.beats.eq(p.record_beats),
                ]
                with m.If(wtr.cmd.ready):
                    m.d.sync += word.eq(Cat(s_m[sreg], e16, E))
                    m.d.sync += [fi.eq(0), lane.eq(0)]
                    m.next = "KV_SEND"
            with m.State("KV_SEND"):
                m.d.comb += [wtr.data.valid.eq(1), wtr.data.payload.eq(word)]
                with m.If(wtr.data.ready):
                    with m.If(fi == inner):
                        m.next = "KV_WAIT"
                    with m.Else():
                        m.next = "KV_RD"
            with m.State("KV_RD"):
                m.d.comb += sr.addr.eq(bases[0] + fi)
                m.next = "KV_CAP"
            with m.State("KV_CAP"):
                m.d.sync += [word.word_select(lane[:4], 8).eq(sr.data[:8]), fi.eq(fi + 1), lane.eq(lane + 1)]
                with m.If(lane == 15):
                    m.d.sync += lane.eq(0)
                    m.next = "KV_SEND"
                with m.Else():
                    m.next = "KV_RD"
            with m.State("KV_WAIT"):
                with m.If(wtr.done):
                    next_instr()

            # ---- ATTN: q_q into registers; scores over keys 0..POS into the softmax; p.v
            with m.State("ATT_Q"):
                m.d.comb += sr.addr.eq(bases[0] + fi)
                m.d.sync += fi.eq(fi + 1)
                with m.If(fi != 0):
                    m.d.sync += qreg[fi - 1].eq(sr.data[:8])
                with m.If(fi == hd):
                    m.next = "ATT_KCMD"
            keys = pos + 1
            with m.State("ATT_KCMD"):
                m.d.comb += [
                    rdr.cmd.valid.eq(1),
                    rdr.cmd.payload.addr.eq(addr),
                    rdr.cmd.payload.beats.eq(keys * p.record_beats),
                ]
                with m.If(rdr.cmd.ready):
                    m.d.sync += [key.eq(0), fi.eq(0), lane.eq(0)]
                    m.next = "ATT_KSCALE"
            with m.State("ATT_KSCALE"):
                with m.If(key == keys):
                    m.next = "ATT_ECMD"
                with m.Else():
                    m.d.comb += rdr.data.ready.eq(1)
                    with m.If(rdr.data.valid):
                        m.d.sync += [kmant.eq(rdr.data.payload[:16]), kexp.eq(rdr.data.payload[16:28])]
                        m.next = "ATT_K"
            word_last = fi == hd // 16 - 1
            with m.State("ATT_K"):  # q.k a KV word (16 elements) a cycle
                s = u_score.i.payload
                m.d.comb += [
                    s.q.eq(qword[fi[: max(1, (hd // 16 - 1).bit_length())]]),
                    s.k.eq(rdr.data.payload),
                    s.last.eq(word_last),
                    s.q_m.eq(s_m[sreg]),
                    s.q_e.eq(s_e[sreg]),
                    s.k_m.eq(kmant),
                    s.k_e.eq(kexp),
                    u_score.i.valid.eq(rdr.data.valid),
                ]
                with m.If(rdr.data.valid & u_score.i.ready):
                    m.d.comb += rdr.data.ready.eq(1)
                    m.d.sync += fi.eq(fi + 1)
                    with m.If(word_last):
                        m.d.sync += [fi.eq(0), key.eq(key + 1)]
                        m.next = "ATT_KSCALE"
            with m.State("ATT_ECMD"):
                m.d.comb += [
                    rdr.cmd.valid.eq(1),
                    rdr.cmd.payload.addr.eq(imm.as_unsigned() + pos * rec_bytes),
                    rdr.cmd.payload.beats.eq(1),
                ]
                with m.If(rdr.cmd.ready):
                    m.next = "ATT_E"
            with m.State("ATT_E"):
                m.d.comb += rdr.data.ready.eq(1)
                with m.If(rdr.data.valid):
                    m.d.sync += E.eq(rdr.data.payload[32:48])
                    m.next = "ATT_VCMD"
            with m.State("ATT_VCMD"):
                m.d.comb += [
                    rdr.cmd.valid.eq(1),
                    rdr.cmd.payload.addr.eq(imm.as_unsigned()),
                    rdr.cmd.payload.beats.eq(keys * p.record_beats),
                ]
                with m.If(rdr.cmd.ready):
                    m.d.sync += [key.eq(0), fi.eq(0), lane.eq(0), wi.eq(0)]
                    m.next = "ATT_P"
            # the p.v unit's outputs go to scratch c as they come (any state of the V pass)
            with m.State("ATT_P"):  # the key's probability, then its scale word
                with m.If(key == keys):
                    with m.If(wi == hd):
                        next_instr()
                with m.Else():
                    m.d.comb += u_soft.o.ready.eq(1)
                    with m.If(u_soft.o.valid):
                        m.d.sync += pn.eq(u_soft.o.payload.p)
                        m.next = "ATT_VSCALE"
            with m.State("ATT_VSCALE"):
                m.d.comb += rdr.data.ready.eq(1)
                with m.If(rdr.data.valid):
                    m.d.sync += [kmant.eq(rdr.data.payload[:16]), kexp.eq(rdr.data.payload[16:28])]
                    m.next = "ATT_V"
            with m.State("ATT_V"):
                v = u_pv.i.payload
                m.d.comb += [
                    v.v.eq(rdr.data.payload),
                    v.pn.eq(pn),
                    v.m.eq(kmant),
                    v.e.eq(kexp),
                    v.E.eq(E),
                    v.key_last.eq(word_last),
                    v.row_last.eq(key == pos),
                    u_pv.i.valid.eq(rdr.data.valid),
                ]
                with m.If(rdr.data.valid & u_pv.i.ready):
                    m.d.comb += rdr.data.ready.eq(1)
                    m.d.sync += fi.eq(fi + 1)
                    with m.If(word_last):
                        m.d.sync += [fi.eq(0), key.eq(key + 1)]
                        m.next = "ATT_P"

            # ---- LMHEAD: x_q into the unit, then every row of the table
            with m.State("LM_X"):
                m.d.comb += sr.addr.eq(bases[0] + fi)
                m.next = "LM_XCAP"
            with m.State("LM_XCAP"):
                m.d.sync += [xbeat[lane[:4]].eq(Mux(fi < inner, sr.data[:A], 0)), fi.eq(fi + 1), lane.eq(lane + 1)]
                with m.If(lane == 15):
                    m.d.sync += lane.eq(0)
                    m.next = "LM_XW"
                with m.Else():
                    m.next = "LM_X"
            with m.State("LM_XW"):
                m.d.comb += [u_lm.x_we.eq(1), u_lm.x_addr.eq((fi - 1) >> 4), u_lm.x_data.eq(Cat(*xbeat[:16]))]
                with m.If(fi == 16 * row_beats):
                    m.next = "LM_CMD"
                with m.Else():
                    m.next = "LM_X"
            with m.State("LM_CMD"):
                blocks = (outer + ROWS_PER_BLOCK - 1) >> 3
                m.d.comb += [
                    rdr.cmd.valid.eq(1),
                    rdr.cmd.payload.addr.eq(addr),
                    rdr.cmd.payload.beats.eq(blocks * (1 + ROWS_PER_BLOCK * row_beats)),
                ]
                with m.If(rdr.cmd.ready):
                    m.d.comb += [u_lm.start.eq(1), u_lm.rows.eq(outer), u_lm.row_beats.eq(row_beats)]
                    m.next = "LM_RUN"
            with m.State("LM_RUN"):
                m.d.comb += [
                    u_lm.table.valid.eq(rdr.data.valid),
                    u_lm.table.payload.eq(rdr.data.payload),
                    rdr.data.ready.eq(u_lm.table.ready),
                ]
                with m.If(u_lm.done):
                    m.d.sync += [result.eq(u_lm.best), logit.eq(u_lm.logit)]
                    next_instr()

        # the CYC_* counters: the cycles spent in each opcode's states (fetch, dispatch and
        # most command issues are counted by none)
        for kind, states in COUNTED_STATES.items():
            with m.If(Cat(*(fsm.ongoing(st) for st in states)).any()):
                m.d.sync += op_cycles[kind].eq(op_cycles[kind] + 1)

        # p.v results to scratch c (the V pass)
        m.d.comb += u_pv.o.ready.eq(1)
        with m.If(u_pv.o.valid):
            m.d.comb += [sw.en.eq(1), sw.addr.eq(bases[2] + wi), sw.data.eq(u_pv.o.payload.y)]
            m.d.sync += wi.eq(wi + 1)
        with m.If(rdr.error & busy):
            m.d.sync += [error.eq(1), err_code.eq(ERR.BUS)]
        return m
