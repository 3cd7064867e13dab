"""AXI building blocks in Amaranth 0.5: the bus signatures, an AXI4-Lite register slave and an
AXI4 burst read master (amaranth-soc is not on PyPI, so these are ours; tested against
cocotbext-axi's bus models).

Members are named as the AXI specification names them (``araddr``, ``rvalid``, ...), so the
Verilog ports come out as ``<port>__araddr`` and cocotbext-axi finds them with
``from_prefix(dut, "<port>", bus_separator="__")``.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = [
    "AxiLiteSignature",
    "AxiReadSignature",
    "AxiStreamSignature",
    "AxiLiteRegs",
    "AxiBurstReader",
    "AxiWriteSignature",
    "AxiWordWriter",
    "RomReader",
    "INCR",
    "OKAY",
    "command_layout",
]

INCR = 0b01  # AxBURST: incrementing burst
OKAY = 0b00  # xRESP


class AxiLiteSignature(wiring.Signature):
    """AXI4-Lite, seen from the master (the host writing and reading registers)."""

    def __init__(self, addr_width: int = 8, data_width: int = 32):
        super().__init__(
            {
                "awaddr": Out(addr_width),
                "awvalid": Out(1),
                "awready": In(1),
                "wdata": Out(data_width),
                "wstrb": Out(data_width // 8),
                "wvalid": Out(1),
                "wready": In(1),
                "bresp": In(2),
                "bvalid": In(1),
                "bready": Out(1),
                "araddr": Out(addr_width),
                "arvalid": Out(1),
                "arready": In(1),
                "rdata": In(data_width),
                "rresp": In(2),
                "rvalid": In(1),
                "rready": Out(1),
            }
        )


class AxiReadSignature(wiring.Signature):
    """The read half of AXI4 (AR and R channels), seen from the master."""

    def __init__(self, addr_width: int, data_width: int, id_width: int = 1):
        super().__init__(
            {
                "arid": Out(id_width),
                "araddr": Out(addr_width),
                "arlen": Out(8),
                "arsize": Out(3),
                "arburst": Out(2),
                "arvalid": Out(1),
                "arready": In(1),
                "rid": In(id_width),
                "rdata": In(data_width),
                "rresp": In(2),
                "rlast": In(1),
                "rvalid": In(1),
                "rready": Out(1),
            }
        )


class AxiWriteSignature(wiring.Signature):
    """The write half of AXI4 (AW, W and B channels), seen from the master."""

    def __init__(self, addr_width: int, data_width: int, id_width: int = 1):
        super().__init__(
            {
                "awid": Out(id_width),
                "awaddr": Out(addr_width),
                "awlen": Out(8),
                "awsize": Out(3),
                "awburst": Out(2),
                "awvalid": Out(1),
                "awready": In(1),
                "wdata": Out(data_width),
                "wstrb": Out(data_width // 8),
                "wlast": Out(1),
                "wvalid": Out(1),
                "wready": In(1),
                "bid": In(id_width),
                "bresp": In(2),
                "bvalid": In(1),
                "bready": Out(1),
            }
        )


class AxiStreamSignature(wiring.Signature):
    """AXI4-Stream, seen from the source: tdata, tvalid, tready, tlast and optional tid, tuser."""

    def __init__(self, data_width: int, id_width: int = 0, user_width: int = 0):
        members = {"tdata": Out(data_width), "tvalid": Out(1), "tready": In(1), "tlast": Out(1)}
        if id_width:
            members["tid"] = Out(id_width)
        if user_width:
            members["tuser"] = Out(user_width)
        super().__init__(members)


class AxiLiteRegs(wiring.Component):
    """An AXI4-Lite slave over 32-bit registers at word addresses.

    A write (address and data accepted together) pulses ``write.valid`` with the word index
    and data; a read presents the word index on ``read_addr`` and answers ``read_data`` one
    cycle later. Responses are always OKAY. One transaction of each kind at a time.
    """

    def __init__(self, addr_width: int = 8):
        if not isinstance(addr_width, int) or not 3 <= addr_width <= 32:
            raise ValueError(f"addr_width must be an integer in 3..32, not {addr_width!r}")
        self.addr_width = addr_width
        words = addr_width - 2
        super().__init__(
            {
                "bus": In(AxiLiteSignature(addr_width)),
                "write": Out(data.StructLayout({"valid": 1, "addr": words, "data": 32})),
                "read_addr": Out(words),
                "read_data": In(32),
            }
        )

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        take_write = bus.awvalid & bus.wvalid & ~bus.bvalid
        m.d.comb += [
            bus.awready.eq(take_write),
            bus.wready.eq(take_write),
            bus.bresp.eq(OKAY),
            self.write.valid.eq(take_write),
            self.write.addr.eq(bus.awaddr[2:]),
            self.write.data.eq(bus.wdata),
        ]
        with m.If(take_write):
            m.d.sync += bus.bvalid.eq(1)
        with m.Elif(bus.bready):
            m.d.sync += bus.bvalid.eq(0)
        take_read = bus.arvalid & ~bus.rvalid
        m.d.comb += [bus.arready.eq(take_read), bus.rresp.eq(OKAY), self.read_addr.eq(bus.araddr[2:])]
        with m.If(take_read):
            m.d.sync += [bus.rvalid.eq(1), bus.rdata.eq(self.read_data)]
        with m.Elif(bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        return m


def command_layout(addr_width: int, beats_width: int = 32) -> data.StructLayout:
    """A word source's command: byte address and word count."""
    return data.StructLayout({"addr": addr_width, "beats": beats_width})


def _word_source(addr_width: int, data_width: int, beats_width: int) -> dict:
    """The ports every word source of the engine has: ``cmd`` {addr (bytes), beats} in,
    ``data`` words out, a sticky ``error`` with its ``clear``, and ``idle``."""
    return {
        "cmd": In(stream.Signature(command_layout(addr_width, beats_width))),
        "data": Out(stream.Signature(data_width)),
        "error": Out(1),
        "clear": In(1),
        "idle": Out(1),
    }


class AxiBurstReader(wiring.Component):
    """Reads ``beats`` consecutive words from ``addr`` with INCR bursts and streams them out.

    Parameters
    ----------
    addr_width, data_width: the AXI address and data widths (data a power of two >= 8).
    burst: the most beats per burst (power of two, 1..256; burst * data_width / 8 <= 4096).
    outstanding: bursts that may be in flight (counted from AR to RLAST; short bursts count
        too); the data FIFO holds burst * outstanding words, and an address is issued only
        when the FIFO has room for its whole burst, so ``rready`` is always high.

    split_4k: also end a burst at each 4 KiB boundary, so ``addr`` needs only word alignment
        (the token core's table rows and KV records); without it (the engine's weight
        regions) ``addr`` must be aligned to ``burst * data_width / 8`` bytes.

    ``cmd`` takes {addr, beats}. ``error`` is sticky on a non-OKAY response (cleared by
    ``clear``).
    """

    def __init__(
        self,
        addr_width: int = 32,
        data_width: int = 128,
        burst: int = 16,
        outstanding: int = 4,
        beats_width: int = 32,
        split_4k: bool = False,
    ):
        if data_width < 8 or data_width & (data_width - 1):
            raise ValueError(f"data_width must be a power of two >= 8, not {data_width!r}")
        if not isinstance(burst, int) or not 1 <= burst <= 256 or burst & (burst - 1) or burst * data_width // 8 > 4096:
            raise ValueError(
                f"burst must be a power of two in 1..256 with burst * data_width / 8 <= 4096, not {burst!r}"
            )
        if not isinstance(outstanding, int) or outstanding < 1:
            raise ValueError(f"outstanding must be a positive integer, not {outstanding!r}")
        self.addr_width, self.data_width, self.burst, self.outstanding = addr_width, data_width, burst, outstanding
        self.beats_width, self.split_4k = beats_width, split_4k
        super().__init__(
            {"bus": Out(AxiReadSignature(addr_width, data_width)), **_word_source(addr_width, data_width, beats_width)}
        )

    def elaborate(self, platform):
        m = Module()
        bus, depth = self.bus, self.burst * self.outstanding
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self.data_width, depth=depth)
        addr = Signal(self.addr_width)
        remaining = Signal(self.beats_width)
        # Registered bookkeeping keeps the FIFO's level and wide compares off the AR path
        # (measured: depth - level - inflight >= min(burst, remaining) capped ECP5 at 75 MHz).
        credits = Signal(range(depth + 1), init=depth)  # FIFO words neither filled nor promised to a burst
        length = Signal(range(self.burst + 1))  # min(burst, remaining), one cycle behind it
        settled = Signal()  # length reflects remaining (not in the cycle after it changed)
        # bursts in flight, AR to RLAST (found by the formal check: credits alone let several
        # short bursts, ends of back-to-back commands, exceed `outstanding`)
        slots = Signal(range(self.outstanding + 1), init=self.outstanding)
        issued = bus.arvalid & bus.arready
        accepted = self.cmd.valid & self.cmd.ready
        popped = fifo.r_en & fifo.r_rdy
        capped = Mux(remaining > self.burst, self.burst, remaining)
        if self.split_4k:  # words left before the next 4 KiB boundary
            word_shift = (self.data_width // 8).bit_length() - 1
            room = Signal(range(4096 + 1))
            m.d.comb += room.eq((4096 - addr[:12]) >> word_shift)
            capped = Mux(capped > room, room, capped)
        m.d.sync += [
            length.eq(capped),
            settled.eq(~(issued | accepted)),
            credits.eq(credits - Mux(issued, length, 0) + popped),
            slots.eq(slots - issued + (bus.rvalid & bus.rlast)),
        ]
        m.d.comb += [
            self.cmd.ready.eq(remaining == 0),
            bus.arid.eq(0),
            bus.araddr.eq(addr),
            bus.arlen.eq(length - 1),
            bus.arsize.eq((self.data_width // 8).bit_length() - 1),
            bus.arburst.eq(INCR),
            bus.arvalid.eq(settled & (remaining != 0) & (credits >= length) & (slots != 0)),
            bus.rready.eq(1),
            fifo.w_data.eq(bus.rdata),
            fifo.w_en.eq(bus.rvalid),
            self.data.payload.eq(fifo.r_data),
            self.data.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.data.ready),
            self.idle.eq((remaining == 0) & (credits == depth)),
        ]
        with m.If(accepted):
            m.d.sync += [addr.eq(self.cmd.payload.addr), remaining.eq(self.cmd.payload.beats)]
        with m.Elif(issued):
            m.d.sync += [addr.eq(addr + length * (self.data_width // 8)), remaining.eq(remaining - length)]
        with m.If(self.clear):
            m.d.sync += self.error.eq(0)
        with m.Elif(bus.rvalid & (bus.rresp != OKAY)):
            m.d.sync += self.error.eq(1)
        return m


class AxiWordWriter(wiring.Component):
    """Writes ``beats`` consecutive words from ``addr`` (word aligned), one single-beat burst
    per word (no 4 KiB rule to keep), from the ``data`` stream. ``done`` pulses when the last
    word's response has come back; ``error`` is sticky on a non-OKAY response."""

    def __init__(self, addr_width: int = 32, data_width: int = 128, beats_width: int = 16):
        self.addr_width, self.data_width = addr_width, data_width
        super().__init__(
            {
                "bus": Out(AxiWriteSignature(addr_width, data_width)),
                "cmd": In(stream.Signature(command_layout(addr_width, beats_width))),
                "data": In(stream.Signature(data_width)),
                "done": Out(1),
                "error": Out(1),
                "clear": In(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        addr = Signal(self.addr_width)
        to_send = Signal.like(self.cmd.payload.beats)
        to_ack = Signal.like(self.cmd.payload.beats)
        aw_done, w_done = Signal(), Signal()
        word = self.data_width // 8
        m.d.comb += [
            self.cmd.ready.eq((to_send == 0) & (to_ack == 0)),
            bus.awid.eq(0),
            bus.awaddr.eq(addr),
            bus.awlen.eq(0),
            bus.awsize.eq(word.bit_length() - 1),
            bus.awburst.eq(INCR),
            bus.wstrb.eq((1 << word) - 1),
            bus.wlast.eq(1),
            bus.wdata.eq(self.data.payload),
            bus.bready.eq(1),
        ]
        sending = (to_send != 0) & self.data.valid
        m.d.comb += [bus.awvalid.eq(sending & ~aw_done), bus.wvalid.eq(sending & ~w_done)]
        aw_ok = aw_done | (bus.awvalid & bus.awready)
        w_ok = w_done | (bus.wvalid & bus.wready)
        m.d.sync += self.done.eq(0)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [addr.eq(self.cmd.payload.addr), to_send.eq(self.cmd.payload.beats)]
            m.d.sync += to_ack.eq(self.cmd.payload.beats)
        with m.Elif(sending & aw_ok & w_ok):  # this word is out: take the next
            m.d.comb += self.data.ready.eq(1)
            m.d.sync += [addr.eq(addr + word), to_send.eq(to_send - 1), aw_done.eq(0), w_done.eq(0)]
        with m.Else():
            m.d.sync += [aw_done.eq(aw_ok), w_done.eq(w_ok)]
        with m.If(bus.bvalid & (to_ack != 0)):
            m.d.sync += to_ack.eq(to_ack - 1)
            with m.If(to_ack == 1):
                m.d.sync += self.done.eq(1)
        with m.If(self.clear):
            m.d.sync += self.error.eq(0)
        with m.Elif(bus.bvalid & (bus.bresp != OKAY)):
            m.d.sync += self.error.eq(1)
        return m


class RomReader(wiring.Component):
    """The on-chip twin of :class:`AxiBurstReader`: the same ``cmd`` ({addr, beats}, addr in
    bytes) and ``data`` ports, words read from a ROM initialised with ``words`` (resident
    weights for small models: the engine's datapath is unchanged, only its word source)."""

    def __init__(self, words: list[int], addr_width: int = 32, data_width: int = 128, beats_width: int = 32):
        if not words:
            raise ValueError("the ROM needs at least one word")
        self.words, self.data_width = list(words), data_width
        self.addr_width, self.beats_width = addr_width, beats_width
        super().__init__(_word_source(addr_width, data_width, beats_width))

    def elaborate(self, platform):
        m = Module()
        m.submodules.rom = rom = Memory(
            shape=self.data_width,
            depth=len(self.words),
            init=self.words,
            attrs={"ram_style": "block", "rom_style": "block"},
        )
        rd = rom.read_port()
        index = Signal(range(len(self.words) + 1))
        remaining = Signal(self.beats_width)
        fetch = (remaining != 0) & (~self.data.valid | self.data.ready)
        shift = (self.data_width // 8).bit_length() - 1
        m.d.comb += [
            self.cmd.ready.eq(remaining == 0),
            rd.addr.eq(index),
            rd.en.eq(fetch),
            self.data.payload.eq(rd.data),
            self.idle.eq((remaining == 0) & ~self.data.valid),
            self.error.eq(0),
        ]
        m.d.sync += self.data.valid.eq(fetch | (self.data.valid & ~self.data.ready))
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [index.eq(self.cmd.payload.addr >> shift), remaining.eq(self.cmd.payload.beats)]
        with m.Elif(fetch):
            m.d.sync += [index.eq(index + 1), remaining.eq(remaining - 1)]
        return m
