"""TritEngine: one bitstream that runs any layer, weights streamed from memory over AXI.

    AXI4-Lite --> EngineControl (registers, descriptor queues, counters) --> descriptors
    word source (AxiBurstReader, or RomReader for resident weights) --> RecordUnpacker
        (base-3: Base3Unpacker) --> scale / weight records
    x (AXI4-Stream) --> ActivationBanks (two banks of M vectors)
    IssueSequencer (block x group x chunk x vector) --> RowArray (R row units) --> output
        buffer --> OutputSerializer --> y (AXI4-Stream, one row a beat, tid = vector)

Layer values (n, d_pad / P, m, region address and length) come from a descriptor written
over AXI4-Lite (``ptqtp.hdl.contract``); the weight stream's format is
``ptqtp.formats.stream_layout``. Overlap: the next batch loads into the other activation
bank while this one computes, results drain from the output buffer while the next block
computes, the DMA runs ahead of the core by its FIFO and a queued descriptor, and with m
vectors every weight word is applied m times. Output order: docs/SPEC.md section 6.4.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .activations import ActivationBanks
from .axi import AxiBurstReader, AxiLiteSignature, AxiReadSignature, AxiStreamSignature, RomReader
from .base3 import Base3Unpacker
from .blocks import RowArray
from .control import EngineControl
from .engine_model import EngineParams
from .records import RecordUnpacker
from .sequencer import IssueSequencer
from .serializer import OutputSerializer

__all__ = ["TritEngine"]


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
        ports = {
            "s_axil": In(AxiLiteSignature(8)),
            "s_axis_x": In(AxiStreamSignature(p.lanes * p.act_bits, user_width=1)),
            "m_axis_y": Out(AxiStreamSignature(p.out_bits, id_width=p.tid_bits)),
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
        m = Module()
        m.submodules.control = ctl = EngineControl(p)
        wiring.connect(m, wiring.flipped(self.s_axil), ctl.bus)

        # weights: word source -> FIFO -> unpacker -> FIFOs -> sequencer
        if self.rom_words is None:
            m.submodules.dma = dma = AxiBurstReader(p.addr_width, p.data_width, p.burst, p.outstanding)
            wiring.connect(m, wiring.flipped(self.m_axi), dma.bus)
        else:
            m.submodules.dma = dma = RomReader(self.rom_words, p.addr_width, p.data_width)
        wiring.connect(m, ctl.dma_cmd, dma.cmd)
        m.d.comb += [dma.clear.eq(ctl.clear), ctl.dma_idle.eq(dma.idle), ctl.dma_error.eq(dma.error)]
        if p.layout.packing == "base3":
            m.submodules.unpack = unpack = Base3Unpacker(p.layout)
            wiring.connect(m, ctl.steps, unpack.steps)
        else:
            m.submodules.unpack = unpack = RecordUnpacker(p.layout)
        m.submodules.seq = seq = IssueSequencer(p)
        wiring.connect(m, ctl.core_desc, seq.desc)
        # Two-entry FIFOs between the DMA, the unpacker and the issue stage: a consumer's
        # ready only moves a read pointer (no wide load enable at the end of its logic, and
        # nothing reaches further back). Measured on ECP5 at P=64, R=4: the issue's ready
        # through the unpacker held 82 MHz, register slices' 512- and 1024-bit enables 89
        # and 98 MHz.
        for name, source, sink in (
            ("beat_q", dma.data, unpack.beats),
            ("weight_q", unpack.weights, seq.weights),
            ("scale_q", unpack.scales, seq.scale_in),
        ):
            m.submodules[name] = q = SyncFIFO(width=len(source.payload), depth=2)
            wiring.connect(m, source, q.w_stream)
            wiring.connect(m, q.r_stream, sink)

        # activations -> sequencer -> row units -> output buffer -> serializer
        m.submodules.act = act = ActivationBanks(p)
        wiring.connect(m, wiring.flipped(self.s_axis_x), act.x)
        m.submodules.rows = rows = RowArray(p)
        m.submodules.out_fifo = out_fifo = SyncFIFOBuffered(width=len(rows.accs), depth=seq.out_entries)
        m.submodules.serializer = ser = OutputSerializer(p)
        wiring.connect(m, ctl.out_desc, ser.desc)
        wiring.connect(m, out_fifo.r_stream, ser.entries)
        wiring.connect(m, ser.y, wiring.flipped(self.m_axis_y))
        m.d.comb += [
            act.rd_addr.eq(seq.rd_addr),
            act.release.eq(seq.release),
            seq.have_x.eq(act.have_x),
            seq.bank_m.eq(act.bank_m),
            seq.y_pop.eq(ser.entries.ready),
            rows.tags.eq(seq.tags),
            rows.record.eq(seq.record),
            rows.scales.eq(seq.scales),
            rows.x.eq(act.rd_data),
            out_fifo.w_data.eq(rows.accs),
            out_fifo.w_en.eq(rows.done),
            ctl.events.eq(seq.events),
            ctl.overflow.eq(act.overflow),
            ctl.active.eq(seq.running | ser.active),
            ctl.run_done.eq(ser.run_done),
        ]
        return m
