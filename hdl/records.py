"""Words to records: the one record assembler, its inverse, and the 2-bit record unpacker.

    RecordAssembler  ``count`` pieces -> one record (piece i at bit i * piece_bits)
    WordSplitter     one word -> ``per_word`` records, handed out one a cycle
    RecordUnpacker   2-bit stream words -> scale records and weight records (stream layout order)

The base-3 unpacker (``ptqtp.hdl.base3``) assembles its weight records with the same
:class:`RecordAssembler`.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ptqtp.formats.stream_layout import StreamLayout

__all__ = ["RecordAssembler", "WordSplitter", "RecordUnpacker", "unpacker_ports"]


def unpacker_ports(layout: StreamLayout) -> dict:
    """What every unpacker has: stream words in, scale and weight records out (the 2-bit
    layout's records, whatever the packing)."""
    return {
        "beats": In(stream.Signature(layout.data_width)),
        "scales": Out(stream.Signature(layout.scale_record_bits)),
        "weights": Out(stream.Signature(layout.record_bits)),
    }


class RecordAssembler(wiring.Component):
    """Pieces of ``piece_bits`` -> records of the first ``out_bits`` (default all) of
    ``count`` pieces, piece i at bit i * piece_bits.

    The record is registered; a new one may complete in the cycle the last one leaves, so a
    record a cycle passes. With ``count`` = 1 the piece passes straight through unless
    ``register`` asks for the output register anyway. ``last`` says that the piece on the
    input is a record's last.
    """

    def __init__(self, piece_bits: int, count: int, out_bits: int | None = None, register: bool = False):
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive integer, not {count!r}")
        out_bits = piece_bits * count if out_bits is None else out_bits
        if not 0 < out_bits <= piece_bits * count:
            raise ValueError(f"out_bits must be in 1..{piece_bits * count}, not {out_bits!r}")
        self.piece_bits, self.count, self.register = piece_bits, count, register or count > 1
        super().__init__({"i": In(stream.Signature(piece_bits)), "o": Out(stream.Signature(out_bits)), "last": Out(1)})

    def elaborate(self, platform):
        m = Module()
        if not self.register:
            m.d.comb += [
                self.o.payload.eq(self.i.payload),
                self.o.valid.eq(self.i.valid),
                self.i.ready.eq(self.o.ready),
                self.last.eq(1),
            ]
            return m
        held = [Signal(self.piece_bits, name=f"piece{i}") for i in range(self.count - 1)]
        idx = Signal(range(max(2, self.count)))
        completes = idx == self.count - 1
        take = self.i.valid & (~completes | ~self.o.valid | self.o.ready)
        m.d.comb += [self.i.ready.eq(take), self.last.eq(completes)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(take):
            with m.If(completes):
                m.d.sync += [
                    self.o.payload.eq(Cat(*held, self.i.payload)[: len(self.o.payload)]),
                    self.o.valid.eq(1),
                    idx.eq(0),
                ]
            with m.Else():
                m.d.sync += idx.eq(idx + 1)
                for i, reg in enumerate(held):
                    with m.If(idx == i):
                        m.d.sync += reg.eq(self.i.payload)
        return m


class WordSplitter(wiring.Component):
    """Words of ``per_word`` records of ``record_bits`` -> the records, one a cycle.

    A group of ``group`` records may end inside a word: its last record releases the word
    (the rest of it is padding).
    """

    def __init__(self, record_bits: int, per_word: int, group: int):
        self.record_bits, self.per_word, self.group = record_bits, per_word, group
        super().__init__({"i": In(stream.Signature(record_bits * per_word)), "o": Out(stream.Signature(record_bits))})

    def elaborate(self, platform):
        m = Module()
        k, W = self.per_word, self.record_bits
        word = Signal(W * k)
        r_idx = Signal(range(k))  # record of the word on the output
        rec = Signal(range(self.group))  # record of the group on the output
        consume = self.o.valid & self.o.ready
        last_of_word = (r_idx == k - 1) | (rec == self.group - 1)
        m.d.comb += self.o.payload.eq(word.word_select(r_idx, W))
        take = self.i.valid & (~self.o.valid | (consume & last_of_word))
        m.d.comb += self.i.ready.eq(take)
        with m.If(consume):
            m.d.sync += [r_idx.eq(r_idx + 1), rec.eq(Mux(rec == self.group - 1, 0, rec + 1))]
            with m.If(last_of_word):
                m.d.sync += [self.o.valid.eq(0), r_idx.eq(0)]
        with m.If(take):
            m.d.sync += [word.eq(self.i.payload), self.o.valid.eq(1), r_idx.eq(0)]
        return m


class RecordUnpacker(wiring.Component):
    """2-bit stream words -> scale records and weight records, in the stream layout's order.

    Groups repeat without end (a layer's region is whole groups, so layers need no marker):
    ``s_beats`` words make a scale record, then the group's ``group_weight_beats`` words
    make its ``G/P`` weight records (``record_beats`` words a record when W >= DW, else
    ``records_per_beat`` to a word). The next group's scale record may be read while the
    last weight records still wait.
    """

    def __init__(self, layout: StreamLayout):
        self.layout = layout
        super().__init__(unpacker_ports(layout))

    def elaborate(self, platform):
        m = Module()
        L = self.layout
        DW = L.data_width
        m.submodules.scale = scale = RecordAssembler(DW, L.scale_beats, L.scale_record_bits, register=True)
        if L.records_per_beat == 1:
            m.submodules.weight = weight = RecordAssembler(DW, L.record_beats, register=True)
        else:
            m.submodules.weight = weight = WordSplitter(L.record_bits, L.records_per_beat, L.chunks_per_group)
        wiring.connect(m, scale.o, wiring.flipped(self.scales))
        wiring.connect(m, weight.o, wiring.flipped(self.weights))

        # Route each word: a group is s_beats words to the scale record, then its weight words.
        in_scale = Signal(init=1)
        w_beat = Signal(range(max(2, L.group_weight_beats)))
        m.d.comb += [
            scale.i.payload.eq(self.beats.payload),
            weight.i.payload.eq(self.beats.payload),
            scale.i.valid.eq(in_scale & self.beats.valid),
            weight.i.valid.eq(~in_scale & self.beats.valid),
            self.beats.ready.eq(scale.i.ready | weight.i.ready),
        ]
        with m.If(scale.i.ready & scale.last):
            m.d.sync += in_scale.eq(0)
        with m.If(weight.i.ready):
            m.d.sync += w_beat.eq(Mux(w_beat == L.group_weight_beats - 1, 0, w_beat + 1))
            with m.If(w_beat == L.group_weight_beats - 1):
                m.d.sync += in_scale.eq(1)
        return m
