"""Attention scores in log2 units (docs/SPEC.md section 9, *Attention*), bit for bit with
``ptqtp.golden_decoder.GoldenDecoder.attention``'s t before the softmax: for one key,

    dot = sum q_q k_q (int8 x int8)
    qc = s_q c,  mu = qc s_k            S products: the 32-bit product rounded to 16 bits
    t = clip(rnd(dot mu_m / 2^-(mu_e + FT)), -2^40, 2^40)

with c = ``score_scale(head_dim)`` = log2(e) / sqrt(head_dim). The query's and the key's
scales come with the key's last element.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ptqtp.golden_decoder import score_scale

from .vquant import MANT, _bitlen

__all__ = ["ScoreUnit"]

T_MAX = 2**40


class ScoreUnit(wiring.Component):
    """Input ``i``: (q, k, last, q_m, q_e, k_m, k_e) per element of a key, or with ``lanes`` > 1
    per word of ``lanes`` elements (q, k packed, lane j at bits 8j; their products are
    registered and summed a cycle later); output ``o``: t."""

    def __init__(self, head_dim: int, frac: int = 10, lanes: int = 1):
        if lanes < 1 or head_dim % lanes:
            raise ValueError(f"lanes must divide head_dim {head_dim}, not {lanes}")
        self.head_dim, self.frac, self.lanes = head_dim, frac, lanes
        c = score_scale(head_dim)
        self.c_m, self.c_e = int(c.m[0]), int(c.e[0])
        scale = {"q_m": unsigned(MANT), "q_e": signed(12), "k_m": unsigned(MANT), "k_e": signed(12)}
        elem = signed(8) if lanes == 1 else unsigned(8 * lanes)
        super().__init__(
            {
                "i": In(stream.Signature(data.StructLayout({"q": elem, "k": elem, "last": 1} | scale))),
                "o": Out(stream.Signature(data.StructLayout({"t": signed(42)}))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        FT = self.frac
        acc = Signal(signed(8 + 8 + self.head_dim.bit_length() + 1))
        q_m, q_e, k_m, k_e = Signal(MANT), Signal(signed(12)), Signal(MANT), Signal(signed(12))
        prod = Signal(2 * MANT)  # an S product
        plen = _bitlen(m, prod, 2 * MANT, "plen")
        sh = Signal(6)
        prod_a = Signal(2 * MANT + 1)
        mt = Signal(MANT + 1)
        s_m, s_e = Signal(MANT), Signal(signed(12))  # the running S product: qc, then mu
        second = Signal()  # which product: 0 = qc, 1 = mu
        e_sum = Signal(signed(13))
        tp = Signal(signed(len(acc) + MANT))
        right, left = Signal(7), Signal(6)
        tp_a = Signal(signed(len(tp) + 1))
        t = Signal(signed(42))

        L = self.lanes
        prods = [Signal(signed(16), name=f"pr{j}") for j in range(L)]
        pend = Signal()  # lanes > 1: a word's products wait to be summed
        tree = sum(prods) if L > 1 else 0
        with m.FSM():
            with m.State("ACC"):
                m.d.comb += self.i.ready.eq(1)
                p = self.i.payload
                if L > 1:
                    with m.If(pend):
                        m.d.sync += acc.eq(acc + tree)
                    m.d.sync += pend.eq(self.i.valid)
                with m.If(self.i.valid):
                    if L == 1:
                        m.d.sync += acc.eq(acc + p.q * p.k)
                    else:
                        for j in range(L):
                            m.d.sync += prods[j].eq(
                                p.q[8 * j : 8 * j + 8].as_signed() * p.k[8 * j : 8 * j + 8].as_signed()
                            )
                    with m.If(p.last):
                        m.d.sync += [q_m.eq(p.q_m), q_e.eq(p.q_e), k_m.eq(p.k_m), k_e.eq(p.k_e), second.eq(0)]
                        m.next = "MUL" if L == 1 else "DRAIN"
            if L > 1:
                with m.State("DRAIN"):  # the key's last word's products
                    m.d.sync += [acc.eq(acc + tree), pend.eq(0)]
                    m.next = "MUL"
            with m.State("MUL"):  # qc = q_scale c, then mu = qc k_scale
                with m.If(~second):
                    m.d.sync += [prod.eq(q_m * self.c_m), e_sum.eq(q_e + self.c_e)]
                with m.Else():
                    m.d.sync += [prod.eq(s_m * k_m), e_sum.eq(s_e + k_e)]
                m.next = "LEN"
            with m.State("LEN"):
                m.d.sync += sh.eq(Mux(plen > MANT, plen - MANT, 0))
                m.next = "ADD"
            with m.State("ADD"):
                m.d.sync += prod_a.eq(prod + Mux(sh > 0, Const(1, 2 * MANT) << (sh - 1)[:5], 0))
                m.next = "SHIFT"
            with m.State("SHIFT"):
                m.d.comb += mt.eq(Mux(sh > 0, prod_a >> sh, prod << (MANT - plen)[:5]))
                carry = mt[MANT]
                m.d.sync += [
                    s_m.eq(Mux(carry, mt >> 1, mt)),
                    s_e.eq(Mux(prod == 0, 0, e_sum + Mux(sh > 0, sh, plen - MANT) + carry)),
                    second.eq(1),
                ]
                with m.If(second):
                    m.next = "T_MUL"
                with m.Else():
                    m.next = "MUL"
            with m.State("T_MUL"):  # t = rnd(dot mu_m 2^(mu_e + FT))
                m.d.sync += [
                    tp.eq(acc * s_m),
                    right.eq(Mux(-(s_e + FT) > 0, -(s_e + FT), 0)),
                    left.eq(Mux(s_e + FT > 0, s_e + FT, 0)),
                ]
                m.next = "T_ADD"
            with m.State("T_ADD"):
                m.d.sync += tp_a.eq(tp + Mux(right > 0, Const(1, 64) << (right - 1)[:6], 0))
                m.next = "T_SHIFT"
            with m.State("T_SHIFT"):
                wide = Mux(right > 0, tp_a >> right, tp << left)
                m.d.sync += t.eq(Mux(wide > T_MAX, T_MAX, Mux(wide < -T_MAX, -T_MAX, wide)))
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.t.eq(t)]
                with m.If(self.o.ready):
                    m.d.sync += acc.eq(0)
                    m.next = "ACC"
        return m
