"""Attention's base-2 softmax over one row of scores (docs/SPEC.md section 9, *Attention*),
bit for bit with ``ptqtp.golden_decoder.softmax2``:

    LOAD   the row's scores t (log2 units, FT fractional bits) into a buffer, tracking the largest
    EXP    d = max - t; p = rnd(T[d mod 2^FT] / 2^(d >> FT)) (0 from a shift of 17), written back
           over t, and their sum (an element every six cycles); T is ``exp2_table`` in a ROM
    DIV    R = floor(2^32 / sum p) on the restoring divider
    OUT    pn = rnd(p R / 2^16), an element every five cycles
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ptqtp.golden_decoder import exp2_table

from .vquant import SeqDivider

__all__ = ["SoftmaxUnit"]

T_BITS = 42  # scores are clipped to +-2^40


class SoftmaxUnit(wiring.Component):
    """Rows of up to ``depth`` scores: input ``i`` (t, last); output ``o`` (p, last), U0.16."""

    def __init__(self, frac: int = 10, depth: int = 2048):
        self.frac, self.depth = frac, depth
        super().__init__(
            {
                "i": In(stream.Signature(data.StructLayout({"t": signed(T_BITS), "last": 1}))),
                "o": Out(stream.Signature(data.StructLayout({"p": unsigned(17), "last": 1}))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        FT = self.frac
        table = [int(v) for v in exp2_table(FT)]
        m.submodules.buf = buf = Memory(shape=signed(T_BITS), depth=self.depth, init=[])
        m.submodules.rom = rom = Memory(shape=unsigned(17), depth=len(table), init=table)
        wr, rd = buf.write_port(), buf.read_port()
        rom_rd = rom.read_port()
        total_w = 17 + (self.depth - 1).bit_length() + 1
        m.submodules.div = div = SeqDivider(33, total_w)

        addr = Signal(range(self.depth))
        count = Signal(range(self.depth + 1))
        tmax = Signal(signed(T_BITS))
        t_r = Signal(signed(T_BITS))
        dist = Signal(T_BITS + 1)
        n = Signal(T_BITS + 1 - FT)
        big = Signal()
        p = Signal(17)
        p_a = Signal(18)
        total = Signal(total_w)
        R = Signal(33)
        prod = Signal(17 + 33)
        pn = Signal(17)
        last_out = Signal()
        write_p = Signal()

        m.d.comb += [rd.addr.eq(addr), wr.addr.eq(addr), rom_rd.addr.eq(dist[:FT])]
        m.d.comb += wr.data.eq(Mux(write_p, p, self.i.payload.t))

        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.comb += wr.en.eq(1)
                    with m.If((count == 0) | (self.i.payload.t > tmax)):
                        m.d.sync += tmax.eq(self.i.payload.t)
                    m.d.sync += [addr.eq(addr + 1), count.eq(count + 1)]
                    with m.If(self.i.payload.last):
                        m.d.sync += [addr.eq(0), total.eq(0)]
                        m.next = "E_READ"
            # pass 2: p over the row, written back, and its sum
            with m.State("E_READ"):
                m.next = "E_FETCH"
            with m.State("E_FETCH"):
                m.d.sync += t_r.eq(rd.data)
                m.next = "E_DIST"
            with m.State("E_DIST"):
                m.d.sync += dist.eq(tmax - t_r)
                m.next = "E_LOOKUP"  # the ROM reads T[dist mod 2^FT] this cycle
            with m.State("E_LOOKUP"):
                m.d.sync += [n.eq(dist[FT:]), big.eq(dist[FT:] >= 17)]
                m.next = "E_ROUND"
            with m.State("E_ROUND"):
                m.d.sync += p_a.eq(rom_rd.data + Mux((n > 0) & ~big, Const(1, 18) << (n - 1)[:5], 0))
                m.next = "E_SHIFT"
            with m.State("E_SHIFT"):
                m.d.sync += p.eq(Mux(big, 0, p_a >> n[:5]))
                m.next = "E_WRITE"
            with m.State("E_WRITE"):
                m.d.comb += [write_p.eq(1), wr.en.eq(1)]
                m.d.sync += [total.eq(total + p), addr.eq(addr + 1)]
                with m.If(addr == count - 1):
                    m.next = "DIV"
                with m.Else():
                    m.next = "E_READ"
            with m.State("DIV"):
                m.d.comb += [div.start.eq(1), div.num.eq(Const(1 << 32, 33)), div.den.eq(total)]
                m.next = "WAIT_DIV"
            with m.State("WAIT_DIV"):
                with m.If(div.done):
                    m.d.sync += [R.eq(div.quo), addr.eq(0)]
                    m.next = "READ"
            # pass 3: normalized
            with m.State("READ"):
                m.d.sync += last_out.eq(addr == count - 1)
                m.next = "MULTIPLY"
            with m.State("MULTIPLY"):
                m.d.sync += prod.eq(rd.data[:17] * R)
                m.next = "ROUND"
            with m.State("ROUND"):
                m.d.sync += pn.eq((prod + (1 << 15)) >> 16)
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.p.eq(pn), self.o.payload.last.eq(last_out)]
                with m.If(self.o.ready):
                    with m.If(last_out):
                        m.d.sync += [addr.eq(0), count.eq(0)]
                        m.next = "LOAD"
                    with m.Else():
                        m.d.sync += addr.eq(addr + 1)
                        m.next = "READ"
        return m
