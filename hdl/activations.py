"""Two activation banks: the next batch loads into one while the core reads the other."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .axi import AxiStreamSignature
from .engine_model import EngineParams

__all__ = ["ActivationBanks", "bank_address_layout"]


def bank_address_layout(p: EngineParams) -> data.StructLayout:
    """An activation word's place in a bank: its chunk of the vector, then the vector."""
    return data.StructLayout({"chunk": (p.chunk_stride - 1).bit_length(), "vec": (p.vectors - 1).bit_length()})


class ActivationBanks(wiring.Component):
    """``x`` (AXI4-Stream: P A-bit activations a beat, ``tlast`` ends a vector, ``tuser``
    ends a batch) fills one bank of M vectors; the core reads the other.

    Read side: ``rd_addr`` = {chunk, vector} in, ``rd_data`` one cycle later. ``have_x``
    (registered) says the read bank holds a batch, ``bank_m`` its vector count; a
    ``release`` pulse hands the read bank back to the loader and moves to the other one.
    ``overflow`` pulses on a beat past M vectors or past max d_pad / P chunks (dropped).
    """

    def __init__(self, params: EngineParams):
        self.params = p = params
        super().__init__(
            {
                "x": In(AxiStreamSignature(p.lanes * p.act_bits, user_width=1)),
                "rd_addr": In(bank_address_layout(p)),
                "rd_data": Out(p.lanes * p.act_bits),
                "release": In(1),
                "have_x": Out(1),
                "bank_m": Out(range(p.vectors + 1)),
                "overflow": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        p = self.params
        M = p.vectors
        m.submodules.mem = mem = Memory(shape=unsigned(p.lanes * p.act_bits), depth=2 * M * p.chunk_stride, init=[])
        wr, rd = mem.write_port(), mem.read_port()
        bank_full = Signal(2)
        bank_m = [Signal(range(M + 1), name=f"bank{b}_m") for b in range(2)]
        wb, lv, lc = Signal(), Signal(range(M + 1)), Signal(range(p.chunk_stride + 1))  # write bank, vector, chunk
        at = Signal(bank_address_layout(p))  # where the incoming word goes in the write bank
        rb = Signal()  # read bank
        x = self.x
        can_load = ~bank_full.bit_select(wb, 1)
        beyond = (lv >= M) | (lc >= p.chunk_stride)
        beat = x.tvalid & can_load
        m.d.comb += [
            x.tready.eq(can_load),
            self.overflow.eq(beat & beyond),
            at.chunk.eq(lc),
            at.vec.eq(lv),
            wr.addr.eq(Cat(at, wb)),
            wr.data.eq(x.tdata),
            wr.en.eq(beat & ~beyond),
            rd.addr.eq(Cat(self.rd_addr, rb)),
            self.rd_data.eq(rd.data),
            self.bank_m.eq(Mux(rb, bank_m[1], bank_m[0])),
        ]
        with m.If(beat):
            m.d.sync += lc.eq(lc + 1)
            with m.If(x.tlast):
                m.d.sync += [lc.eq(0), lv.eq(lv + 1)]
            with m.If(x.tuser[0]):
                m.d.sync += [lv.eq(0), wb.eq(~wb)]
                for b in range(2):
                    with m.If(wb == b):
                        m.d.sync += bank_m[b].eq(lv + x.tlast)
        with m.If(self.release):
            m.d.sync += rb.eq(~rb)
        # the release reaches the bank flags a cycle later: the core's issue decision stays local
        release_d, released = Signal(), Signal()
        m.d.sync += [release_d.eq(self.release), released.eq(rb)]
        for b in range(2):
            filled = beat & x.tuser[0] & (wb == b)
            with m.If(filled | (release_d & (released == b))):
                m.d.sync += bank_full[b].eq(filled)
        m.d.sync += self.have_x.eq(bank_full.bit_select(rb, 1))
        return m
