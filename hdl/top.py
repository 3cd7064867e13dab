"""Top level: the ternary matmul accelerator for one layer (docs/SPEC.md section 5).

    x stream (P activations a beat) --> activation buffer --+
                                                             v
    weight + scale ROMs per row unit --> R RowUnits (P lanes x 1 or 2 planes each) --> results --> y stream

With ``offset`` (PT^2-LLM: one plane plus a per-group offset m), one adder tree shared by all
row units sums each chunk's activations, and every row scales that group sum by its m_q, the
golden model's offset term.

Per vector: LOAD d_pad/P beats into the activation buffer; then for each block of R rows,
COMPUTE streams the d_pad/P chunks through the R row units (R x P trits per plane per
cycle), DRAIN waits for the pipeline, EMIT sends the block's accumulators, one row a beat,
rows in order. :func:`cycles_per_vector` is the exact cycle count with an always-valid
input and an always-ready output; stalls on either stream only add cycles.

Inputs must lie in [-Q, Q] (the golden activation quantizer's range); outputs are the
golden model's ``acc`` bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ptqtp.golden import GoldenLayer, IntConfig, acc_width

from .blocks import AdderTree, GroupAccumulator, RowUnit, Tags, log2_exact

__all__ = ["AccelParams", "TritMatmul", "cycles_per_vector"]


@dataclass(frozen=True)
class AccelParams:
    """Accelerator parameters; checked in ``__post_init__`` with messages naming the field."""

    n: int
    d_pad: int
    group_size: int = 128
    lanes: int = 64
    rows: int = 1
    act_bits: int = 8
    scale_bits: int = 16
    acc_bits: int | None = None  # None: the golden width rule
    planes: int = 2
    offset: bool = False

    def __post_init__(self):
        for name in ("n", "d_pad", "group_size", "lanes", "rows"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        log2_exact(self.lanes, "lanes P")
        if self.group_size % self.lanes:
            raise ValueError(f"lanes P={self.lanes} must divide the group size G={self.group_size}")
        if self.d_pad % self.group_size:
            raise ValueError(f"d_pad={self.d_pad} must be a multiple of G={self.group_size}")
        if self.rows > self.n:
            raise ValueError(f"rows R={self.rows} exceeds the layer's {self.n} rows")
        IntConfig(self.act_bits, self.scale_bits)  # the datapath's A and S, checked where they are defined
        if self.planes not in (1, 2) or not isinstance(self.offset, bool):
            raise ValueError(f"planes must be 1 or 2 and offset a bool, not {self.planes!r}, {self.offset!r}")
        need = acc_width(self.d_pad // self.group_size, self.group_size, self.act_bits, self.scale_bits, self.terms)
        if self.acc_bits is None:
            object.__setattr__(self, "acc_bits", need)
        elif not isinstance(self.acc_bits, int) or self.acc_bits < need:
            raise ValueError(f"acc_bits must be at least {need} (the golden width rule), not {self.acc_bits!r}")
        if self.acc_bits > 64:
            raise ValueError(f"acc_bits {self.acc_bits} exceeds 64")

    @classmethod
    def of(cls, golden: GoldenLayer, lanes: int, rows: int = 1) -> AccelParams:
        """The parameters that run ``golden`` with P = ``lanes`` and R = ``rows``."""
        return cls(n=golden.n, d_pad=golden.d_pad, group_size=golden.group_size, lanes=lanes, rows=rows,
                   act_bits=golden.config.act_bits, scale_bits=golden.config.scale_bits, acc_bits=golden.acc_bits,
                   planes=golden.planes, offset=golden.m_q is not None)

    @property
    def config(self) -> IntConfig:
        return IntConfig(self.act_bits, self.scale_bits)

    @property
    def terms(self) -> int:
        """Scaled group sums per group: the planes, plus the offset's."""
        return self.planes + self.offset

    @property
    def chunks(self) -> int:
        return self.d_pad // self.lanes

    @property
    def blocks(self) -> int:
        return -(-self.n // self.rows)

    @property
    def levels(self) -> int:
        return log2_exact(self.lanes, "lanes P")


def cycles_per_vector(p: AccelParams) -> int:
    """Clock cycles from one vector's first accepted beat to the next's, with no stalls.

    LOAD d_pad/P, then per block of R rows: COMPUTE d_pad/P, DRAIN 2 + log2 P + 4 (the
    memory read and its output register, the adder tree's levels, the group accumulator's
    stages), EMIT one cycle per row.
    """
    drain = 2 + p.levels + GroupAccumulator.latency
    return p.chunks + p.blocks * (p.chunks + drain) + p.n


class TritMatmul(wiring.Component):
    """The accelerator for one layer: trits int8 [planes, n, d_pad], a_q [planes, n, ng] and
    optional offsets m_q [n, ng] in ROMs.

    Parameters
    ----------
    trits, a_q, m_q: the layer (a :class:`ptqtp.golden.GoldenLayer`'s, see :meth:`from_golden`).
    params: :class:`AccelParams`; n, d_pad, G, planes and offset must match the arrays.

    Raises
    ------
    ValueError: shapes that disagree with ``params``, trits outside {-1, 0, 1}, or a_q / m_q
        outside S bits.
    """

    def __init__(self, trits: np.ndarray, a_q: np.ndarray, params: AccelParams, m_q: np.ndarray | None = None):
        trits, a_q = np.asarray(trits), np.asarray(a_q, dtype=np.int64)
        p = params
        ng = p.d_pad // p.group_size
        if trits.shape != (p.planes, p.n, p.d_pad) or a_q.shape != (p.planes, p.n, ng):
            raise ValueError(f"trits {trits.shape} / a_q {a_q.shape} do not match planes={p.planes}, n={p.n}, "
                             f"d_pad={p.d_pad}, G={p.group_size}")
        if (m_q is not None) != p.offset or (m_q is not None and np.shape(m_q) != (p.n, ng)):
            raise ValueError(f"offset={p.offset} needs m_q of shape {(p.n, ng)}, got "
                             f"{None if m_q is None else np.shape(m_q)}")
        if not np.isin(trits, (-1, 0, 1)).all():
            raise ValueError("trits must be in {-1, 0, 1}")
        scales = a_q if m_q is None else np.concatenate([a_q, np.asarray(m_q, dtype=np.int64)[None]])
        lim = 2 ** (p.scale_bits - 1)
        if scales.min(initial=0) < -lim or scales.max(initial=0) >= lim:
            raise ValueError(f"a_q and m_q must fit {p.scale_bits} signed bits")
        self.params = p
        self._weight_words, self._scale_words = _rom_words(trits, scales, p)
        super().__init__({
            "x": In(stream.Signature(data.ArrayLayout(signed(p.act_bits), p.lanes))),
            "y": Out(stream.Signature(signed(p.acc_bits))),
        })

    @classmethod
    def from_golden(cls, golden: GoldenLayer, lanes: int, rows: int = 1) -> TritMatmul:
        """The accelerator for a golden layer (its A, S, G, ACC, planes and offset)."""
        return cls(golden.trits, golden.a_q, AccelParams.of(golden, lanes, rows), golden.m_q)

    def elaborate(self, platform):
        p = self.params
        m = Module()
        ng, cpg = p.d_pad // p.group_size, p.group_size // p.lanes
        x_layout = data.ArrayLayout(signed(p.act_bits), p.lanes)

        m.submodules.act = act = Memory(shape=unsigned(x_layout.size), depth=p.chunks, init=[])
        act_w, act_r = act.write_port(), act.read_port()
        units, w_ports, s_ports = [], [], []
        for r in range(p.rows):
            # ROMs in block RAM: left to Yosys, the small scale ROMs at R = 4 became flip-flops
            # and wide muxes (thousands of cells) that crashed its technology mapper.
            m.submodules[f"wrom{r}"] = wrom = Memory(shape=unsigned(2 * p.planes * p.lanes), depth=p.blocks * p.chunks,
                                                      init=self._weight_words[r],
                                                      attrs={"ram_style": "block", "rom_style": "block"})
            m.submodules[f"srom{r}"] = srom = Memory(shape=unsigned(p.terms * p.scale_bits), depth=p.blocks * ng,
                                                      init=self._scale_words[r],
                                                      attrs={"ram_style": "block", "rom_style": "block"})
            m.submodules[f"row{r}"] = unit = RowUnit(p.lanes, p.act_bits, p.scale_bits, p.group_size, p.acc_bits,
                                                     p.planes, p.offset)
            units.append(unit)
            w_ports.append(wrom.read_port())
            s_ports.append(srom.read_port())

        load_ptr = Signal(range(p.chunks))
        blk = Signal(range(p.blocks))
        w_base = Signal(range(p.blocks * p.chunks))  # blk * chunks, kept as a running sum (no multiplier)
        s_base = Signal(range(p.blocks * ng))
        chunk = Signal(range(p.chunks))
        group = Signal(range(ng))
        in_group = Signal(range(cpg))
        emit = Signal(range(p.rows))  # row within the block being emitted
        out_row = Signal(range(p.n))  # global row being emitted
        issue = Signal(Tags)
        tags_q = Signal(Tags)  # aligned with the ROM and buffer read data (1-cycle reads)
        # One register after every memory read: ECP5 block RAM clock-to-out is 5.6 ns, and
        # feeding it straight into the selects and first adders capped Fmax at 92 MHz.
        tags_r = Signal(Tags)
        x_r = Signal(x_layout.size)
        # The block's results shift out through a chain (no R-way multiplexer).
        results = [Signal(signed(p.acc_bits), name=f"result{r}") for r in range(p.rows)]

        m.d.sync += [tags_q.eq(issue), tags_r.eq(tags_q), x_r.eq(act_r.data)]
        m.d.comb += [act_r.addr.eq(chunk), act_w.addr.eq(load_ptr), act_w.data.eq(self.x.payload.as_value())]
        if p.offset:  # the chunk's activation sum, once for all rows, aligned with the row units' trees
            m.submodules.xsum = xsum = AdderTree(p.lanes, p.act_bits)
            m.d.comb += xsum.inputs.as_value().eq(x_r)
            m.d.comb += [unit.xsum.eq(xsum.sum) for unit in units]
        for r, unit in enumerate(units):
            m.d.comb += [w_ports[r].addr.eq(w_base + chunk), s_ports[r].addr.eq(s_base + group)]
            m.d.sync += [unit.codes.as_value().eq(w_ports[r].data), unit.scales.as_value().eq(s_ports[r].data)]
            m.d.comb += [unit.x.as_value().eq(x_r), unit.tags.eq(tags_r)]

        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += [self.x.ready.eq(1), act_w.en.eq(self.x.valid)]
                with m.If(self.x.valid):
                    m.d.sync += load_ptr.eq(load_ptr + 1)
                    with m.If(load_ptr == p.chunks - 1):
                        m.d.sync += [load_ptr.eq(0), blk.eq(0), w_base.eq(0), s_base.eq(0), chunk.eq(0), group.eq(0),
                                     in_group.eq(0), out_row.eq(0)]
                        m.next = "COMPUTE"
            with m.State("COMPUTE"):
                m.d.comb += [
                    issue.valid.eq(1),
                    issue.group_first.eq(in_group == 0),
                    issue.group_last.eq(in_group == cpg - 1),
                    issue.row_first.eq(group == 0),
                    issue.row_last.eq(group == ng - 1),
                ]
                m.d.sync += chunk.eq(chunk + 1)
                with m.If(in_group == cpg - 1):
                    m.d.sync += [in_group.eq(0), group.eq(group + 1)]
                with m.Else():
                    m.d.sync += in_group.eq(in_group + 1)
                with m.If(chunk == p.chunks - 1):
                    m.d.sync += [chunk.eq(0), group.eq(0), in_group.eq(0)]
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(units[0].done):
                    m.d.sync += [results[r].eq(u.acc) for r, u in enumerate(units)]
                    m.d.sync += emit.eq(0)
                    m.next = "EMIT"
            with m.State("EMIT"):
                m.d.comb += [self.y.valid.eq(1), self.y.payload.eq(results[0])]
                last_row = (emit == p.rows - 1) | (out_row == p.n - 1)
                with m.If(self.y.ready):
                    m.d.sync += [emit.eq(emit + 1), out_row.eq(out_row + 1)]
                    m.d.sync += [results[r].eq(results[r + 1]) for r in range(p.rows - 1)]
                    with m.If(last_row):
                        with m.If(blk == p.blocks - 1):
                            m.next = "LOAD"
                        with m.Else():
                            m.d.sync += [blk.eq(blk + 1), w_base.eq(w_base + p.chunks), s_base.eq(s_base + ng)]
                            m.next = "COMPUTE"
        return m


def _rom_words(trits: np.ndarray, scales: np.ndarray, p: AccelParams):
    """Per row unit r (rows r, r + R, ...): weight words (plane k codes at bits 2Pk.., trit i
    of the chunk at bits 2i) and scale words (term k = a_q per plane, then m_q, at bits Sk..,
    two's complement). ``scales`` is [terms, n, ng]."""
    codes = (trits & 0b11).astype(np.uint8)  # 2-bit two's complement: -1 -> 0b11
    n_rows = p.blocks * p.rows
    padded = np.zeros((p.planes, n_rows, p.d_pad), np.uint8)
    padded[:, : p.n] = codes
    fixed = np.zeros((p.terms, n_rows, scales.shape[2]), np.int64)
    fixed[:, : p.n] = scales & ((1 << p.scale_bits) - 1)
    weights_per_unit, scales_per_unit = [], []
    shifts = [2 * i for i in range(p.lanes)]
    for r in range(p.rows):
        rows = range(r, n_rows, p.rows)
        words = []
        for row in rows:
            for c in range(p.chunks):
                lanes = padded[:, row, c * p.lanes : (c + 1) * p.lanes]
                words.append(sum(sum(int(v) << s for v, s in zip(lanes[k], shifts)) << (2 * p.lanes * k)
                                 for k in range(p.planes)))
        weights_per_unit.append(words)
        scales_per_unit.append([sum(int(fixed[k, row, g]) << (p.scale_bits * k) for k in range(p.terms))
                                for row in rows for g in range(fixed.shape[2])])
    return weights_per_unit, scales_per_unit
