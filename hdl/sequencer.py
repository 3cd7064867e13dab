"""The issue sequencer: which chunk of which vector the row units take each cycle."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .activations import bank_address_layout
from .blocks import tags_layout
from .control import ROW_BITS, descriptor_layout, events_layout
from .engine_model import EngineParams

__all__ = ["IssueSequencer"]


class IssueSequencer(wiring.Component):
    """Per run (``desc``): for each block of R rows, pass, group, chunk and resident vector v,
    one chunk-cycle. A layer of several passes is its wide layer (``StreamLayout``): the
    group counter runs over ng * passes groups, one accumulation, while the activation
    chunk wraps to 0 at the end of each pass. A cycle issues when the run holds its activations (``have_x``), the
    weight record (and on a group's first chunk the scale record) is there, and the
    output buffer will have room for the block's results.

    Out, in the issue cycle: ``tags`` (``tags.valid`` = issue), ``record``, ``scales`` (the
    group's scale record, held across the group) and ``rd_addr`` = {chunk, v} for the
    activation banks, whose data arrives a cycle later. ``release`` pulses when the run's
    last chunk issues. ``y_pop`` says an output buffer entry left: the sequencer promises
    at most ``out_entries`` entries ahead. ``events`` feed the counters; ``running`` says a
    run is held.
    """

    def __init__(self, params: EngineParams):
        self.params = p = params
        L = p.layout
        self.out_entries = 4 * p.vectors
        super().__init__(
            {
                "desc": In(stream.Signature(descriptor_layout(p))),
                "weights": In(stream.Signature(L.record_bits)),
                "scale_in": In(stream.Signature(L.scale_record_bits)),
                "have_x": In(1),
                "bank_m": In(range(p.vectors + 1)),
                "y_pop": In(1),
                "tags": Out(tags_layout(p.vectors)),
                "record": Out(L.record_bits),
                "scales": Out(L.scale_record_bits),
                "rd_addr": Out(bank_address_layout(p)),
                "release": Out(1),
                "running": Out(1),
                "events": Out(events_layout()),
            }
        )

    def elaborate(self, platform):
        m = Module()
        p = self.params
        M, R, cpg = p.vectors, p.rows, p.layout.chunks_per_group
        run = Signal(descriptor_layout(p))
        running = self.running
        chunk = Signal(range(p.chunk_stride + 1))
        in_group = Signal(range(cpg))
        group = Signal(range(p.chunk_stride * p.max_passes + 1))
        v = Signal(range(M))
        # registered end-of-loop flags: no wide add or compare on the issue path
        chunks_m1, ng_m1, m_m1 = Signal.like(chunk), Signal.like(group), Signal(range(M))
        blocks_left = Signal(ROW_BITS)
        last_block = Signal()
        scale_hold = Signal.like(self.scales)

        first_of_group = (in_group == 0) & (v == 0)
        first_of_block = (chunk == 0) & (v == 0)
        last_v = v == m_m1
        last_chunk = chunk == chunks_m1
        have_w = self.weights.valid & (~first_of_group | self.scale_in.valid)
        # an output entry is promised when a vector's last chunk of the block issues: never more than fit
        promised = Signal(range(self.out_entries + 1))
        final_op = (group == ng_m1) & (in_group == cpg - 1)
        have_y = ~final_op | (promised < self.out_entries)
        issue = running & self.have_x & have_w & have_y
        with m.If(~running & self.desc.valid):
            nxt = self.desc.payload
            blocks = (nxt.n + (R - 1)) >> (R - 1).bit_length()
            m.d.comb += self.desc.ready.eq(1)
            m.d.sync += [
                running.eq(1),
                run.eq(nxt),
                chunk.eq(0),
                in_group.eq(0),
                group.eq(0),
                v.eq(0),
                chunks_m1.eq(nxt.chunks - 1),
                ng_m1.eq((nxt.chunks >> (cpg.bit_length() - 1)) * nxt.passes - 1),
                m_m1.eq(nxt.m - 1),
                blocks_left.eq(blocks),
                last_block.eq(blocks == 1),
            ]
        m.d.comb += [
            self.scale_in.ready.eq(issue & first_of_group),
            self.weights.ready.eq(issue & last_v),
            self.rd_addr.chunk.eq(chunk),
            self.rd_addr.vec.eq(v),
        ]
        with m.If(first_of_group):  # the queue's head is this group's record; the issue decision stays off the enable
            m.d.sync += scale_hold.eq(self.scale_in.payload)
        with m.If(issue):
            m.d.sync += v.eq(Mux(last_v, 0, v + 1))
            with m.If(last_v):
                m.d.sync += [chunk.eq(chunk + 1), in_group.eq(in_group + 1)]
                with m.If(in_group == cpg - 1):
                    m.d.sync += [in_group.eq(0), group.eq(group + 1)]
                with m.If(last_chunk):  # the end of a pass: the activations start again
                    m.d.sync += chunk.eq(0)
                    with m.If(group == ng_m1):  # the end of the block's last pass
                        m.d.sync += [
                            group.eq(0),
                            blocks_left.eq(blocks_left - 1),
                            last_block.eq(blocks_left == 2),
                        ]
                        with m.If(last_block):
                            m.d.sync += running.eq(0)
                            m.d.comb += self.release.eq(1)
        m.d.sync += promised.eq(promised + (issue & final_op) - self.y_pop)

        t = self.tags
        m.d.comb += [
            t.valid.eq(issue),
            t.group_first.eq(in_group == 0),
            t.group_last.eq(in_group == cpg - 1),
            t.row_first.eq(group == 0),
            t.row_last.eq(group == ng_m1),
            t.vec.eq(v),
            self.record.eq(self.weights.payload),
            self.scales.eq(Mux(first_of_group, self.scale_in.payload, scale_hold)),
        ]
        ev = self.events
        m.d.comb += [
            ev.running.eq(running),
            ev.issue.eq(issue),
            ev.have_x.eq(self.have_x),
            ev.have_w.eq(have_w),
            ev.have_y.eq(have_y),
            ev.mismatch.eq(issue & first_of_block & (self.bank_m != run.m)),
        ]
        return m
