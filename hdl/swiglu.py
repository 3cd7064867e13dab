"""SwiGLU's silu(g) u, V to V (docs/SPEC.md section 9, *SwiGLU*), bit for bit with
``ptqtp.golden_decoder.GoldenDecoder.silu_mul``: the sigmoid from ``sigmoid_table`` in a ROM
read at two neighbouring entries, linear interpolation, then two products, each rounded
(round half up) by an add stage and a shift. One element every ten cycles.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ptqtp.golden_decoder import FV, sigmoid_table

__all__ = ["SiluMulUnit"]

V_MAX = 2**31 - 1


class SiluMulUnit(wiring.Component):
    """Input ``i`` (g, u, last), V values; output ``o`` (y, last) = saturate(silu(g) u)."""

    def __init__(self, step_bits: int = 5):
        self.step_bits = step_bits
        super().__init__(
            {
                "i": In(stream.Signature(data.StructLayout({"g": signed(32), "u": signed(32), "last": 1}))),
                "o": Out(stream.Signature(data.StructLayout({"y": signed(32), "last": 1}))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        sb = self.step_bits
        fb = FV - sb  # fraction bits below a table step
        table = [int(v) for v in sigmoid_table(sb)]
        m.submodules.rom = rom = Memory(shape=unsigned(17), depth=len(table), init=table)
        rd0, rd1 = rom.read_port(), rom.read_port()
        lo, hi = -(16 << FV), (16 << FV) - 1

        g, u = Signal(signed(32)), Signal(signed(32))
        last = Signal()
        gc = Signal(FV + 6)
        t0, t1 = Signal(17), Signal(17)
        interp = Signal(17 + fb + 1)
        sig = Signal(18)
        gs = Signal(signed(32 + 18 + 1))
        silu = Signal(signed(34))
        su = Signal(signed(34 + 32 + 1))
        y = Signal(signed(32))
        m.d.comb += [rd0.addr.eq(gc >> fb), rd1.addr.eq((gc >> fb) + 1)]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    p = self.i.payload
                    m.d.sync += [g.eq(p.g), u.eq(p.u), last.eq(p.last)]
                    m.next = "CLIP"
            with m.State("CLIP"):
                m.d.sync += gc.eq(Mux(g < lo, lo, Mux(g > hi, hi, g)) - lo)
                m.next = "ADDRESS"
            with m.State("ADDRESS"):  # both ROM ports read at gc's index this cycle
                m.next = "LOOKUP"
            with m.State("LOOKUP"):
                m.d.sync += [t0.eq(rd0.data), t1.eq(rd1.data)]
                m.next = "INTERP"
            with m.State("INTERP"):
                m.d.sync += interp.eq((t1 - t0) * gc[:fb] + (1 << (fb - 1)))
                m.next = "SIGMOID"
            with m.State("SIGMOID"):
                m.d.sync += sig.eq(t0 + (interp >> fb))
                m.next = "SILU"
            with m.State("SILU"):
                m.d.sync += gs.eq(g * sig + (1 << 15))
                m.next = "PRODUCT"
            with m.State("PRODUCT"):
                m.d.comb += silu.eq(gs >> 16)
                m.d.sync += su.eq(silu * u + (1 << (FV - 1)))
                m.next = "ROUND"
            with m.State("ROUND"):
                wide = su >> FV
                m.d.sync += y.eq(Mux(wide > V_MAX, V_MAX, Mux(wide < -V_MAX, -V_MAX, wide)))
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.y.eq(y), self.o.payload.last.eq(last)]
                with m.If(self.o.ready):
                    m.next = "IDLE"
        return m
