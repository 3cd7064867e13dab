"""The engine's control block: AXI4-Lite registers, descriptor checks and queues, counters
and error bits (register map: ``ptqtp.hdl.contract``, docs/SPEC.md section 6.2).

A valid descriptor queued by CTRL.start goes to every consumer's own two-entry queue (the
DMA, the compute core, the output side, and with base-3 packing the decoder's step count),
so each side starts the next layer when it is free. Counters see the core's events one
cycle late: the issue decision then drives only its FIFOs and the datapath, so the placer
keeps it beside them and not beside this block (measured: it set the base-3 engine's
critical path).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .axi import AxiLiteRegs, AxiLiteSignature, command_layout
from .contract import CTRL, ENGINE_ID, ERRORS, STATUS, WRITABLE, BitFields, Reg
from .engine_model import EngineParams

__all__ = ["ROW_BITS", "descriptor_layout", "events_layout", "fields_layout", "EngineControl"]

ROW_BITS = 24  # n < 2^24 rows


def descriptor_layout(p: EngineParams) -> data.StructLayout:
    """A run as the core and the output side see it: rows, chunks (d_pad / P), vectors, and
    passes (a layer of more planes than the datapath's)."""
    return data.StructLayout(
        {
            "n": ROW_BITS,
            "chunks": range(p.max_d_pad // p.lanes + 1),
            "m": range(p.vectors + 1),
            "passes": range(p.max_passes + 1),
        }
    )


def events_layout() -> data.StructLayout:
    """What the issue stage tells the counters each cycle."""
    return data.StructLayout({"running": 1, "issue": 1, "have_x": 1, "have_w": 1, "have_y": 1, "mismatch": 1})


def fields_layout(fields: BitFields) -> data.FlexibleLayout:
    """A 32-bit register's bit fields (``ptqtp.hdl.contract``) as an Amaranth layout."""
    return data.FlexibleLayout(32, {f.name: data.Field(f.width, f.lsb) for f in fields})


class EngineControl(wiring.Component):
    """Registers in, descriptor streams out.

    Ports: ``bus`` (AXI4-Lite slave), ``dma_cmd``, ``core_desc``, ``out_desc`` (and
    ``steps``, base-3 only: ceil(n / R) * ng) descriptor streams; ``clear`` (CTRL.clear);
    status in: ``active`` (the core or the output side holds a run), ``dma_idle``,
    ``dma_error``, ``overflow`` (activation overflow, a pulse), ``events`` (the issue
    stage's), ``run_done`` (a pulse per finished run).
    """

    def __init__(self, params: EngineParams):
        self.params = p = params
        ports = {
            "bus": In(AxiLiteSignature(8)),
            "dma_cmd": Out(stream.Signature(command_layout(p.addr_width))),
            "core_desc": Out(stream.Signature(descriptor_layout(p))),
            "out_desc": Out(stream.Signature(descriptor_layout(p))),
            "clear": Out(1),
            "active": In(1),
            "dma_idle": In(1),
            "dma_error": In(1),
            "overflow": In(1),
            "run_done": In(1),
            "events": In(events_layout()),
        }
        if p.layout.packing == "base3":
            ports["steps"] = Out(stream.Signature(32))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        p = self.params
        R, cpg = p.rows, p.layout.chunks_per_group
        m.submodules.regs = regs = AxiLiteRegs(8)
        wiring.connect(m, wiring.flipped(self.bus), regs.bus)
        wr = regs.write
        held = {
            r: Signal(32, name=r.name.lower(), init=int(r == Reg.PASSES)) for r in sorted(WRITABLE) if r != Reg.CTRL
        }
        for reg, value in held.items():
            with m.If(wr.valid & (wr.addr == reg)):
                m.d.sync += value.eq(wr.data)
        ctrl = data.View(fields_layout(CTRL), wr.data)
        start = wr.valid & (wr.addr == Reg.CTRL) & ctrl.start
        m.d.comb += self.clear.eq(wr.valid & (wr.addr == Reg.CTRL) & ctrl.clear)

        # ---- descriptor checks and the consumers' queues
        n, chunks, vectors, beats = held[Reg.N], held[Reg.CHUNKS], held[Reg.M], held[Reg.BEATS]
        passes = held[Reg.PASSES]
        addr = Cat(held[Reg.ADDR_LO], held[Reg.ADDR_HI])
        queues = {
            name: SyncFIFOBuffered(width=width, depth=2)
            for name, width in (
                ("q_dma", len(self.dma_cmd.payload.as_value())),
                ("q_core", len(self.core_desc.payload.as_value())),
                ("q_out", len(self.out_desc.payload.as_value())),
            )
        }
        for name, fifo in queues.items():
            m.submodules[name] = fifo
        queue_full = ~(queues["q_dma"].w_rdy & queues["q_core"].w_rdy & queues["q_out"].w_rdy)
        align_bits = (p.burst_bytes - 1).bit_length()  # a burst never crosses 4 KiB
        bad_desc = (
            (n == 0)
            | (n[ROW_BITS:] != 0)
            | (vectors == 0)
            | (vectors > p.vectors)
            | (chunks == 0)
            | (chunks > p.max_d_pad // p.lanes)
            | (chunks[: (cpg - 1).bit_length()] != 0)
            | (beats == 0)
            | (addr[:align_bits] != 0)
            | (passes == 0)
            | (passes > p.max_passes)
        )
        push = start & ~queue_full & ~bad_desc
        entry = Signal(descriptor_layout(p))
        m.d.comb += [entry.n.eq(n), entry.chunks.eq(chunks), entry.m.eq(vectors), entry.passes.eq(passes)]
        for fifo, out, payload in zip(
            queues.values(),
            (self.dma_cmd, self.core_desc, self.out_desc),
            (Cat(addr[: p.addr_width], beats), entry, entry),
        ):
            m.d.comb += [fifo.w_data.eq(payload), fifo.w_en.eq(push)]
            wiring.connect(m, fifo.r_stream, wiring.flipped(out))
        if "steps" in self.signature.members:
            # The decoder's copy: the layer's step count ceil(n / R) * ng * passes, two stages after the
            # push (operands, then product). It pops when it starts the layer's words and the
            # core finishes a layer only after that, so at most q_core's two entries, the
            # running layer and the pipeline are ever held: depth 4 never refuses.
            m.submodules.q_steps = q_steps = SyncFIFOBuffered(width=32, depth=4)
            blocks_s, ng_s, steps_s = Signal(ROW_BITS), Signal(16), Signal(32)
            valid_s = Signal(2)
            m.d.sync += [valid_s.eq(Cat(push, valid_s[0])), steps_s.eq(blocks_s * ng_s)]
            with m.If(push):
                m.d.sync += [
                    blocks_s.eq((n[:ROW_BITS] + (R - 1)) >> (R - 1).bit_length()),
                    ng_s.eq((chunks >> (cpg - 1).bit_length()) * passes[:3]),
                ]
            m.d.comb += [q_steps.w_data.eq(steps_s), q_steps.w_en.eq(valid_s[1])]
            wiring.connect(m, q_steps.r_stream, wiring.flipped(self.steps))

        # ---- counters (the events one cycle late) and sticky errors
        ev = Signal(events_layout())
        m.d.sync += ev.eq(self.events)
        counters = {
            r: Signal(32, name=f"count_{r.name.lower()}")
            for r in (Reg.CYCLES, Reg.ISSUED, Reg.WAIT_W, Reg.WAIT_X, Reg.WAIT_Y)
        }
        with m.If(ev.running & ~ev.issue):
            m.d.sync += [
                counters[Reg.WAIT_X].eq(counters[Reg.WAIT_X] + ~ev.have_x),
                counters[Reg.WAIT_W].eq(counters[Reg.WAIT_W] + (ev.have_x & ~ev.have_w)),
                counters[Reg.WAIT_Y].eq(counters[Reg.WAIT_Y] + (ev.have_x & ev.have_w & ~ev.have_y)),
            ]
        with m.If(ev.running):
            m.d.sync += counters[Reg.CYCLES].eq(counters[Reg.CYCLES] + 1)
        with m.If(ev.issue):
            m.d.sync += counters[Reg.ISSUED].eq(counters[Reg.ISSUED] + 1)
        errors = Signal(fields_layout(ERRORS))
        raised = Signal(fields_layout(ERRORS))
        m.d.comb += [
            raised.memory.eq(self.dma_error),
            raised.overflow.eq(self.overflow),
            raised.mismatch.eq(ev.mismatch),
            raised.refused.eq(start & (queue_full | bad_desc)),
        ]
        with m.If(self.clear):
            m.d.sync += [c.eq(0) for c in counters.values()] + [errors.eq(0)]
        with m.Else():
            m.d.sync += errors.eq(errors.as_value() | raised.as_value())
        runs_done = Signal(STATUS["runs"].width)
        with m.If(self.run_done):
            m.d.sync += runs_done.eq(runs_done + 1)
        status = Signal(fields_layout(STATUS))
        busy = self.active | queues["q_core"].r_rdy | queues["q_out"].r_rdy | ~self.dma_idle
        m.d.comb += [
            status.busy.eq(busy),
            status.queue_full.eq(queue_full),
            status.error.eq(errors.as_value() != 0),
            status.runs.eq(runs_done),
        ]

        # ---- reads
        read_map = {
            Reg.ID: Const(ENGINE_ID, 32),
            Reg.PARAMS: Const(p.params_word(), 32),
            Reg.LAYOUT: Const(p.layout_word(), 32),
            Reg.STATUS: status,
            Reg.ERRORS: errors,
            **held,
            **counters,
        }
        with m.Switch(regs.read_addr):
            for reg, value in read_map.items():
                with m.Case(reg):
                    m.d.comb += regs.read_data.eq(value)
        return m
