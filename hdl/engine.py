"""TritEngine: one bitstream that runs any layer, weights streamed from memory over AXI.

    AXI4-Lite --> registers --> descriptor queues (DMA side, compute side, output side)
    AXI4 read master (AxiBurstReader) --> word stream --> RecordUnpacker --> scale / weight records
        (base-3 packing: Base3Unpacker, which decodes the trits into the same records; hdl/base3.py)
    x (AXI4-Stream, P activations a beat) --> two activation banks (M vectors each)
    issue: per block of R rows, per group, per chunk, per resident vector v: one chunk-cycle
    --> two alignment stages --> R RowUnits (per-vector partial sums and accumulators)
    --> output buffer (R results per entry) --> y (AXI4-Stream, one row a beat, tid = vector)

Layer values (n, d_pad / P, m, region address and length) come from a descriptor written
over AXI4-Lite (``ptqtp.hdl.engine_model.Reg``); the weight stream's format is
``ptqtp.formats.stream_layout`` (the record unpacker reads its bit positions). Overlap:
the next batch loads into the other activation bank while this one computes, results drain
from the output buffer while the next block computes, the DMA runs ahead of the core by its
FIFO and a queued descriptor, and with m vectors every weight word is applied m times.

Output order: for each block of R rows, for each vector v, rows b*R .. min(b*R + R, n) - 1;
``tid`` = v and ``tlast`` on row n - 1 of each vector.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ptqtp.formats.stream_layout import StreamLayout

from .axi import AxiBurstReader, AxiLiteRegs, AxiLiteSignature, AxiReadSignature, AxiStreamSignature, RomReader
from .base3 import Base3Unpacker
from .blocks import AdderTree, RowUnit, tags_layout
from .engine_model import ENGINE_ID, EngineParams, Reg

__all__ = ["RecordUnpacker", "TritEngine"]


class RecordUnpacker(wiring.Component):
    """Word stream -> scale records and weight records, in the stream layout's order.

    Groups repeat without end (a layer's region is whole groups, so layers need no marker):
    ``s_beats`` words make a scale record, then the group's ``G/P`` weight records follow,
    each ``record_beats`` words (W >= DW) or ``records_per_beat`` to a word (W < DW). The
    next group's scale record may be read while the last weight records still wait.
    """

    def __init__(self, layout: StreamLayout):
        self.layout = layout
        super().__init__({
            "beats": In(stream.Signature(layout.data_width)),
            "scales": Out(stream.Signature(layout.scale_record_bits)),
            "weights": Out(stream.Signature(layout.record_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        L = self.layout
        DW, W, cpg = L.data_width, L.record_bits, L.chunks_per_group
        beat = self.beats.payload
        in_scale = Signal(init=1)  # which record the next word belongs to
        s_idx = Signal(range(max(2, L.scale_beats)))
        w_beat = Signal(range(max(2, L.group_weight_beats)))  # weight words of the group taken so far

        # ---- scale records: s_beats words, the last one completes the record
        s_asm = [Signal(DW, name=f"s_asm{i}") for i in range(L.scale_beats - 1)]
        s_last = s_idx == L.scale_beats - 1
        s_free = ~self.scales.valid | self.scales.ready
        take_scale = in_scale & self.beats.valid & (~s_last | s_free)
        with m.If(self.scales.valid & self.scales.ready):
            m.d.sync += self.scales.valid.eq(0)
        with m.If(take_scale):
            with m.If(s_last):
                m.d.sync += [self.scales.payload.eq(Cat(*s_asm, beat)[: L.scale_record_bits]),
                             self.scales.valid.eq(1), s_idx.eq(0), in_scale.eq(0)]
            with m.Else():
                m.d.sync += s_idx.eq(s_idx + 1)
                for i, reg in enumerate(s_asm):
                    with m.If(s_idx == i):
                        m.d.sync += reg.eq(beat)

        # ---- weight records
        consume = self.weights.valid & self.weights.ready
        w_last_beat = w_beat == L.group_weight_beats - 1
        if L.records_per_beat == 1:  # W >= DW: record_beats words per record, assembled
            w_idx = Signal(range(max(2, L.record_beats)))
            w_asm = [Signal(DW, name=f"w_asm{i}") for i in range(L.record_beats - 1)]
            completes = w_idx == L.record_beats - 1
            w_free = ~self.weights.valid | self.weights.ready
            take_weight = ~in_scale & self.beats.valid & (~completes | w_free)
            with m.If(consume):
                m.d.sync += self.weights.valid.eq(0)
            with m.If(take_weight):
                with m.If(completes):
                    m.d.sync += [self.weights.payload.eq(Cat(*w_asm, beat)), self.weights.valid.eq(1), w_idx.eq(0)]
                with m.Else():
                    m.d.sync += w_idx.eq(w_idx + 1)
                    for i, reg in enumerate(w_asm):
                        with m.If(w_idx == i):
                            m.d.sync += reg.eq(beat)
        else:  # W < DW: a word holds k records, handed out one a cycle
            k = L.records_per_beat
            word = Signal(DW)
            r_idx = Signal(range(k))  # record of the word on the output
            rec = Signal(range(cpg))  # record of the group on the output
            last_of_word = (r_idx == k - 1) | (rec == cpg - 1)
            m.d.comb += self.weights.payload.eq(word.word_select(r_idx, W))
            word_free = ~self.weights.valid | (consume & last_of_word)
            take_weight = ~in_scale & self.beats.valid & word_free
            with m.If(consume):
                m.d.sync += [r_idx.eq(r_idx + 1), rec.eq(Mux(rec == cpg - 1, 0, rec + 1))]
                with m.If(last_of_word):
                    m.d.sync += [self.weights.valid.eq(0), r_idx.eq(0)]
            with m.If(take_weight):
                m.d.sync += [word.eq(beat), self.weights.valid.eq(1), r_idx.eq(0)]
        with m.If(take_weight):
            m.d.sync += w_beat.eq(Mux(w_last_beat, 0, w_beat + 1))
            with m.If(w_last_beat):
                m.d.sync += in_scale.eq(1)
        m.d.comb += self.beats.ready.eq(take_scale | take_weight)
        return m


ROW_BITS = 24  # n < 2^24 rows


def _descriptor_layout(p: EngineParams) -> data.StructLayout:
    return data.StructLayout({"n": ROW_BITS, "chunks": range(p.max_d_pad // p.lanes + 1), "m": range(p.vectors + 1)})


class TritEngine(wiring.Component):
    """The weight-streaming ternary engine (module doc). Parameters: :class:`EngineParams`.

    With ``rom`` (a model image's blob) the words come from an on-chip ROM instead of
    ``m_axi``: resident weights for small models, the same datapath.

    Ports: ``s_axil`` (AXI4-Lite slave), ``m_axi`` (AXI4 read master), ``s_axis_x``
    (activations: tdata = P A-bit values, lane i at bits i*A; tlast ends a vector, tuser
    ends a batch), ``m_axis_y`` (results: tdata = a sign-extended ACC-bit accumulator,
    tid = vector, tlast = the vector's last row).
    """

    def __init__(self, params: EngineParams, rom: bytes | None = None):
        if not isinstance(params, EngineParams):
            raise TypeError(f"params must be EngineParams, not {type(params).__name__}")
        self.params = p = params
        self.vec_bits = max(1, (p.vectors - 1).bit_length())
        ports = {
            "s_axil": In(AxiLiteSignature(8)),
            "s_axis_x": In(AxiStreamSignature(p.lanes * p.act_bits, user_width=1)),
            "m_axis_y": Out(AxiStreamSignature(p.out_bits, id_width=self.vec_bits)),
        }
        self.rom_words = None
        if rom is None:
            ports["m_axi"] = Out(AxiReadSignature(p.addr_width, p.data_width))
        else:  # resident weights: a model image's blob in on-chip ROM instead of the AXI master
            wb = p.data_width // 8
            if not rom or len(rom) % wb:
                raise ValueError(f"rom must be a non-empty multiple of {wb} bytes (whole words), not {len(rom)}")
            self.rom_words = [int.from_bytes(rom[i : i + wb], "little") for i in range(0, len(rom), wb)]
        super().__init__(ports)

    def elaborate(self, platform):
        p = self.params
        L = p.layout
        m = Module()
        P, R, M, cpg = p.lanes, p.rows, p.vectors, L.chunks_per_group
        stride_bits = (p.chunk_stride - 1).bit_length()
        vec_bits = (M - 1).bit_length()

        # ------------------------------------------------------------ registers
        m.submodules.regs = regs = AxiLiteRegs(8)
        wiring.connect(m, wiring.flipped(self.s_axil), regs.bus)
        desc_n, desc_chunks, desc_m = Signal(32), Signal(32), Signal(32)
        addr_lo, addr_hi, beats = Signal(32), Signal(32), Signal(32)
        counters = {name: Signal(32, name=f"count_{name}") for name in ("cycles", "issued", "wait_w", "wait_x",
                                                                         "wait_y")}
        errors = Signal(4)
        runs_done = Signal(24)
        clear = Signal()

        # descriptor queues: the DMA, the compute core and the output side each take their copy
        desc = _descriptor_layout(p)
        m.submodules.q_dma = q_dma = SyncFIFOBuffered(width=p.addr_width + 32, depth=2)
        m.submodules.q_core = q_core = SyncFIFOBuffered(width=desc.size, depth=2)
        m.submodules.q_out = q_out = SyncFIFOBuffered(width=desc.size, depth=2)
        queue_full = ~(q_dma.w_rdy & q_core.w_rdy & q_out.w_rdy)
        start = Signal()
        wr = regs.write
        m.d.comb += [start.eq(wr.valid & (wr.addr == Reg.CTRL) & wr.data[0]),
                     clear.eq(wr.valid & (wr.addr == Reg.CTRL) & wr.data[1])]
        for reg, addr in ((desc_n, Reg.N), (desc_chunks, Reg.CHUNKS), (desc_m, Reg.M), (addr_lo, Reg.ADDR_LO),
                          (addr_hi, Reg.ADDR_HI), (beats, Reg.BEATS)):
            with m.If(wr.valid & (wr.addr == addr)):
                m.d.sync += reg.eq(wr.data)
        entry = Signal(desc)
        m.d.comb += [entry.n.eq(desc_n), entry.chunks.eq(desc_chunks), entry.m.eq(desc_m)]
        max_chunks = p.max_d_pad // P
        align_bits = (p.burst_bytes - 1).bit_length()  # a burst never crosses 4 KiB
        bad_desc = ((desc_n == 0) | (desc_n[ROW_BITS:] != 0) | (desc_m == 0) | (desc_m > M) | (desc_chunks == 0)
                    | (desc_chunks > max_chunks) | (desc_chunks[: (cpg - 1).bit_length()] != 0) | (beats == 0)
                    | (addr_lo[:align_bits] != 0))
        push = start & ~queue_full & ~bad_desc
        m.d.comb += [q_dma.w_data.eq(Cat(Cat(addr_lo, addr_hi)[: p.addr_width], beats)), q_dma.w_en.eq(push),
                     q_core.w_data.eq(entry), q_core.w_en.eq(push), q_out.w_data.eq(entry), q_out.w_en.eq(push)]
        if L.packing == "base3":
            # The decoder's copy: the layer's step count ceil(n / R) * ng, two stages after the
            # push (operands, then product). It pops when it starts the layer's words and the
            # core finishes a layer only after that, so at most q_core's two entries, the
            # running layer and the pipeline are ever held: depth 4 never refuses.
            m.submodules.q_steps = q_steps = SyncFIFOBuffered(width=32, depth=4)
            blocks_s, ng_s, steps_s = Signal(ROW_BITS), Signal(16), Signal(32)
            valid_s = Signal(2)
            m.d.sync += [valid_s.eq(Cat(push, valid_s[0])), steps_s.eq(blocks_s * ng_s)]
            with m.If(push):
                m.d.sync += [blocks_s.eq((desc_n[:ROW_BITS] + (R - 1)) >> (R - 1).bit_length()),
                             ng_s.eq(desc_chunks >> (cpg - 1).bit_length())]
            m.d.comb += [q_steps.w_data.eq(steps_s), q_steps.w_en.eq(valid_s[1])]

        # ------------------------------------------------------------ DMA and record unpacker
        if self.rom_words is None:
            m.submodules.dma = dma = AxiBurstReader(p.addr_width, p.data_width, p.burst, p.outstanding)
            wiring.connect(m, wiring.flipped(self.m_axi), dma.bus)
        else:
            m.submodules.dma = dma = RomReader(self.rom_words, p.addr_width, p.data_width)
        m.d.comb += [dma.cmd.payload.addr.eq(q_dma.r_data[: p.addr_width]),
                     dma.cmd.payload.beats.eq(q_dma.r_data[p.addr_width :]),
                     dma.cmd.valid.eq(q_dma.r_rdy), q_dma.r_en.eq(dma.cmd.ready), dma.clear.eq(clear)]
        if L.packing == "base3":
            m.submodules.unpack = unpack = Base3Unpacker(L)
            m.d.comb += [unpack.steps.payload.eq(q_steps.r_data), unpack.steps.valid.eq(q_steps.r_rdy),
                         q_steps.r_en.eq(unpack.steps.ready)]
        else:
            m.submodules.unpack = unpack = RecordUnpacker(L)
        # Two-entry FIFOs between the DMA, the unpacker and the issue stage: a consumer's
        # ready only moves a read pointer (no wide load enable at the end of its logic, and
        # nothing reaches further back). Measured on ECP5 at P=64, R=4: the issue's ready
        # through the unpacker held 82 MHz, register slices' 512- and 1024-bit enables 89
        # and 98 MHz.
        weights = stream.Signature(L.record_bits).create()
        scales_in = stream.Signature(L.scale_record_bits).create()
        for name, source, sink in (("beat_q", dma.data, unpack.beats), ("weight_q", unpack.weights, weights),
                                   ("scale_q", unpack.scales, scales_in)):
            m.submodules[name] = q = SyncFIFO(width=len(source.payload), depth=2)
            m.d.comb += [q.w_data.eq(source.payload), q.w_en.eq(source.valid), source.ready.eq(q.w_rdy),
                         sink.payload.eq(q.r_data), sink.valid.eq(q.r_rdy), q.r_en.eq(sink.ready)]

        # ------------------------------------------------------------ activation banks
        x_bits = P * p.act_bits
        depth = 2 * M * p.chunk_stride
        m.submodules.act = act = Memory(shape=unsigned(x_bits), depth=depth, init=[])
        act_w, act_r = act.write_port(), act.read_port()
        bank_full = Signal(2)
        bank_m = [Signal(range(M + 1), name=f"bank{b}_m") for b in range(2)]
        wb, lv, lc = Signal(), Signal(range(M + 1)), Signal(range(p.chunk_stride + 1))
        x = self.s_axis_x
        can_load = ~bank_full.bit_select(wb, 1)
        overflow = (lv >= M) | (lc >= p.chunk_stride)
        m.d.comb += [x.tready.eq(can_load),
                     act_w.addr.eq(Cat(lc[:stride_bits], lv[:vec_bits], wb)), act_w.data.eq(x.tdata),
                     act_w.en.eq(x.tvalid & can_load & ~overflow)]
        release = Signal()  # the compute core finished its bank
        rb = Signal()
        with m.If(x.tvalid & can_load):
            m.d.sync += lc.eq(lc + 1)
            with m.If(x.tlast):
                m.d.sync += [lc.eq(0), lv.eq(lv + 1)]
            with m.If(x.tuser[0]):
                m.d.sync += [lv.eq(0), wb.eq(~wb)]
                for b in range(2):
                    with m.If(wb == b):
                        m.d.sync += bank_m[b].eq(lv + x.tlast)
        # the release reaches the bank flags a cycle later: the issue decision stays local
        release_d, released = Signal(), Signal()
        m.d.sync += [release_d.eq(release), released.eq(rb)]
        for b in range(2):
            with m.If((x.tvalid & can_load & x.tuser[0] & (wb == b)) | (release_d & (released == b))):
                m.d.sync += bank_full[b].eq(x.tvalid & can_load & x.tuser[0] & (wb == b))

        # ------------------------------------------------------------ issue
        running = Signal()
        run = Signal(desc)
        R_bits = (R - 1).bit_length()
        chunk = Signal(range(p.chunk_stride + 1))
        in_group = Signal(range(cpg))
        group = Signal(range(p.chunk_stride + 1))
        v = Signal(range(M))
        # registered end-of-loop flags: no wide add or compare on the issue path
        chunks_m1, ng_m1, m_m1 = Signal.like(chunk), Signal.like(group), Signal(range(M))
        blocks_left = Signal(ROW_BITS)
        last_block = Signal()
        scale_hold = Signal(L.scale_record_bits)
        m.submodules.out_fifo = out_fifo = SyncFIFOBuffered(width=R * p.acc_bits, depth=4 * M)

        first_of_group = (in_group == 0) & (v == 0)
        first_of_block = (chunk == 0) & (v == 0)
        last_v = v == m_m1
        last_chunk = chunk == chunks_m1
        have_x = Signal()  # registered: a bank filled or released one cycle ago only delays an issue
        m.d.sync += have_x.eq(bank_full.bit_select(rb, 1))
        have_w = weights.valid & (~first_of_group | scales_in.valid)
        # an output entry is promised when a vector's last chunk of the block issues: never more than fit
        promised = Signal(range(4 * M + 1))
        final_op = (group == ng_m1) & (in_group == cpg - 1)
        have_y = ~final_op | (promised < 4 * M)
        issue = running & have_x & have_w & have_y
        with m.If(~running & q_core.r_rdy):
            nxt = data.View(desc, q_core.r_data)
            blocks = (nxt.n + (R - 1)) >> R_bits
            m.d.comb += q_core.r_en.eq(1)
            m.d.sync += [running.eq(1), run.eq(nxt), chunk.eq(0), in_group.eq(0), group.eq(0), v.eq(0),
                         chunks_m1.eq(nxt.chunks - 1), ng_m1.eq((nxt.chunks >> (cpg.bit_length() - 1)) - 1),
                         m_m1.eq(nxt.m - 1), blocks_left.eq(blocks), last_block.eq(blocks == 1)]
        m.d.comb += [scales_in.ready.eq(issue & first_of_group), weights.ready.eq(issue & last_v),
                     act_r.addr.eq(Cat(chunk[:stride_bits], v[:vec_bits], rb))]
        with m.If(first_of_group):  # the queue's head is this group's record; the issue decision stays off the enable
            m.d.sync += scale_hold.eq(scales_in.payload)
        with m.If(issue):
            m.d.sync += v.eq(Mux(last_v, 0, v + 1))
            with m.If(last_v):
                m.d.sync += [chunk.eq(chunk + 1), in_group.eq(in_group + 1)]
                with m.If(in_group == cpg - 1):
                    m.d.sync += [in_group.eq(0), group.eq(group + 1)]
                with m.If(last_chunk):
                    m.d.sync += [chunk.eq(0), group.eq(0), blocks_left.eq(blocks_left - 1),
                                 last_block.eq(blocks_left == 2)]
                    with m.If(last_block):
                        m.d.sync += [running.eq(0), rb.eq(~rb)]
                        m.d.comb += release.eq(1)
        # Counters and the batch check see the issue stage one cycle late: the issue decision
        # then drives only the FIFOs and the datapath, so the placer keeps it beside them and
        # not beside the register block (measured: it set the base-3 engine's critical path).
        run_d, issue_d, have_x_d, have_w_d, have_y_d, mismatch = (Signal(name=f"{n}_d") for n in (
            "running", "issue", "have_x", "have_w", "have_y", "mismatch"))
        m.d.sync += [run_d.eq(running), issue_d.eq(issue), have_x_d.eq(have_x), have_w_d.eq(have_w),
                     have_y_d.eq(have_y),
                     mismatch.eq(issue & first_of_block & (Mux(rb, bank_m[1], bank_m[0]) != run.m))]
        with m.If(run_d & ~issue_d):
            m.d.sync += [counters["wait_x"].eq(counters["wait_x"] + ~have_x_d),
                         counters["wait_w"].eq(counters["wait_w"] + (have_x_d & ~have_w_d)),
                         counters["wait_y"].eq(counters["wait_y"] + (have_x_d & have_w_d & ~have_y_d))]
        with m.If(run_d):
            m.d.sync += counters["cycles"].eq(counters["cycles"] + 1)
        with m.If(issue_d):
            m.d.sync += counters["issued"].eq(counters["issued"] + 1)

        # ------------------------------------------------------------ datapath
        tags = tags_layout(M)
        t0 = Signal(tags)
        m.d.comb += [t0.valid.eq(issue), t0.group_first.eq(in_group == 0), t0.group_last.eq(in_group == cpg - 1),
                     t0.row_first.eq(group == 0), t0.row_last.eq(group == ng_m1), t0.vec.eq(v)]
        t1, t2 = Signal(tags), Signal(tags)
        w1, w2 = Signal(L.record_bits), Signal(L.record_bits)
        s1, s2 = Signal(L.scale_record_bits), Signal(L.scale_record_bits)
        x2 = Signal(x_bits)
        scales0 = Mux(first_of_group, scales_in.payload, scale_hold)
        m.d.sync += [t1.eq(t0), t2.eq(t1), w1.eq(weights.payload), w2.eq(w1), s1.eq(scales0), s2.eq(s1),
                     x2.eq(act_r.data)]
        units = []
        unit_bits = L.unit_bits
        for r in range(R):
            m.submodules[f"row{r}"] = unit = RowUnit(P, p.act_bits, p.scale_bits, p.group_size, p.acc_bits, p.planes,
                                                     p.offset, M)
            codes = Cat(*(w2[k * unit_bits + r * 2 * P :][: 2 * P] for k in range(p.planes)))
            scales = Cat(*(s2[(k * R + r) * p.scale_bits :][: p.scale_bits] for k in range(p.terms)))
            m.d.comb += [unit.codes.as_value().eq(codes), unit.scales.as_value().eq(scales),
                         unit.x.as_value().eq(x2), unit.tags.eq(t2)]
            units.append(unit)
        if p.offset:  # the chunk's activation sum, once for all rows, aligned with the row units' trees
            m.submodules.xsum = xsum = AdderTree(P, p.act_bits)
            m.d.comb += xsum.inputs.as_value().eq(x2)
            m.d.comb += [u.xsum.eq(xsum.sum) for u in units]
        m.d.comb += [out_fifo.w_data.eq(Cat(*(u.acc for u in units))), out_fifo.w_en.eq(units[0].done)]
        m.d.sync += promised.eq(promised + (issue & final_op) - out_fifo.r_en)

        # ------------------------------------------------------------ output serializer
        y = self.m_axis_y
        out_run = Signal(desc)
        out_active = Signal()
        o_r, o_v = Signal(range(R)), Signal(range(M))
        o_blocks_left, o_last_block = Signal(ROW_BITS), Signal()
        o_last_r, o_m_m1 = Signal(range(R)), Signal(range(M))  # the last block's last row unit; m - 1
        with m.If(~out_active & q_out.r_rdy):
            nxt = data.View(desc, q_out.r_data)
            blocks = (nxt.n + (R - 1)) >> R_bits
            m.d.comb += q_out.r_en.eq(1)
            m.d.sync += [out_active.eq(1), out_run.eq(nxt), o_r.eq(0), o_v.eq(0), o_blocks_left.eq(blocks),
                         o_last_block.eq(blocks == 1), o_last_r.eq((nxt.n - 1)[:R_bits] if R > 1 else 0),
                         o_m_m1.eq(nxt.m - 1)]
        accs = [out_fifo.r_data[r * p.acc_bits :][: p.acc_bits].as_signed() for r in range(R)]
        acc_r = Signal(signed(p.acc_bits))
        with m.Switch(o_r):
            for r in range(R):
                with m.Case(r):
                    m.d.comb += acc_r.eq(accs[r])
        vector_end = o_last_block & (o_r == o_last_r)
        last_row_of_entry = (o_r == R - 1) | vector_end
        m.d.comb += [y.tvalid.eq(out_active & out_fifo.r_rdy), y.tdata.eq(acc_r), y.tid.eq(o_v),
                     y.tlast.eq(vector_end)]
        with m.If(y.tvalid & y.tready):
            m.d.sync += o_r.eq(o_r + 1)
            with m.If(last_row_of_entry):
                m.d.comb += out_fifo.r_en.eq(1)
                m.d.sync += [o_r.eq(0), o_v.eq(o_v + 1)]
                with m.If(o_v == o_m_m1):
                    m.d.sync += [o_v.eq(0), o_blocks_left.eq(o_blocks_left - 1), o_last_block.eq(o_blocks_left == 2)]
                    with m.If(o_last_block):
                        m.d.sync += [out_active.eq(0), runs_done.eq(runs_done + 1)]

        # ------------------------------------------------------------ status, errors, reads
        busy = running | out_active | q_core.r_rdy | q_out.r_rdy | ~dma.idle
        with m.If(clear):
            m.d.sync += [c.eq(0) for c in counters.values()] + [errors.eq(0)]
        with m.Else():
            m.d.sync += errors.eq(errors | Cat(dma.error, x.tvalid & can_load & overflow, mismatch,
                                               start & (queue_full | bad_desc)))
        read_map = {
            Reg.ID: Const(ENGINE_ID, 32), Reg.PARAMS: Const(p.params_word(), 32), Reg.LAYOUT: Const(p.layout_word(), 32),
            Reg.STATUS: Cat(busy, queue_full, errors != 0, Const(0, 5), runs_done),
            Reg.N: desc_n, Reg.CHUNKS: desc_chunks, Reg.M: desc_m, Reg.ADDR_LO: addr_lo, Reg.ADDR_HI: addr_hi,
            Reg.BEATS: beats, Reg.CYCLES: counters["cycles"], Reg.ISSUED: counters["issued"],
            Reg.WAIT_W: counters["wait_w"], Reg.WAIT_X: counters["wait_x"], Reg.WAIT_Y: counters["wait_y"],
            Reg.ERRORS: errors,
        }
        with m.Switch(regs.read_addr):
            for addr, value in read_map.items():
                with m.Case(addr):
                    m.d.comb += regs.read_data.eq(value)
        return m
