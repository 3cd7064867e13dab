"""Base-3 weight decoding in front of the engine core (docs/SPEC.md section 6.3).

    words (DW bits) --> local FIFO --+--> scale section (a frame's records) --> FIFO --> scale records
    tag generator (the layer's frames, ahead of the data) --> tags --+
                                     +--> Base3Decoder (DW/8 bytes -> 5 DW/8 trits, fixed latency, credits)
                                          --> FIFO --> TritGearbox (pieces of <= 8 units)
                                          --> RecordAssembler --> weight records (2-bit codes)

The weight records leave exactly as the 2-bit stream layout carries them, so the core
downstream is the 2-bit engine's. The digit arithmetic is the golden decode's
(``ptqtp.formats.packing.base3_digits``): f = byte * 135 as a 15-bit fraction, then five
times t = 3 f, digit = t >> 15, f = t mod 2^15; the constant products are shifts and adds
(no multiplier, no table), one adder a pipeline stage. Every handshake between the parts
meets a register (a FIFO level or a count of free slots): the placer spreads a design this
wide across the die, and each crossing costs 3-5 ns of routing (measured with nextpnr).
"""

from __future__ import annotations

from math import gcd

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ptqtp.formats.packing import BASE3_FRACTION_BITS, BASE3_RECIPROCAL
from ptqtp.formats.stream_layout import FRAME, StreamLayout

from .records import RecordAssembler, unpacker_ports

__all__ = ["Base3Decoder", "TritGearbox", "Base3Unpacker"]

_FB = BASE3_FRACTION_BITS
assert BASE3_RECIPROCAL == (1 << 7) + (1 << 3) - 1  # the shift-and-add form below


def _times3(f):
    return (f << 1) + f


class Base3Decoder(wiring.Component):
    """``nbytes`` base-3 bytes a cycle -> 5 * nbytes trits as 2-bit codes (trit t = digit t % 5
    of byte t // 5 at bits 2t, 2t + 1; 00 = 0, 01 = +1, 11 = -1), LATENCY cycles later. It
    never stalls: the caller keeps room for what is in flight. ``tag`` rides along."""

    LATENCY = 6  # byte * 135, then one digit a stage

    def __init__(self, nbytes: int, tag_bits: int = 1):
        if not isinstance(nbytes, int) or nbytes < 1:
            raise ValueError(f"nbytes must be a positive integer, not {nbytes!r}")
        self.nbytes, self.tag_bits = nbytes, tag_bits
        super().__init__(
            {
                "i": In(stream.Signature(data.StructLayout({"bytes": 8 * nbytes, "tag": tag_bits}), always_ready=True)),
                "o": Out(
                    stream.Signature(data.StructLayout({"codes": 10 * nbytes, "tag": tag_bits}), always_ready=True)
                ),
            }
        )

    def elaborate(self, platform):
        m = Module()
        nb = self.nbytes
        valid = [Signal(name=f"valid{s}") for s in range(self.LATENCY)]
        tags = [Signal(self.tag_bits, name=f"tag{s}") for s in range(self.LATENCY)]
        m.d.sync += [valid[0].eq(self.i.valid), tags[0].eq(self.i.payload.tag)]
        for s in range(1, self.LATENCY):
            m.d.sync += [valid[s].eq(valid[s - 1]), tags[s].eq(tags[s - 1])]
        codes = []
        for b in range(nb):
            q = self.i.payload.bytes[8 * b : 8 * b + 8]
            f = Signal(_FB, name=f"f{b}_0")
            m.d.sync += f.eq((q << 7) + (q << 3) - q)  # q * 135 < 2^15 for q < 243
            digits = []
            for i in range(5):
                t = Signal(_FB + 2, name=f"t{b}_{i}")
                m.d.comb += t.eq(_times3(f))
                nxt = Signal(_FB, name=f"f{b}_{i + 1}")
                # each stage passes on its fraction and every digit so far (aligned at the output)
                got = [Signal(2, name=f"d{b}_{j}_{i}") for j in range(i + 1)]
                m.d.sync += [nxt.eq(t[:_FB]), got[i].eq(t[_FB:])]
                m.d.sync += [g.eq(d) for g, d in zip(got[:i], digits)]
                f, digits = nxt, got
            codes += [Cat(d[0] | d[1], d[1]) for d in digits]
        m.d.comb += [self.o.valid.eq(valid[-1]), self.o.payload.tag.eq(tags[-1]), self.o.payload.codes.eq(Cat(*codes))]
        return m


class TritGearbox(wiring.Component):
    """Words of ``in_trits`` 2-bit codes -> pieces of ``out_trits`` codes, in order.

    Each word says how many of its units (gcd(in_trits, out_trits) trits) are data:
    ``units``; the rest (a frame's padding, at the end of its last word) never enters the
    buffer, and since a frame is whole pieces the next frame follows without a gap. Buffer:
    in + out - 1 units; a word is taken and a piece handed out in the same cycle.
    ``o.valid`` does not wait for ``o.ready``, which should come from a register (a count of
    free FIFO slots). Its cost grows with the buffer, so the unpacker asks for pieces of at
    most 8 units and assembles records from them at fixed positions.
    """

    def __init__(self, in_trits: int, out_trits: int):
        self.unit = gcd(in_trits, out_trits)
        self.n_in, self.n_rec = in_trits // self.unit, out_trits // self.unit
        self.capacity = self.n_in + self.n_rec - 1
        super().__init__(
            {
                "i": In(stream.Signature(data.StructLayout({"codes": 2 * in_trits, "units": range(self.n_in + 1)}))),
                "o": Out(stream.Signature(2 * out_trits)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        ub, n_in, n_rec, C = 2 * self.unit, self.n_in, self.n_rec, self.capacity
        buf = [Signal(ub, name=f"unit{j}") for j in range(C)]
        fill = Signal(range(C + 1))
        # registered views of fill (refreshed with it): the select logic reads only these
        full, fill_m = Signal(), Signal(range(C + 1))  # fill >= out; fill - out
        room_e, room_n = Signal(), Signal()  # a whole word fits after an emit / without one
        emit = full & self.o.ready
        m.d.comb += [self.o.valid.eq(full), self.o.payload.eq(Cat(*buf[:n_rec]))]
        base = Signal(range(C + 1))  # where an incoming word lands
        m.d.comb += base.eq(Mux(emit, fill_m, fill))
        take = self.i.valid & Mux(emit, room_e, room_n)
        m.d.comb += self.i.ready.eq(take)
        units_in = [self.i.payload.codes[ub * k : ub * (k + 1)] for k in range(n_in)]
        for j in range(C):
            if j + n_rec < C:  # slots above keep what they hold (nothing past fill is read)
                with m.If(emit):
                    m.d.sync += buf[j].eq(buf[j + n_rec])
            with m.If(take):  # unit k of the word lands at base + k (overrides the shift)
                with m.Switch(base):
                    for k in range(n_in):
                        if 0 <= j - k <= C - n_in:
                            with m.Case(j - k):
                                m.d.sync += buf[j].eq(units_in[k])
        fill_next = Signal.like(fill)
        m.d.comb += fill_next.eq(base + Mux(take, self.i.payload.units, 0))
        m.d.sync += [
            fill.eq(fill_next),
            full.eq(fill_next >= n_rec),
            fill_m.eq(fill_next - n_rec),
            room_e.eq(fill_next + n_in <= C + n_rec),
            room_n.eq(fill_next + n_in <= C),
        ]
        return m


class Base3Unpacker(wiring.Component):
    """Base-3 word stream -> scale records and weight records (the 2-bit layout's records).

    ``steps`` gives each layer's step count (ceil(n / R) * ng) before its words; the layout
    (``ptqtp.formats.stream_layout``) says how the frames of that many steps lie.
    """

    def __init__(self, layout: StreamLayout):
        if not isinstance(layout, StreamLayout) or layout.packing != "base3":
            raise ValueError(f"layout must be a base-3 StreamLayout, not {layout!r}")
        self.layout = layout
        super().__init__({"steps": In(stream.Signature(32)), **unpacker_ports(layout)})

    def elaborate(self, platform):
        m = Module()
        L = self.layout
        DW, SRB, wb = L.data_width, L.scale_record_bits, L.word_bytes
        # The words land in a local two-entry FIFO first: the DMA side and this side then meet
        # only at registers (its level), however far apart the placer puts them.
        m.submodules.words = words = SyncFIFO(width=DW, depth=2)
        wiring.connect(m, wiring.flipped(self.beats), words.w_stream)
        beat, beat_valid = words.r_data, words.r_rdy
        scale_words = [L.frame_scale_beats(k) for k in range(FRAME + 1)]
        trit_words = [L.frame_trit_beats(k) for k in range(FRAME + 1)]

        # ---- tag generator: the layer's word sequence (frames of k steps: scale words, then
        # trit words) as one tag a word, computed ahead of the data into a small FIFO. Only
        # registers decide (k, rest and flags refreshed in the cycles between section ends).
        piece_trits = min(L.record_trits, 8 * gcd(5 * wb, L.record_trits))  # at most 8 units
        per_record = L.record_trits // piece_trits
        unit = gcd(5 * wb, piece_trits)
        n_in = 5 * wb // unit
        # data units in each frame's last trit word (the rest is padding); every other word is full
        last_units = [(k * L.step_trits - (trit_words[k] - 1) * 5 * wb) // unit for k in range(FRAME + 1)]
        k = Signal(range(FRAME + 1))  # steps of this frame
        rest = Signal(32)  # steps of the layer after this frame
        rest_ge, rest_zero, rest_m = Signal(), Signal(), Signal(32)  # registered rest >= FRAME, == 0, - FRAME
        in_layer, priming, in_trits = Signal(), Signal(), Signal()
        word = Signal(range(max(max(scale_words), max(trit_words)) + 1))  # words of this section tagged
        last_at = Signal.like(word)  # the section's last word index
        m.d.sync += [rest_ge.eq(rest >= FRAME), rest_zero.eq(rest == 0), rest_m.eq(rest - FRAME)]
        m.d.comb += self.steps.ready.eq(~in_layer)
        with m.If(self.steps.valid & ~in_layer & (self.steps.payload != 0)):
            m.d.sync += [
                in_layer.eq(1),
                priming.eq(1),
                rest.eq(self.steps.payload),
                rest_ge.eq(self.steps.payload >= FRAME),
                rest_m.eq(self.steps.payload - FRAME),
            ]

        def next_frame():  # k and rest of the following frame, from the registered flags
            kk = Mux(rest_ge, FRAME, rest[: len(k)])
            m.d.sync += [k.eq(kk), rest.eq(Mux(rest_ge, rest_m, 0)), in_trits.eq(0), word.eq(0)]
            with m.Switch(kk):
                for v in range(1, FRAME + 1):
                    with m.Case(v):
                        m.d.sync += last_at.eq(scale_words[v] - 1)

        with m.If(priming):
            m.d.sync += priming.eq(0)
            next_frame()
        last_word = word == last_at
        trit_last_at, units = Signal.like(word), Signal(range(n_in + 1))
        with m.Switch(k):
            for v in range(1, FRAME + 1):
                with m.Case(v):
                    m.d.comb += [trit_last_at.eq(trit_words[v] - 1), units.eq(Mux(last_word, last_units[v], n_in))]
        tag_layout = data.StructLayout({"scale": 1, "index": len(word), "last": 1, "k": len(k), "units": len(units)})
        m.submodules.tags = tags = SyncFIFOBuffered(width=tag_layout.size, depth=3)  # registered tag out
        push = in_layer & ~priming & tags.w_rdy
        m.d.comb += [tags.w_en.eq(push), tags.w_data.eq(Cat(~in_trits, word, last_word, k, units))]
        with m.If(push):
            m.d.sync += word.eq(word + 1)
            with m.If(last_word):
                m.d.sync += word.eq(0)
                with m.If(~in_trits):
                    m.d.sync += [in_trits.eq(1), last_at.eq(trit_last_at)]
                with m.Elif(rest_zero):
                    m.d.sync += in_layer.eq(0)
                with m.Else():
                    next_frame()
        tag = data.View(tag_layout, tags.r_data)

        # ---- scale section: loaded whole, then handed out one record at a time, shifting down
        sec = Signal(scale_words[FRAME] * DW)
        sec_left = Signal(range(FRAME + 1))  # records still to hand out
        sec_ready = Signal()  # every word of the section is in
        have = beat_valid & tags.r_rdy
        take_scale = have & tag.scale & (sec_left == 0) & ~sec_ready
        with m.If(take_scale):
            for i in range(scale_words[FRAME]):
                with m.If(tag.index == i):
                    m.d.sync += sec[i * DW : (i + 1) * DW].eq(beat)
            with m.If(tag.last):
                m.d.sync += [sec_ready.eq(1), sec_left.eq(tag.k)]
        # handed out through a local two-entry FIFO: the core's scale FIFO meets registers only
        m.submodules.scale_out = scale_out = SyncFIFO(width=SRB, depth=2)
        m.d.comb += [scale_out.w_data.eq(sec[:SRB]), scale_out.w_en.eq(sec_ready & (sec_left != 0))]
        wiring.connect(m, scale_out.r_stream, wiring.flipped(self.scales))
        with m.If(scale_out.w_en & scale_out.w_rdy):
            m.d.sync += [sec.eq(sec >> SRB), sec_left.eq(sec_left - 1)]
            with m.If(sec_left == 1):
                m.d.sync += sec_ready.eq(0)

        # ---- trit section: into the decoder while the FIFO behind it has room for all in flight
        dec = Base3Decoder(wb, tag_bits=len(units))
        m.submodules.decoder = dec
        depth = Base3Decoder.LATENCY + 4
        m.submodules.decoded = fifo = SyncFIFO(width=len(dec.o.payload.as_value()), depth=depth)
        credits = Signal(range(depth + 1))  # words in the decoder or the FIFO
        take_trit = have & ~tag.scale & (credits < depth)
        popped = fifo.r_rdy & fifo.r_en
        m.d.sync += credits.eq(credits + take_trit - popped)
        m.d.comb += [
            dec.i.valid.eq(take_trit),
            dec.i.payload.bytes.eq(beat),
            dec.i.payload.tag.eq(tag.units),
            fifo.w_en.eq(dec.o.valid),
            fifo.w_data.eq(dec.o.payload.as_value()),
        ]
        m.d.comb += [words.r_en.eq(take_scale | take_trit), tags.r_en.eq(take_scale | take_trit)]
        m.submodules.gearbox = gear = TritGearbox(5 * wb, piece_trits)
        out = data.View(dec.o.payload.shape(), fifo.r_data)
        m.d.comb += [
            gear.i.valid.eq(fifo.r_rdy),
            gear.i.payload.codes.eq(out.codes),
            gear.i.payload.units.eq(out.tag),
            fifo.r_en.eq(gear.i.ready),
        ]
        m.submodules.assemble = assemble = RecordAssembler(2 * piece_trits, per_record)
        # The gearbox's ready is its own count of free FIFO slots (a register beside it), so
        # its wide selects never wait on a signal from the assembler's side.
        m.submodules.pieces = pieces = SyncFIFO(width=2 * piece_trits, depth=2)
        free, space = Signal(range(3), init=2), Signal(init=1)
        pushed, popped_piece = gear.o.valid & space, pieces.r_rdy & pieces.r_en
        free_next = free - pushed + popped_piece
        m.d.sync += [free.eq(free_next), space.eq(free_next != 0)]
        m.d.comb += [
            pieces.w_data.eq(gear.o.payload),
            pieces.w_en.eq(pushed),
            gear.o.ready.eq(space),
            assemble.i.payload.eq(pieces.r_data),
            assemble.i.valid.eq(pieces.r_rdy),
            pieces.r_en.eq(assemble.i.ready),
        ]
        wiring.connect(m, assemble.o, wiring.flipped(self.weights))

        return m
