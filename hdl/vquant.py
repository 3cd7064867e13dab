"""The decoder's vector quantizer (docs/SPEC.md section 9, "Quantize"), bit for bit with
``ptqtp.golden_decoder.quantize_vector``: a row of integers in, its ``bits``-bit values and
their S scale (16-bit mantissa, exponent) out.

    LOAD   rows elements into a buffer, tracking the largest and smallest value
    NORM   sh = bitlen(max|v|) - 24; an = max(|rnd(vmax / 2^sh)|, |rnd(vmin / 2^sh)|)
    DIV    R = floor(Q 2^40 / an), then t = floor(an 2^20 / Q) (one shared restoring divider,
           a quotient bit a cycle)
    SCALE  m = t rounded to 16 bits (a carry renormalized), e = sh - 20 - frac + shift
    OUT    q = clip(rnd(rnd(v / 2^sh) R / 2^40), -Q, Q), one element every two cycles

|rnd(v / 2^sh)| grows with |v| on each side of zero, so the row's extremes give an without a
second pass. A zero row gives q = 0 and the scale (0, 0).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["VectorQuantizer", "SeqDivider"]

NORM_BITS = 24  # rows are normalized to 24-bit magnitudes
R_SHIFT = 40  # R = floor(Q 2^40 / an)
T_SHIFT = 20  # t = floor(an 2^20 / Q)
MANT = 16


class SeqDivider(wiring.Component):
    """Unsigned restoring division, one quotient bit a cycle: ``start`` with ``num`` and ``den``
    (den > 0) gives ``quo`` = floor(num / den) when ``done`` pulses, ``num_width`` cycles later."""

    def __init__(self, num_width: int, den_width: int):
        self.num_width, self.den_width = num_width, den_width
        super().__init__(
            {
                "start": In(1),
                "num": In(num_width),
                "den": In(den_width),
                "quo": Out(num_width),
                "done": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        rem = Signal(self.den_width + 1)
        num = Signal(self.num_width)
        den = Signal(self.den_width)
        count = Signal(range(self.num_width + 1))
        busy = Signal()
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [num.eq(self.num), den.eq(self.den), rem.eq(0), count.eq(self.num_width), busy.eq(1)]
            m.d.sync += self.quo.eq(0)
        with m.Elif(busy):
            shifted = Signal(self.den_width + 2)
            m.d.comb += shifted.eq(Cat(num[-1], rem))
            take = shifted >= den
            m.d.sync += [
                rem.eq(Mux(take, shifted - den, shifted)),
                num.eq(num << 1),
                self.quo.eq(Cat(take, self.quo)),
                count.eq(count - 1),
            ]
            with m.If(count == 1):
                m.d.sync += [busy.eq(0), self.done.eq(1)]
        return m


def _bitlen(m: Module, v, width: int, name: str) -> Signal:
    """The bit length of an unsigned value: a tree of halves (depth log2 width, no long chains)."""
    out = Signal(range(width + 1), name=name)
    if width == 1:
        m.d.comb += out.eq(v[0])
        return out
    low_w = width // 2
    lo = _bitlen(m, v[:low_w], low_w, f"{name}_l")
    hi = _bitlen(m, v[low_w:width], width - low_w, f"{name}_h")
    m.d.comb += out.eq(Mux(v[low_w:width] != 0, low_w + hi, lo))
    return out


def _rnd_shift(v, sh, width: int):
    """rnd(v / 2^sh) for 0 < sh < 64 (round half up), v 2^-sh for -32 < sh <= 0; ``sh`` signed."""
    right = Mux(sh > 0, sh, 0)[:6]
    left = Mux(sh < 0, -sh, 0)[:5]
    half = Mux(sh > 0, Const(1, 64) << (right - 1)[:6], 0)
    down = (v + half) >> right
    return Mux(sh > 0, down, v << left)


class VectorQuantizer(wiring.Component):
    """Quantize rows of up to ``depth`` signed ``width``-bit integers (value v 2^-frac) to
    ``bits`` bits. Input ``i``: (value, last); outputs: ``scale`` (m, e) once a row, before
    its values on ``o`` (q, last). Both outputs wait for ready."""

    def __init__(self, bits: int = 10, width: int = 48, frac: int = 14, depth: int = 2048):
        if not 2 <= bits <= 16:
            raise ValueError(f"bits must be in 2..16, not {bits}")
        self.bits, self.width, self.frac, self.depth = bits, width, frac, depth
        self.Q = 2 ** (bits - 1) - 1
        super().__init__(
            {
                "i": In(stream.Signature(data.StructLayout({"value": signed(width), "last": 1}))),
                "o": Out(stream.Signature(data.StructLayout({"q": signed(bits), "last": 1}))),
                "scale": Out(stream.Signature(data.StructLayout({"m": unsigned(MANT), "e": signed(12)}))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        W, Q = self.width, self.Q
        m.submodules.mem = mem = Memory(shape=signed(W), depth=self.depth, init=[])
        wr, rd = mem.write_port(), mem.read_port()
        num_w = max(R_SHIFT + Q.bit_length(), NORM_BITS + 1 + T_SHIFT) + 1
        m.submodules.div = div = SeqDivider(num_w, NORM_BITS + 2)

        addr = Signal(range(self.depth))
        count = Signal(range(self.depth + 1))
        vmax, vmin = Signal(signed(W)), Signal(signed(W))
        sh = Signal(signed(8))
        an = Signal(NORM_BITS + 2)
        R = Signal(num_w)
        t = Signal(num_w)
        zero = Signal()
        last_out = Signal()

        value = self.i.payload.value
        m.d.comb += [wr.addr.eq(addr), wr.data.eq(value), rd.addr.eq(addr)]

        amax = Signal(W)
        m.d.comb += amax.eq(Mux(vmax >= -vmin, vmax, -vmin).as_unsigned())
        sh_now = Signal(signed(8))
        m.d.comb += sh_now.eq(_bitlen(m, amax, W, "amax_len") - NORM_BITS)
        hi, lo = Signal(signed(W + 2)), Signal(signed(W + 2))
        m.d.comb += [hi.eq(_rnd_shift(vmax, sh_now, W)), lo.eq(_rnd_shift(vmin, sh_now, W))]
        an_now = Mux(hi >= -lo, hi, -lo)

        # OUT: the buffered element, normalized, times R, rounded and clipped
        vn = Signal(signed(NORM_BITS + 2))
        m.d.comb += vn.eq(_rnd_shift(rd.data, sh, W))
        prod = Signal(signed(NORM_BITS + 2 + num_w + 1))
        m.d.comb += prod.eq(vn * R)
        rounded = Signal(signed(len(prod)))
        m.d.comb += rounded.eq((prod + (1 << (R_SHIFT - 1))) >> R_SHIFT)
        q = Mux(rounded > Q, Q, Mux(rounded < -Q, -Q, rounded))

        # SCALE: t to a 16-bit mantissa
        tb = _bitlen(m, t, num_w, "t_len")
        s2 = Signal(signed(8))
        m.d.comb += s2.eq(tb - MANT)
        mt = Signal(MANT + 1)
        m.d.comb += mt.eq(_rnd_shift(t.as_signed(), s2, num_w))
        carry = mt[MANT]
        mant = Mux(carry, mt >> 1, mt)
        exp = sh - T_SHIFT - self.frac + s2 + carry

        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.comb += wr.en.eq(1)
                    with m.If((count == 0) | (value > vmax)):
                        m.d.sync += vmax.eq(value)
                    with m.If((count == 0) | (value < vmin)):
                        m.d.sync += vmin.eq(value)
                    m.d.sync += [addr.eq(addr + 1), count.eq(count + 1)]
                    with m.If(self.i.payload.last):
                        m.next = "NORM"
            with m.State("NORM"):
                m.d.sync += [sh.eq(Mux(amax == 0, 0, sh_now)), an.eq(an_now), zero.eq(amax == 0)]
                m.next = "DIV_R"
            with m.State("DIV_R"):
                m.d.comb += [div.start.eq(1), div.num.eq(Const(Q << R_SHIFT, num_w)), div.den.eq(Mux(zero, 1, an))]
                m.next = "WAIT_R"
            with m.State("WAIT_R"):
                with m.If(div.done):
                    m.d.sync += R.eq(Mux(zero, 0, div.quo))
                    m.next = "DIV_T"
            with m.State("DIV_T"):
                m.d.comb += [div.start.eq(1), div.num.eq(an << T_SHIFT), div.den.eq(Q)]
                m.next = "WAIT_T"
            with m.State("WAIT_T"):
                with m.If(div.done):
                    m.d.sync += t.eq(div.quo)
                    m.next = "SCALE"
            with m.State("SCALE"):
                m.d.comb += [
                    self.scale.valid.eq(1),
                    self.scale.payload.m.eq(Mux(zero, 0, mant)),
                    self.scale.payload.e.eq(Mux(zero, 0, exp)),
                ]
                with m.If(self.scale.ready):
                    m.d.sync += addr.eq(0)
                    m.next = "READ"
            with m.State("READ"):  # the sync read port's data is there a cycle later
                m.d.sync += last_out.eq(addr == count - 1)
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.q.eq(q), self.o.payload.last.eq(last_out)]
                with m.If(self.o.ready):
                    with m.If(last_out):
                        m.d.sync += [addr.eq(0), count.eq(0)]
                        m.next = "LOAD"
                    with m.Else():
                        m.d.sync += addr.eq(addr + 1)
                        m.next = "READ"
        return m
