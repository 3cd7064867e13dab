"""RMSNorm, V to V (docs/SPEC.md section 9, *RMSNorm*), bit for bit with
``ptqtp.golden_decoder.GoldenDecoder.rmsnorm``:

    LOAD    the row's h (int32) and norm weights w_q (int16) into a buffer, tracking its extremes
    NORM    sh = max(bitlen(max|h|) - 24, 0); hn = rnd(h / 2^sh)
    SUMSQ   sum of hn^2 over the row (an element every four cycles)
    RSQRT   1/rms = (m, e) from ``RsqrtUnit``
    OUT     out = saturate(rnd(hn w_q m / 2^-(e + sh - F))), an element every six cycles

F is the norm weights' exponent (w = w_q 2^-F), given with the row's last element.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .rsqrt import RsqrtUnit
from .vquant import MANT, NORM_BITS, _bitlen

__all__ = ["RMSNormUnit"]

V_BITS = 32
V_MAX = 2**31 - 1


class RMSNormUnit(wiring.Component):
    """Rows of exactly ``d`` elements: input ``i`` (h, w, F, last), output ``o`` (y, last)."""

    def __init__(self, d: int, eps: float, frac: int = 14):
        self.d, self.eps, self.frac = d, eps, frac
        super().__init__(
            {
                "i": In(
                    stream.Signature(
                        data.StructLayout({"h": signed(V_BITS), "w": signed(16), "F": signed(8), "last": 1})
                    )
                ),
                "o": Out(stream.Signature(data.StructLayout({"y": signed(V_BITS), "last": 1}))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        d = self.d
        m.submodules.mem = mem = Memory(shape=V_BITS + 16, depth=d, init=[])
        wr, rd = mem.write_port(), mem.read_port()
        m.submodules.rsqrt = rs = RsqrtUnit(d, self.eps, self.frac)

        addr = Signal(range(d + 1))
        vmax, vmin = Signal(signed(V_BITS)), Signal(signed(V_BITS))
        F = Signal(signed(8))
        amax = Signal(V_BITS)
        amax_len = _bitlen(m, amax, V_BITS, "h_len")
        sh = Signal(8)
        half = Signal(V_BITS)
        h_r, w_r = Signal(signed(V_BITS)), Signal(signed(16))
        hn = Signal(signed(NORM_BITS + 2))
        sq = Signal(2 * NORM_BITS + 2)
        sumsq = Signal(64)
        r_m, r_e = Signal(MANT), Signal(signed(12))
        shift = Signal(signed(12))  # out = rnd(hn w m / 2^shift)
        right, left = Signal(7), Signal(6)
        p1 = Signal(signed(NORM_BITS + 2 + 16))
        p2 = Signal(signed(NORM_BITS + 2 + 16 + MANT + 1))
        p2_a = Signal(signed(len(p2) + 1))
        y = Signal(signed(V_BITS))
        last_out = Signal()
        wide = Signal(signed(len(p2) + 64))

        m.d.comb += [
            wr.addr.eq(addr),
            wr.data.eq(Cat(self.i.payload.h, self.i.payload.w)),
            rd.addr.eq(addr),
        ]

        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    h = self.i.payload.h
                    m.d.comb += wr.en.eq(1)
                    with m.If((addr == 0) | (h > vmax)):
                        m.d.sync += vmax.eq(h)
                    with m.If((addr == 0) | (h < vmin)):
                        m.d.sync += vmin.eq(h)
                    m.d.sync += addr.eq(addr + 1)
                    with m.If(self.i.payload.last):
                        m.d.sync += F.eq(self.i.payload.F)
                        m.next = "AMAX"
            with m.State("AMAX"):
                m.d.sync += amax.eq(Mux(vmax >= -vmin, vmax, -vmin).as_unsigned())
                m.next = "SHIFT"
            with m.State("SHIFT"):
                m.d.sync += sh.eq(Mux(amax_len > NORM_BITS, amax_len - NORM_BITS, 0))
                m.next = "CONTROLS"
            with m.State("CONTROLS"):
                m.d.sync += [half.eq(Mux(sh > 0, Const(1, V_BITS) << (sh - 1)[:5], 0)), addr.eq(0), sumsq.eq(0)]
                m.next = "SQ_READ"
            # pass 2: the sum of squares of hn
            with m.State("SQ_READ"):
                m.next = "SQ_FETCH"
            with m.State("SQ_FETCH"):
                m.d.sync += [h_r.eq(rd.data[:V_BITS]), w_r.eq(rd.data[V_BITS:])]
                m.next = "SQ_NORM"
            with m.State("SQ_NORM"):
                m.d.sync += hn.eq((h_r + half) >> sh)
                m.next = "SQ_SQUARE"
            with m.State("SQ_SQUARE"):
                m.d.sync += sq.eq(hn * hn)
                m.next = "SQ_ADD"
            with m.State("SQ_ADD"):
                m.d.sync += [sumsq.eq(sumsq + sq), addr.eq(addr + 1)]
                with m.If(addr == d - 1):
                    m.next = "RSQRT"
                with m.Else():
                    m.next = "SQ_READ"
            with m.State("RSQRT"):
                m.d.comb += [rs.i.valid.eq(1), rs.i.payload.sumsq.eq(sumsq), rs.i.payload.sh.eq(sh)]
                with m.If(rs.i.ready):
                    m.next = "WAIT_RSQRT"
            with m.State("WAIT_RSQRT"):
                m.d.comb += rs.o.ready.eq(1)
                with m.If(rs.o.valid):
                    m.d.sync += [r_m.eq(rs.o.payload.m), r_e.eq(rs.o.payload.e)]
                    m.next = "OUT_SHIFT"
            with m.State("OUT_SHIFT"):  # y = rnd(hn w m 2^(e + sh - F))
                m.d.sync += [shift.eq(F - r_e - sh), addr.eq(0)]
                m.next = "OUT_CONTROLS"
            with m.State("OUT_CONTROLS"):
                m.d.sync += [right.eq(Mux(shift > 0, shift, 0)), left.eq(Mux(shift < 0, -shift, 0))]
                m.next = "READ"
            # pass 3: the output
            with m.State("READ"):
                m.d.sync += last_out.eq(addr == d - 1)
                m.next = "FETCH"
            with m.State("FETCH"):
                m.d.sync += [h_r.eq(rd.data[:V_BITS]), w_r.eq(rd.data[V_BITS:])]
                m.next = "NORMALIZE"
            with m.State("NORMALIZE"):
                m.d.sync += hn.eq((h_r + half) >> sh)
                m.next = "WEIGHT"
            with m.State("WEIGHT"):
                m.d.sync += p1.eq(hn * w_r)
                m.next = "SCALE"
            with m.State("SCALE"):
                m.d.sync += p2.eq(p1 * r_m)
                m.next = "ROUND_ADD"
            with m.State("ROUND_ADD"):
                m.d.sync += p2_a.eq(p2 + Mux(right > 0, Const(1, 64) << (right - 1)[:6], 0))
                m.next = "ROUND_SHIFT"
            with m.State("ROUND_SHIFT"):
                m.d.comb += wide.eq(Mux(right > 0, p2_a >> right, p2 << left))
                m.d.sync += y.eq(Mux(wide > V_MAX, V_MAX, Mux(wide < -V_MAX, -V_MAX, wide)))
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.y.eq(y), self.o.payload.last.eq(last_out)]
                with m.If(self.o.ready):
                    with m.If(last_out):
                        m.d.sync += addr.eq(0)
                        m.next = "LOAD"
                    with m.Else():
                        m.d.sync += addr.eq(addr + 1)
                        m.next = "READ"
        return m
