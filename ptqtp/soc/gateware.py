"""The engine inside a LiteX SoC: its Verilog as an instance, its buses glued to the SoC's.

    SoC Wishbone --> Wishbone2AXILite --> engine s_axil          (ENGINE_REGS)
    SoC Wishbone --> SoC registers (X_FRAME, Y_LEVEL, ...)        (CONTROL)
    SoC Wishbone --> x framer --> FIFO --> engine s_axis_x        (X_WINDOW, writes)
    engine m_axis_y --> FIFO --> y window --> SoC Wishbone        (Y_WINDOW, reads)
    engine m_axi (reads only) --> LiteDRAMAXI2NativeR --> a DRAM crossbar read port of DW bits

Activations and results pass through FIFOs on the bus, not DRAM buffers: per layer they are
a few kB against megabytes of weights, so they cost no DRAM bandwidth and need no second
DMA, and the host link (UART or Ethernet) is their bottleneck either way. Addresses:
``ptqtp.soc.memory_map``.
"""

from __future__ import annotations

from litex.soc.interconnect import wishbone
from litex.soc.interconnect.axi import AXIInterface, AXILiteInterface, Wishbone2AXILite
from migen import Cat, ClockSignal, If, Instance, Module, Mux, Replicate, ResetSignal, Signal
from migen.genlib.fifo import SyncFIFOBuffered

from ptqtp.hdl.engine_model import EngineParams

from .memory_map import ENGINE_REGS, SOC_ID, Ctl

__all__ = ["EngineInSoC", "ENGINE_MODULE"]

#: the engine's Verilog module name inside the SoC
ENGINE_MODULE = "ptqtp_engine"


def _slave() -> wishbone.Interface:
    return wishbone.Interface(data_width=32, address_width=32, addressing="word")


class EngineInSoC(Module):
    """The engine plus its glue. ``buses`` maps region names (``memory_map``) to Wishbone
    slaves; ``axi`` is the engine's read master, to be bridged to a DRAM port."""

    def __init__(self, params: EngineParams, y_depth: int = 512):
        p = params
        self.params = p
        self.buses = {name: _slave() for name in ("engine", "control", "x", "y")}
        self.axi = AXIInterface(data_width=p.data_width, address_width=32, id_width=1)
        x_bits, y_bits = p.lanes * p.act_bits, p.out_bits
        self.x_words = x_words = -(-x_bits // 32)
        if y_bits > 56 or p.tid_bits > 7:
            raise ValueError(f"y entries of {y_bits} bits and tid of {p.tid_bits} bits do not fit two words")

        # engine registers over AXI4-Lite
        axil = AXILiteInterface(data_width=32, address_width=32)
        self.submodules.axil_bridge = Wishbone2AXILite(self.buses["engine"], axil, base_address=ENGINE_REGS)

        # x framer: words -> beats of P*A bits, tlast every `chunks` beats, tuser on the batch's last
        chunks, vectors = Signal(16), Signal(8)
        word_i, beat_i, vec_i = Signal(max=max(x_words, 2)), Signal(16), Signal(8)
        assembled = Signal(32 * x_words)
        self.submodules.x_fifo = x_fifo = SyncFIFOBuffered(x_bits + 2, 16)
        xb = self.buses["x"]
        last_word = word_i == x_words - 1
        vec_end, batch_end = beat_i == chunks - 1, vec_i == vectors - 1
        framed = chunks != 0
        x_write = Signal()
        self.comb += [
            x_write.eq(xb.cyc & xb.stb & xb.we & ~xb.ack & (x_fifo.writable | ~last_word | ~framed)),
            x_fifo.din.eq(Cat(Cat(assembled[: 32 * (x_words - 1)], xb.dat_w)[:x_bits], vec_end, vec_end & batch_end)),
            x_fifo.we.eq(x_write & last_word & framed),
        ]
        frame_write = Signal()
        no_frame = Signal()
        self.sync += [
            xb.ack.eq(x_write),
            If(
                frame_write,
                word_i.eq(0),
                beat_i.eq(0),
                vec_i.eq(0),
            ).Elif(
                x_write,
                If(~framed, no_frame.eq(1)),
                If(
                    last_word,
                    word_i.eq(0),
                    If(
                        vec_end,
                        beat_i.eq(0),
                        If(batch_end, vec_i.eq(0)).Else(vec_i.eq(vec_i + 1)),
                    ).Else(beat_i.eq(beat_i + 1)),
                ).Else(
                    word_i.eq(word_i + 1),
                    *[If(word_i == k, assembled[32 * k : 32 * (k + 1)].eq(xb.dat_w)) for k in range(x_words - 1)],
                ),
            ),
        ]

        # y: entries {tlast, tid, acc} -> FIFO -> two reads each (low word, then high word with tid and tlast)
        self.submodules.y_fifo = y_fifo = SyncFIFOBuffered(y_bits + p.tid_bits + 1, y_depth)
        y_data, y_tid, y_last, y_valid = Signal(y_bits), Signal(p.tid_bits), Signal(), Signal()
        acc = y_fifo.dout[:y_bits]
        high = Signal(32)
        self.comb += [
            y_fifo.din.eq(Cat(y_data, y_tid, y_last)),
            y_fifo.we.eq(y_valid),
            high.eq(
                Cat(
                    acc[32:],
                    Replicate(acc[y_bits - 1], 24 - (y_bits - 32)),
                    y_fifo.dout[y_bits : y_bits + p.tid_bits],
                    Replicate(0, 7 - p.tid_bits),
                    y_fifo.dout[-1],
                )
            ),
        ]
        yb, half, underflow = self.buses["y"], Signal(), Signal()
        y_read = Signal()
        self.comb += [
            y_read.eq(yb.cyc & yb.stb & ~yb.we & ~yb.ack),
            y_fifo.re.eq(y_read & half & y_fifo.readable),
        ]
        self.sync += [
            yb.ack.eq(y_read | (yb.cyc & yb.stb & yb.we & ~yb.ack)),
            If(
                y_read,
                If(
                    y_fifo.readable,
                    yb.dat_r.eq(Mux(half, high, acc[:32])),
                    half.eq(~half),
                ).Else(yb.dat_r.eq(0xFFFFFFFF), underflow.eq(1)),
            ),
        ]

        # SoC registers
        cb, cycles = self.buses["control"], Signal(32)
        ctl_access = Signal()
        self.comb += [
            ctl_access.eq(cb.cyc & cb.stb & ~cb.ack),
            frame_write.eq(ctl_access & cb.we & (cb.adr[:4] == Ctl.X_FRAME)),
        ]
        reads = {
            Ctl.SOC_ID: SOC_ID,
            Ctl.X_FRAME: Cat(chunks, vectors),
            Ctl.Y_LEVEL: y_fifo.level,
            Ctl.STATUS: Cat(underflow, no_frame),
            Ctl.CYCLES: cycles,
            Ctl.X_WORDS: x_words,
            Ctl.Y_DEPTH: y_depth,
        }
        self.sync += [
            cycles.eq(cycles + 1),
            cb.ack.eq(ctl_access),
            If(ctl_access & ~cb.we, cb.dat_r.eq(0), *[If(cb.adr[:4] == k, cb.dat_r.eq(v)) for k, v in reads.items()]),
            If(frame_write, chunks.eq(cb.dat_w[:16]), vectors.eq(cb.dat_w[16:24])),
            If(
                ctl_access & cb.we & (cb.adr[:4] == Ctl.STATUS),
                If(cb.dat_w[0], underflow.eq(0)),
                If(cb.dat_w[1], no_frame.eq(0)),
            ),
        ]
        # a y read that found the FIFO empty must not be overridden by the clear in the same cycle
        self.sync += If(y_read & ~y_fifo.readable, underflow.eq(1))

        # the engine
        a = self.axi
        self.comb += [a.aw.valid.eq(0), a.w.valid.eq(0), a.b.ready.eq(1)]
        self.specials += Instance(
            ENGINE_MODULE,
            i_clk=ClockSignal(),
            i_rst=ResetSignal(),
            i_s_axil__awaddr=axil.aw.addr[:8],
            i_s_axil__awvalid=axil.aw.valid,
            o_s_axil__awready=axil.aw.ready,
            i_s_axil__wdata=axil.w.data,
            i_s_axil__wstrb=axil.w.strb,
            i_s_axil__wvalid=axil.w.valid,
            o_s_axil__wready=axil.w.ready,
            o_s_axil__bresp=axil.b.resp,
            o_s_axil__bvalid=axil.b.valid,
            i_s_axil__bready=axil.b.ready,
            i_s_axil__araddr=axil.ar.addr[:8],
            i_s_axil__arvalid=axil.ar.valid,
            o_s_axil__arready=axil.ar.ready,
            o_s_axil__rdata=axil.r.data,
            o_s_axil__rresp=axil.r.resp,
            o_s_axil__rvalid=axil.r.valid,
            i_s_axil__rready=axil.r.ready,
            i_s_axis_x__tdata=x_fifo.dout[:x_bits],
            i_s_axis_x__tlast=x_fifo.dout[x_bits],
            i_s_axis_x__tuser=x_fifo.dout[x_bits + 1],
            i_s_axis_x__tvalid=x_fifo.readable,
            o_s_axis_x__tready=x_fifo.re,
            o_m_axis_y__tdata=y_data,
            o_m_axis_y__tid=y_tid,
            o_m_axis_y__tlast=y_last,
            o_m_axis_y__tvalid=y_valid,
            i_m_axis_y__tready=y_fifo.writable,
            o_m_axi__arid=a.ar.id,
            o_m_axi__araddr=a.ar.addr,
            o_m_axi__arlen=a.ar.len,
            o_m_axi__arsize=a.ar.size,
            o_m_axi__arburst=a.ar.burst,
            o_m_axi__arvalid=a.ar.valid,
            i_m_axi__arready=a.ar.ready,
            i_m_axi__rid=a.r.id,
            i_m_axi__rdata=a.r.data,
            i_m_axi__rresp=a.r.resp,
            i_m_axi__rlast=a.r.last,
            i_m_axi__rvalid=a.r.valid,
            o_m_axi__rready=a.r.ready,
        )
