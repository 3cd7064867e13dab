"""The norm's 1/rms as an S scalar (docs/SPEC.md section 9, *RMSNorm*), bit for bit with
``ptqtp.golden_decoder.rsqrt_scalar``: from the row's sum of squares of its 24-bit normalized
values and its shift sh,

    v = sumsq + rnd(eps d 2^(2 FV - 2 sh))       eps's exact binary value, a constant
    r = isqrt(floor(d 2^80 / v))                  a restoring divider, then a bit-serial root
    1/rms = r rounded to a 16-bit mantissa, exponent FV - sh - 40 + shift

One request at a time, about d.bit_length() + 130 cycles. A zero row's r is left unspecified
(the norm's output is zero whatever it is).
"""

from __future__ import annotations

import math
from fractions import Fraction

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .vquant import MANT, SeqDivider, _bitlen

__all__ = ["IntSqrt", "RsqrtUnit"]

P_SHIFT = 80  # r = isqrt(floor(d 2^80 / v))


class IntSqrt(wiring.Component):
    """floor(sqrt(n)) of an unsigned ``width``-bit n (even width), one result bit a cycle:
    ``start`` with ``n``; ``root`` is valid when ``done`` pulses."""

    def __init__(self, width: int):
        self.width = width + width % 2
        super().__init__({"start": In(1), "n": In(self.width), "root": Out(self.width // 2), "done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        K = self.width // 2
        n = Signal(self.width)
        rem = Signal(K + 2)
        count = Signal(range(K + 1))
        busy = Signal()
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [n.eq(self.n), rem.eq(0), self.root.eq(0), count.eq(K), busy.eq(1)]
        with m.Elif(busy):
            cur = Cat(n[-2:], rem)  # rem * 4 + the next two bits
            trial = Cat(Const(1, 2), self.root)  # root * 4 + 1
            take = cur >= trial
            m.d.sync += [
                rem.eq(Mux(take, cur - trial, cur)),
                n.eq(n << 2),
                self.root.eq(Cat(take, self.root)),
                count.eq(count - 1),
            ]
            with m.If(count == 1):
                m.d.sync += [busy.eq(0), self.done.eq(1)]
        return m


class RsqrtUnit(wiring.Component):
    """Input ``i``: (sumsq, sh) per row of ``d`` values, sh >= 0 (``normalize_rows(h, up=False)``);
    output ``o``: (m, e), value m 2^e."""

    def __init__(self, d: int, eps: float, frac: int = 14, sumsq_width: int = 64):
        self.d, self.eps, self.frac = d, eps, frac
        self.sumsq_width = sumsq_width
        f = Fraction(eps)
        if f <= 0 or f.denominator & (f.denominator - 1):
            raise ValueError(f"eps must be a positive binary fraction (a float), not {eps!r}")
        # eps d = C 2^-E exactly: the term is rnd(C 2^(2 frac - 2 sh - E))
        self.C, self.E = f.numerator * d, f.denominator.bit_length() - 1
        most_left = max(0, 2 * frac - self.E)  # sh >= 0 (the norm never shifts a row up)
        if (self.C << most_left).bit_length() > sumsq_width or most_left > 15:
            raise ValueError(f"eps {eps!r} is too large for a {sumsq_width}-bit sum of squares")
        super().__init__(
            {
                "i": In(stream.Signature(data.StructLayout({"sumsq": unsigned(sumsq_width), "sh": signed(8)}))),
                "o": Out(stream.Signature(data.StructLayout({"m": unsigned(MANT), "e": signed(12)}))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        d, frac = self.d, self.frac
        num = d << P_SHIFT
        num_w = num.bit_length()
        den_w = self.sumsq_width + 1
        m.submodules.div = div = SeqDivider(num_w, den_w)
        root_w = 2 * math.ceil(num_w / 2)
        m.submodules.sqrt = sq = IntSqrt(root_w)

        sumsq = Signal(self.sumsq_width)
        sh = Signal(signed(8))
        shift = Signal(signed(10))  # the eps term's right shift: E - 2 frac + 2 sh
        term = Signal(den_w)
        v = Signal(den_w)
        r = Signal(root_w // 2)
        c_w = self.C.bit_length() + 8
        C = Const(self.C, c_w)
        s2 = Signal(signed(8))
        r_a = Signal(len(r) + 1)
        mt = Signal(MANT + 1)
        r_len = _bitlen(m, r, len(r), "r_len")
        right = Signal(8)
        left = Signal(8)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [sumsq.eq(self.i.payload.sumsq), sh.eq(self.i.payload.sh)]
                    m.next = "SHIFT"
            with m.State("SHIFT"):
                m.d.sync += shift.eq(self.E - 2 * frac + 2 * sh)
                m.next = "CONTROLS"
            with m.State("CONTROLS"):
                m.d.sync += [right.eq(Mux(shift > 0, shift, 0)), left.eq(Mux(shift < 0, -shift, 0))]
                m.next = "TERM"
            with m.State("TERM"):  # rnd(C 2^-shift): (C + 2^(shift-1)) >> shift, or C << -shift
                half = Mux(right > 0, Const(1, c_w) << (right - 1)[:7], 0)
                m.d.sync += term.eq(Mux(right > 0, (C + half) >> right, C << left[:4]))
                m.next = "SUM"
            with m.State("SUM"):
                m.d.sync += v.eq(sumsq + term)
                m.next = "DIVIDE"
            with m.State("DIVIDE"):
                m.d.comb += [div.start.eq(1), div.num.eq(num), div.den.eq(Mux(v == 0, 1, v))]
                m.next = "WAIT_DIV"
            with m.State("WAIT_DIV"):
                with m.If(div.done):
                    m.next = "ROOT"
            with m.State("ROOT"):
                m.d.comb += [sq.start.eq(1), sq.n.eq(div.quo)]
                m.next = "WAIT_ROOT"
            with m.State("WAIT_ROOT"):
                with m.If(sq.done):
                    m.d.sync += r.eq(sq.root)
                    m.next = "R_LEN"
            with m.State("R_LEN"):
                m.d.sync += s2.eq(r_len - MANT)
                m.next = "R_ADD"
            with m.State("R_ADD"):
                m.d.sync += r_a.eq(r + Mux(s2 > 0, Const(1, len(r_a)) << (s2 - 1)[:6], 0))
                m.next = "MANTISSA"
            with m.State("MANTISSA"):
                m.d.sync += mt.eq(Mux(s2 > 0, r_a >> Mux(s2 > 0, s2, 0)[:6], r << Mux(s2 < 0, -s2, 0)[:5]))
                m.next = "SEND"
            with m.State("SEND"):
                carry = mt[MANT]
                m.d.comb += [
                    self.o.valid.eq(1),
                    self.o.payload.m.eq(Mux(carry, mt >> 1, mt)),
                    self.o.payload.e.eq(frac - sh - 40 + s2 + carry),
                ]
                with m.If(self.o.ready):
                    m.next = "IDLE"
        return m
