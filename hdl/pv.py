"""Attention's p·v for one row (docs/SPEC.md section 9, *Attention*), bit for bit with
``ptqtp.golden_decoder.weighted_values``: per key, w = rnd(pn m_v / 2^(E - e_v)) (E, the
row's largest value exponent, comes with every element); o += w v_q over the key's head_dim
values; after the row's last key, out = saturate(rnd(o / 2^(2 - E))) for each of head_dim.
"""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ptqtp.golden_decoder import FV

from .vquant import MANT

__all__ = ["PVUnit"]

V_MAX = 2**31 - 1
ACC = 56


class PVUnit(wiring.Component):
    """Input ``i``: (v, pn, m, e, E, key_last, row_last) per value of a key (pn, m, e and E
    constant over the key), or with ``lanes`` > 1 per word of ``lanes`` values (v packed,
    lane j at bits 8j); output ``o``: (y, last), head_dim values per row."""

    def __init__(self, head_dim: int, lanes: int = 1):
        if lanes < 1 or head_dim % lanes:
            raise ValueError(f"lanes must divide head_dim {head_dim}, not {lanes}")
        self.head_dim, self.lanes = head_dim, lanes
        layout = {
            "v": signed(8) if lanes == 1 else unsigned(8 * lanes),
            "pn": unsigned(17),
            "m": unsigned(MANT),
            "e": signed(12),
            "E": signed(12),
            "key_last": 1,
            "row_last": 1,
        }
        super().__init__(
            {
                "i": In(stream.Signature(data.StructLayout(layout))),
                "o": Out(stream.Signature(data.StructLayout({"y": signed(32), "last": 1}))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        hd = self.head_dim
        L = self.lanes
        outs = [Signal(signed(ACC), name=f"o{i}") for i in range(hd)]
        acc = Array(outs)
        lanes_acc = [Array(outs[j::L]) for j in range(L)]
        idx = Signal(range(hd))
        p = self.i.payload
        pm = Signal(2 * MANT + 1)
        sh = Signal(7)
        pm_a = Signal(2 * MANT + 2)
        w = Signal(2 * MANT + 1)
        E = Signal(signed(12))
        right, left = Signal(7), Signal(6)
        o_a = Signal(signed(ACC + 1))
        y = Signal(signed(32))
        last_out = Signal()
        clear = Signal()

        with m.FSM():
            with m.State("KEY"):  # the key's first value is looked at, not taken yet
                with m.If(self.i.valid):
                    d = p.E - p.e
                    m.d.sync += [pm.eq(p.pn * p.m), sh.eq(Mux(d > 62, 62, Mux(d > 0, d, 0))), E.eq(p.E)]
                    m.next = "W_ADD"
            with m.State("W_ADD"):
                m.d.sync += pm_a.eq(pm + Mux(sh > 0, Const(1, 64) << (sh - 1)[:6], 0))
                m.next = "W_SHIFT"
            with m.State("W_SHIFT"):
                m.d.sync += w.eq(pm_a >> sh)
                m.next = "VALUES"
            with m.State("VALUES"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    if L == 1:
                        m.d.sync += acc[idx].eq(Mux(clear, 0, acc[idx]) + w * p.v)
                    else:  # a word: lane j's accumulators are every L-th, a (hd / L)-way choice
                        for j in range(L):
                            lane_acc = lanes_acc[j][idx[: max(1, (hd // L - 1).bit_length())]]
                            v = p.v[8 * j : 8 * j + 8].as_signed()
                            m.d.sync += lane_acc.eq(Mux(clear, 0, lane_acc) + w * v)
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(p.key_last):
                        m.d.sync += [idx.eq(0), clear.eq(0)]
                        with m.If(p.row_last):
                            m.next = "OUT_CONTROLS"
                        with m.Else():
                            m.next = "KEY"
            with m.State("OUT_CONTROLS"):  # out = rnd(o 2^(E - 16 + FV))
                s = 16 - FV - E
                m.d.sync += [right.eq(Mux(s > 0, s, 0)), left.eq(Mux(s < 0, -s, 0))]
                m.next = "OUT_ADD"
            with m.State("OUT_ADD"):
                m.d.sync += [
                    o_a.eq(acc[idx] + Mux(right > 0, Const(1, 64) << (right - 1)[:6], 0)),
                    last_out.eq(idx == hd - 1),
                ]
                m.next = "OUT_SHIFT"
            with m.State("OUT_SHIFT"):
                wide = Mux(right > 0, o_a >> right, acc[idx] << left)
                m.d.sync += y.eq(Mux(wide > V_MAX, V_MAX, Mux(wide < -V_MAX, -V_MAX, wide)))
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.y.eq(y), self.o.payload.last.eq(last_out)]
                with m.If(self.o.ready):
                    with m.If(last_out):
                        m.d.sync += [idx.eq(0), clear.eq(1)]
                        m.next = "KEY"
                    with m.Else():
                        m.d.sync += idx.eq(idx + 1)
                        m.next = "OUT_ADD"
        return m
