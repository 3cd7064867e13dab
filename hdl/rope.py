"""Rotary embedding of one pair (i, i + head_dim / 2), V to V (docs/SPEC.md section 9,
*RoPE*), bit for bit with ``ptqtp.golden_decoder.GoldenDecoder.rope``:

    a' = saturate(rnd((a c - b s) / 2^14)),  b' = saturate(rnd((b c + a s) / 2^14))

with c, s the Q1.14 cos/sin of the pair's angle at the token's position (``rope_table``,
given as data). Four products in one stage, the sums with the rounding half in the next,
then the shift and saturation: one pair every four cycles.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RopeUnit"]

V_MAX = 2**31 - 1


class RopeUnit(wiring.Component):
    """Input ``i`` (a, b, c, s, last); output ``o`` (a, b, last)."""

    def __init__(self, frac: int = 14):
        self.frac = frac
        pair = {"a": signed(32), "b": signed(32)}
        super().__init__(
            {
                "i": In(stream.Signature(data.StructLayout(pair | {"c": signed(16), "s": signed(16), "last": 1}))),
                "o": Out(stream.Signature(data.StructLayout(pair | {"last": 1}))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        f = self.frac
        a, b, c, s = Signal(signed(32)), Signal(signed(32)), Signal(signed(16)), Signal(signed(16))
        last = Signal()
        ac, bs, bc, as_ = (Signal(signed(48), name=n) for n in ("ac", "bs", "bc", "as_"))
        x, y = Signal(signed(50)), Signal(signed(50))
        xo, yo = Signal(signed(32)), Signal(signed(32))

        def sat(v):
            return Mux(v > V_MAX, V_MAX, Mux(v < -V_MAX, -V_MAX, v))

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    p = self.i.payload
                    m.d.sync += [a.eq(p.a), b.eq(p.b), c.eq(p.c), s.eq(p.s), last.eq(p.last)]
                    m.next = "PRODUCTS"
            with m.State("PRODUCTS"):
                m.d.sync += [ac.eq(a * c), bs.eq(b * s), bc.eq(b * c), as_.eq(a * s)]
                m.next = "SUMS"
            with m.State("SUMS"):
                m.d.sync += [x.eq(ac - bs + (1 << (f - 1))), y.eq(bc + as_ + (1 << (f - 1)))]
                m.next = "SHIFT"
            with m.State("SHIFT"):
                m.d.sync += [xo.eq(sat(x >> f)), yo.eq(sat(y >> f))]
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [
                    self.o.valid.eq(1),
                    self.o.payload.a.eq(xo),
                    self.o.payload.b.eq(yo),
                    self.o.payload.last.eq(last),
                ]
                with m.If(self.o.ready):
                    m.next = "IDLE"
        return m
