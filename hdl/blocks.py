"""Datapath blocks of the ternary matmul accelerator (Amaranth 0.5).

    TernarySelect   a trit code and an activation -> +x, 0 or -x           (combinational)
    AdderTree       P signed inputs -> their sum, one register per level    (latency log2 P)
    PlaneUnit       P lanes x 1 or 2 planes: selects + one adder tree per plane  (latency log2 P)
    GroupAccumulator  chunk sums -> group sums p_k -> p_k a_q,k -> row acc  (latency 4)
    RowUnit         PlaneUnit + GroupAccumulator with aligned side-band tags
    RowArray        the engine's R row units behind two alignment stages       (latency 2 + log2 P + 4)

A term k is one scaled group sum: the trit planes, plus (PT^2-LLM's offset) the plain sum of
the chunk's activations, which the top level computes once for all rows.

Arithmetic is the golden model's (ptqtp.golden); widths grow exactly as needed.
"""

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, enum, wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "TritCode",
    "TernarySelect",
    "AdderTree",
    "PlaneUnit",
    "GroupAccumulator",
    "RowUnit",
    "RowArray",
    "log2_exact",
    "tags_layout",
]


class TritCode(enum.Enum, shape=2):
    """2-bit two's complement trit (docs/SPEC.md section 2); 0b10 never occurs (loaders reject it)."""

    ZERO = 0b00
    POS = 0b01
    NEG = 0b11


def log2_exact(value: int, what: str) -> int:
    """log2 of a power of two >= 2, else ``ValueError`` naming ``what``."""
    if not isinstance(value, int) or value < 2 or value & (value - 1):
        raise ValueError(f"{what} must be a power of two >= 2, not {value!r}")
    return value.bit_length() - 1


def _check_bits(value, what: str, lo: int = 2, hi: int = 64) -> None:
    if not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{what} must be an integer in {lo}..{hi}, not {value!r}")


class TernarySelect(wiring.Component):
    """y = x, 0 or -x for trit code POS, ZERO or NEG; y is one bit wider so -x never overflows."""

    def __init__(self, act_bits: int):
        _check_bits(act_bits, "act_bits")
        self.act_bits = act_bits
        super().__init__({"trit": In(TritCode), "x": In(signed(act_bits)), "y": Out(signed(act_bits + 1))})

    def elaborate(self, platform):
        m = Module()
        # Bit 0 says non-zero, bit 1 negative (0b10 gives 0, as a Switch without that case
        # would). Muxes rather than a Switch: the same logic, but Verilator's C++ has no
        # data-dependent branch per lane (the compiled harness ran 1.x faster).
        code = self.trit.as_value()
        m.d.comb += self.y.eq(Mux(code[0], Mux(code[1], -self.x, self.x), 0))
        return m


class AdderTree(wiring.Component):
    """Sum of ``lanes`` signed inputs; level l registers lanes / 2^l sums of width + l bits."""

    def __init__(self, lanes: int, width: int):
        self.levels = log2_exact(lanes, "lanes")
        _check_bits(width, "width", 1, 128)
        self.lanes, self.width = lanes, width
        super().__init__(
            {
                "inputs": In(data.ArrayLayout(signed(width), lanes)),
                "sum": Out(signed(width + self.levels)),
            }
        )

    @property
    def latency(self) -> int:
        return self.levels

    def elaborate(self, platform):
        m = Module()
        level = [self.inputs[i] for i in range(self.lanes)]
        for depth in range(1, self.levels + 1):
            nxt = []
            for i in range(0, len(level), 2):
                s = Signal(signed(self.width + depth), name=f"l{depth}_{i // 2}")
                m.d.sync += s.eq(level[i] + level[i + 1])
                nxt.append(s)
            level = nxt
        m.d.comb += self.sum.eq(level[0])
        return m


def _check_planes(planes) -> None:
    if planes not in (1, 2):
        raise ValueError(f"planes must be 1 or 2, not {planes!r}")


class PlaneUnit(wiring.Component):
    """The planes of one row over one chunk of P lanes: sum_i T_k[i] x[i] for each plane k."""

    def __init__(self, lanes: int, act_bits: int, planes: int = 2):
        self.levels = log2_exact(lanes, "lanes")
        _check_bits(act_bits, "act_bits")
        _check_planes(planes)
        self.lanes, self.act_bits, self.planes = lanes, act_bits, planes
        super().__init__(
            {
                "codes": In(data.ArrayLayout(data.ArrayLayout(TritCode, lanes), planes)),
                "x": In(data.ArrayLayout(signed(act_bits), lanes)),
                "sums": Out(data.ArrayLayout(signed(act_bits + 1 + self.levels), planes)),
            }
        )

    @property
    def latency(self) -> int:
        return self.levels

    def elaborate(self, platform):
        m = Module()
        for k in range(self.planes):
            m.submodules[f"tree{k}"] = tree = AdderTree(self.lanes, self.act_bits + 1)
            for i in range(self.lanes):
                m.submodules[f"sel{k}_{i}"] = sel = TernarySelect(self.act_bits)
                m.d.comb += [sel.trit.eq(self.codes[k][i]), sel.x.eq(self.x[i]), tree.inputs[i].eq(sel.y)]
            m.d.comb += self.sums[k].eq(tree.sum)
        return m


def tags_layout(vectors: int = 1) -> data.StructLayout:
    """Side-band flags that travel with a chunk through the pipeline; ``vec`` says which of
    the ``vectors`` resident input vectors the chunk belongs to."""
    return data.StructLayout(
        {
            "valid": 1,
            "group_first": 1,  # first chunk of a group: restart the partial sums
            "group_last": 1,  # last chunk of a group: scale and accumulate
            "row_first": 1,  # the group is the row's first: restart the accumulator
            "row_last": 1,  # the group is the row's last: the accumulator is the result
            "vec": max(1, (vectors - 1).bit_length()),
        }
    )


class GroupAccumulator(wiring.Component):
    """acc = sum_g sum_k p[g, k] a_q[g, k] from chunk sums, the golden accumulator.

    With ``vectors`` > 1 the partial sums and accumulators are kept per resident vector
    (chunks of different vectors interleave; ``tags.vec`` selects), and ``vec`` says whose
    result ``done`` announces. Four registered stages, so no cycle has more than one adder or one multiplier on its
    path (measured: fusing the group add into the multiply capped ECP5 Fmax at 92 MHz):
    1. p_k += chunk sum (restart on a group's first chunk)
    2. on a group's last chunk: prod_k = p_k * a_q,k
    3. both = sum_k prod_k (``terms`` = 1, 2 or 3 products)
    4. acc += both (restart on the row's first group); ``done`` pulses with the row's result
    """

    latency = 4

    def __init__(
        self, sum_bits: int, group_chunks: int, scale_bits: int, acc_bits: int, terms: int = 2, vectors: int = 1
    ):
        _check_bits(scale_bits, "scale_bits", 2, 32)
        if not isinstance(vectors, int) or vectors < 1:
            raise ValueError(f"vectors must be a positive integer, not {vectors!r}")
        _check_bits(acc_bits, "acc_bits", 2, 64)
        if not isinstance(group_chunks, int) or group_chunks < 1:
            raise ValueError(f"group_chunks must be a positive integer, not {group_chunks!r}")
        if terms not in (1, 2, 3):
            raise ValueError(f"terms must be 1, 2 or 3, not {terms!r}")
        self.p_bits = sum_bits + (group_chunks - 1).bit_length()
        self.prod_bits = self.p_bits + scale_bits
        self.acc_bits, self.terms, self.vectors = acc_bits, terms, vectors
        self.tags_layout = tags_layout(vectors)
        super().__init__(
            {
                "tags": In(self.tags_layout),
                "sums": In(data.ArrayLayout(signed(sum_bits), terms)),
                "scales": In(data.ArrayLayout(signed(scale_bits), terms)),
                "done": Out(1),
                "vec": Out(self.tags_layout["vec"].shape),
                "acc": Out(signed(acc_bits)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        t1, t2, t3 = (Signal(self.tags_layout, name=f"t{i}") for i in (1, 2, 3))
        scales1 = Signal.like(self.scales)
        M = self.vectors
        p = [Array(Signal(signed(self.p_bits), name=f"p{k}_{v}") for v in range(M)) for k in range(self.terms)]
        prod = [Signal(signed(self.prod_bits), name=f"prod{k}") for k in range(self.terms)]
        both = Signal(signed(self.prod_bits + 2))
        acc = Array(Signal(signed(self.acc_bits), name=f"acc_{v}") for v in range(M))
        vec = self.tags.vec if M > 1 else 0
        # 1: group sums; the updated sum is also registered on its own, so the multiplier of
        # stage 2 reads a flip-flop, not the per-vector mux (measured: the mux in front of the
        # multiplier held the engine at 86 MHz on ECP5)
        m.d.sync += [t1.eq(self.tags), scales1.eq(self.scales)]
        g = [Signal(signed(self.p_bits), name=f"g{k}") for k in range(self.terms)]
        for k in range(self.terms):
            updated = Mux(self.tags.group_first, 0, p[k][vec]) + self.sums[k]
            m.d.sync += g[k].eq(updated)
            with m.If(self.tags.valid):
                m.d.sync += p[k][vec].eq(updated)
        # 2: scale a finished group
        m.d.sync += t2.eq(0)
        with m.If(t1.valid & t1.group_last):
            m.d.sync += [t2.eq(t1)] + [prod[k].eq(g[k] * scales1[k]) for k in range(self.terms)]
        # 3: all terms
        total = prod[0]
        for k in range(1, self.terms):
            total = total + prod[k]
        m.d.sync += [t3.eq(t2), both.eq(total)]
        # 4: the row
        vec3 = t3.vec if M > 1 else 0
        with m.If(t3.valid):
            with m.If(t3.row_first):
                m.d.sync += acc[vec3].eq(both)
            with m.Else():
                m.d.sync += acc[vec3].eq(acc[vec3] + both)
        m.d.sync += [self.done.eq(t3.valid & t3.row_last), self.vec.eq(t3.vec)]
        m.d.comb += self.acc.eq(acc[self.vec] if M > 1 else acc[0])
        return m


class RowUnit(wiring.Component):
    """One row per pass: chunk codes and activations in, the row's accumulator out.

    ``tags`` and ``scales`` (one per plane, then the offset's) enter with the chunk and are
    delayed to meet the tree's output. With ``offset``, ``xsum`` is the chunk's plain
    activation sum, already delayed by the tree's latency (computed once for all rows).
    Latency log2 P + 4 from a chunk's input to ``done``.
    """

    def __init__(
        self,
        lanes: int,
        act_bits: int,
        scale_bits: int,
        group_size: int,
        acc_bits: int,
        planes: int = 2,
        offset: bool = False,
        vectors: int = 1,
    ):
        levels = log2_exact(lanes, "lanes")
        if not isinstance(group_size, int) or group_size % lanes:
            raise ValueError(f"lanes P={lanes} must divide the group size G={group_size!r}")
        _check_planes(planes)
        self.lanes, self.act_bits, self.scale_bits = lanes, act_bits, scale_bits
        self.group_chunks, self.acc_bits, self.levels = group_size // lanes, acc_bits, levels
        self.planes, self.offset, self.terms = planes, bool(offset), planes + bool(offset)
        self.vectors, self.tags_layout = vectors, tags_layout(vectors)
        ports = {
            "codes": In(data.ArrayLayout(data.ArrayLayout(TritCode, lanes), planes)),
            "x": In(data.ArrayLayout(signed(act_bits), lanes)),
            "scales": In(data.ArrayLayout(signed(scale_bits), self.terms)),
            "tags": In(self.tags_layout),
            "done": Out(1),
            "vec": Out(self.tags_layout["vec"].shape),
            "acc": Out(signed(acc_bits)),
        }
        if offset:
            ports["xsum"] = In(signed(act_bits + levels))
        super().__init__(ports)

    @property
    def latency(self) -> int:
        return self.levels + GroupAccumulator.latency

    def elaborate(self, platform):
        m = Module()
        m.submodules.planes = planes = PlaneUnit(self.lanes, self.act_bits, self.planes)
        m.submodules.accum = accum = GroupAccumulator(
            self.act_bits + 1 + self.levels, self.group_chunks, self.scale_bits, self.acc_bits, self.terms, self.vectors
        )
        m.d.comb += [planes.codes.eq(self.codes), planes.x.eq(self.x)]
        tags, scales = self.tags, self.scales
        for i in range(self.levels):  # delay side-band by the tree's latency
            t, s = Signal(self.tags_layout, name=f"tags_d{i}"), Signal.like(self.scales, name=f"scales_d{i}")
            m.d.sync += [t.eq(tags), s.eq(scales)]
            tags, scales = t, s
        m.d.comb += [
            accum.tags.eq(tags),
            accum.scales.eq(scales),
            self.done.eq(accum.done),
            self.vec.eq(accum.vec),
            self.acc.eq(accum.acc),
        ]
        m.d.comb += [accum.sums[k].eq(planes.sums[k]) for k in range(self.planes)]
        if self.offset:
            m.d.comb += accum.sums[self.planes].eq(self.xsum)
        return m


class RowArray(wiring.Component):
    """The engine's R row units and, with offsets, the shared activation-sum tree.

    In the issue cycle: ``tags``, the weight ``record`` and the group's ``scales`` record
    (stream layout, docs/SPEC.md 6.3); ``x``, the chunk's activations, a cycle later (the
    banks' read latency). Two alignment stages, then the units; ``done`` pulses with the
    block's R accumulators in ``accs`` (row unit r at bits r ACC).
    """

    def __init__(self, params):
        self.params = p = params
        L = p.layout
        super().__init__(
            {
                "tags": In(tags_layout(p.vectors)),
                "record": In(L.record_bits),
                "scales": In(L.scale_record_bits),
                "x": In(p.lanes * p.act_bits),
                "done": Out(1),
                "accs": Out(p.rows * p.acc_bits),
            }
        )

    def elaborate(self, platform):
        m = Module()
        p = self.params
        L, P, R = p.layout, p.lanes, p.rows
        t1, t2 = Signal.like(self.tags), Signal.like(self.tags)
        w1, w2 = Signal.like(self.record), Signal.like(self.record)
        s1, s2 = Signal.like(self.scales), Signal.like(self.scales)
        x2 = Signal.like(self.x)
        m.d.sync += [
            t1.eq(self.tags),
            t2.eq(t1),
            w1.eq(self.record),
            w2.eq(w1),
            s1.eq(self.scales),
            s2.eq(s1),
            x2.eq(self.x),
        ]
        units = []
        for r in range(R):
            m.submodules[f"row{r}"] = unit = RowUnit(
                P, p.act_bits, p.scale_bits, p.group_size, p.acc_bits, p.planes, p.offset, p.vectors
            )
            codes = Cat(*(w2[k * L.unit_bits + r * 2 * P :][: 2 * P] for k in range(p.planes)))
            scales = Cat(*(s2[(k * R + r) * p.scale_bits :][: p.scale_bits] for k in range(p.terms)))
            m.d.comb += [
                unit.codes.as_value().eq(codes),
                unit.scales.as_value().eq(scales),
                unit.x.as_value().eq(x2),
                unit.tags.eq(t2),
            ]
            units.append(unit)
        if p.offset:  # the chunk's activation sum, once for all rows, aligned with the row units' trees
            m.submodules.xsum = xsum = AdderTree(P, p.act_bits)
            m.d.comb += xsum.inputs.as_value().eq(x2)
            m.d.comb += [u.xsum.eq(xsum.sum) for u in units]
        m.d.comb += [self.accs.eq(Cat(*(u.acc for u in units))), self.done.eq(units[0].done)]
        return m
