"""The output serializer: the output buffer's entries (R accumulators each) to one row a beat."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import AxiStreamSignature
from .control import ROW_BITS, descriptor_layout
from .engine_model import EngineParams

__all__ = ["OutputSerializer"]


class OutputSerializer(wiring.Component):
    """Per run (``desc``): for each block, for each vector v, the entry's rows bR ..
    min(bR + R, n) - 1 on ``y``, one a beat (ACC bits sign-extended, ``tid`` = v, ``tlast``
    on row n - 1). ``active`` says a run is held; ``run_done`` pulses when its last beat
    leaves.
    """

    def __init__(self, params: EngineParams):
        self.params = p = params
        super().__init__(
            {
                "desc": In(stream.Signature(descriptor_layout(p))),
                "entries": In(stream.Signature(p.rows * p.acc_bits)),
                "y": Out(AxiStreamSignature(p.out_bits, id_width=p.tid_bits)),
                "active": Out(1),
                "run_done": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        p = self.params
        R, M = p.rows, p.vectors
        o_r, o_v = Signal(range(R)), Signal(range(M))
        blocks_left, last_block = Signal(ROW_BITS), Signal()
        last_r, m_m1 = Signal(range(R)), Signal(range(M))  # the last block's last row unit; m - 1
        with m.If(~self.active & self.desc.valid):
            nxt = self.desc.payload
            blocks = (nxt.n + (R - 1)) >> (R - 1).bit_length()
            m.d.comb += self.desc.ready.eq(1)
            m.d.sync += [
                self.active.eq(1),
                o_r.eq(0),
                o_v.eq(0),
                blocks_left.eq(blocks),
                last_block.eq(blocks == 1),
                last_r.eq((nxt.n - 1)[: (R - 1).bit_length()] if R > 1 else 0),
                m_m1.eq(nxt.m - 1),
            ]
        acc = Signal(signed(p.acc_bits))
        with m.Switch(o_r):
            for r in range(R):
                with m.Case(r):
                    m.d.comb += acc.eq(self.entries.payload[r * p.acc_bits :][: p.acc_bits].as_signed())
        y = self.y
        vector_end = last_block & (o_r == last_r)
        last_row_of_entry = (o_r == R - 1) | vector_end
        m.d.comb += [
            y.tvalid.eq(self.active & self.entries.valid),
            y.tdata.eq(acc),
            y.tid.eq(o_v),
            y.tlast.eq(vector_end),
        ]
        with m.If(y.tvalid & y.tready):
            m.d.sync += o_r.eq(o_r + 1)
            with m.If(last_row_of_entry):
                m.d.comb += self.entries.ready.eq(1)
                m.d.sync += [o_r.eq(0), o_v.eq(o_v + 1)]
                with m.If(o_v == m_m1):
                    m.d.sync += [o_v.eq(0), blocks_left.eq(blocks_left - 1), last_block.eq(blocks_left == 2)]
                    with m.If(last_block):
                        m.d.sync += self.active.eq(0)
                        m.d.comb += self.run_done.eq(1)
        return m
