"""The token core's instructions and host registers (docs/SPEC.md section 11): one definition
for the RTL (``ptqtp.hdl.token_core``), the program compiler (``ptqtp.hdl.token_program``)
and the host driver.

An instruction is eight 32-bit words. Word 0 holds the opcode (bits 0..3), the vector unit
(bits 4..7), the input scale register (8..10), the output scale register (11..13) and a flag
(14). Words 1..5 are the loop and operand fields, 6 and 7 a DRAM address and an immediate::

    w1  outer (0..15), inner (16..31)          loop counts: outer rows of inner elements
    w2  a_base (0..15), a_stride (16..31)      operand a at a_base + o * a_stride + i
    w3  b_base, b_stride                       operand b
    w4  c_base, c_stride                       operand c (for ROPE), or the output
    w5  d_base, d_stride                       operand d (ROPE's sine), or a signed field
    w6  addr                                   DRAM byte address
    w7  imm                                    signed immediate (a shift, a stride, a count)

Scratch addresses are V words (32-bit). Which fields an opcode reads: :data:`OPS`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["Op", "Unit", "Instr", "TokenReg", "TOKEN_ID", "ERR", "OPS", "WORDS", "RECORD_SCALE_BYTES"]

WORDS = 8  # 32-bit words per instruction
TOKEN_ID = 0x50545154  # "PTQT"
RECORD_SCALE_BYTES = 16  # a KV record's scale beat (one 128-bit word)


class Op(enum.IntEnum):
    END = 0  # the token is done: RESULT holds the next token, POS advances
    VOP = 1  # a vector unit over scratch: outer rows of inner elements
    LOAD16 = 2  # inner int16 values from DRAM (addr + POS * imm) to scratch c_base
    EMBED = 3  # the TOKEN's row of the int8 table at addr, scaled (imm = F - FV), to c_base
    LINEAR = 4  # the engine: x_q at a_base (inner = d), n = outer, chunks = b_base, passes =
    #             b_stride, the region at addr of imm beats; y (scale sreg, F = d_base) to c_base
    KVSTORE = 5  # int8 record of a_base (inner = hd) with scale sreg at addr + POS * record bytes
    ATTN = 6  # one head: q_q at a_base (scale sreg), K records at addr, V records at imm; out c_base
    LMHEAD = 7  # argmax over outer rows of the int8 table at addr of x_q at a_base (inner = cols)


class Unit(enum.IntEnum):
    RMSNORM = 0  # a = h, b = w (b_stride 0), imm = F: y to c
    QUANT_A = 1  # a: A-bit values to c, the row's scale to sreg_out + o
    QUANT_8 = 2  # a: 8-bit values (the query and KV cache) to c, scales to sreg_out + o
    ADD = 3  # a + b (saturated) to c
    SILU = 4  # silu(a) b to c
    ROPE = 5  # a, b (the pair), c = cos, d = sin: rotated a, b written back over a, b


#: The fields each opcode reads (the compiler checks them; the rest must be zero).
OPS = {
    Op.END: (),
    Op.VOP: ("unit", "sreg_out", "outer", "inner", "a", "b", "c", "d", "imm"),
    Op.LOAD16: ("inner", "c", "addr", "imm"),
    Op.EMBED: ("inner", "c", "addr", "imm"),
    Op.LINEAR: ("sreg", "outer", "inner", "a", "b", "c", "d", "addr", "imm"),
    Op.KVSTORE: ("sreg", "flag", "inner", "a", "addr"),
    Op.ATTN: ("sreg", "inner", "a", "c", "addr", "imm"),
    Op.LMHEAD: ("sreg", "outer", "inner", "a", "addr"),
}


@dataclass
class Instr:
    """One instruction; ``a`` .. ``d`` are (base, stride) pairs."""

    op: Op
    unit: int = 0
    sreg: int = 0
    sreg_out: int = 0
    flag: int = 0  # KVSTORE: the V cache (keep the running largest exponent)
    outer: int = 1
    inner: int = 0
    a: tuple[int, int] = (0, 0)
    b: tuple[int, int] = (0, 0)
    c: tuple[int, int] = (0, 0)
    d: tuple[int, int] = (0, 0)
    addr: int = 0
    imm: int = 0
    note: str = field(default="", compare=False)  # what it does, for listings

    def words(self) -> list[int]:
        def u16(v: int, what: str) -> int:
            if not -(2**15) <= v < 2**16:
                raise ValueError(f"{self.note or self.op.name}: {what} = {v} does not fit 16 bits")
            return v & 0xFFFF

        for name, lo, hi in (("sreg", 0, 7), ("sreg_out", 0, 7), ("unit", 0, 15), ("flag", 0, 1)):
            if not lo <= getattr(self, name) <= hi:
                raise ValueError(f"{self.note or self.op.name}: {name} = {getattr(self, name)} is not in {lo}..{hi}")
        if not 0 <= self.addr < 2**32 or not -(2**31) <= self.imm < 2**32:
            raise ValueError(f"{self.note or self.op.name}: addr {self.addr} or imm {self.imm} does not fit 32 bits")
        w0 = int(self.op) | self.unit << 4 | self.sreg << 8 | self.sreg_out << 11 | self.flag << 14
        pair = [
            u16(base, f"{n}_base") | u16(stride, f"{n}_stride") << 16
            for n, (base, stride) in zip("abcd", (self.a, self.b, self.c, self.d))
        ]
        return [w0, u16(self.outer, "outer") | u16(self.inner, "inner") << 16, *pair, self.addr, self.imm & 0xFFFFFFFF]


class TokenReg(enum.IntEnum):
    """The token core's AXI4-Lite registers (word addresses)."""

    ID = 0  # R: TOKEN_ID
    CTRL = 1  # W: bit 0 run the program for TOKEN at POS; bit 1 clear DONE and the error
    STATUS = 2  # R: bit 0 busy, bit 1 done, bit 2 error; bits 8..15 the error code (ERR)
    TOKEN = 3  # RW: the input token id
    POS = 4  # RW: its position (the KV cache's length); END advances it
    RESULT = 5  # R: the next token (argmax of the logits, the lowest id on a tie)
    LOGIT_LO = 6  # R: its integer logit, low word
    LOGIT_HI = 7  # R: high word
    CYCLES = 8  # R: cycles of the last token
    PROG_ADDR = 9  # W: program word address for PROG_DATA
    PROG_DATA = 10  # W: a program word; PROG_ADDR advances
    VOCAB = 11  # R: the vocabulary the core was built for
    CAPACITY = 12  # R: the KV cache's capacity in tokens
    # cycles of the last token by opcode (VOP, LOAD16 + EMBED, LINEAR, KVSTORE, ATTN, LMHEAD)
    CYC_VOP = 16
    CYC_LOAD = 17
    CYC_LINEAR = 18
    CYC_KV = 19
    CYC_ATTN = 20
    CYC_LMHEAD = 21


class ERR(enum.IntEnum):
    NONE = 0
    TOKEN_RANGE = 1  # TOKEN >= VOCAB
    CONTEXT_FULL = 2  # POS >= CAPACITY
    BAD_OP = 3  # an unknown opcode or unit
    BUS = 4  # a DRAM response other than OKAY
