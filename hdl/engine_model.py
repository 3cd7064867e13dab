"""The streaming engine's parameters, register map and cycle model, in plain Python (no
Amaranth), so planning tools and host drivers use them without the HDL toolchain.

Cycle model (docs/SPEC.md section 6). Per layer the compute core issues exactly
``blocks * ng * (G/P) * m`` chunk-cycles (``EngineParams.issue_cycles``; every lane busy in
each). The DMA delivers at most one DW-bit word per cycle, so a layer needs at least its
region's words (``StreamLayout.layer_beats``: ``s_beats + wg_beats`` a group in 2-bit
packing, fewer in base-3, whose decoder also takes a word a cycle) against its compute cycles:

    compute-bound   when issue_cycles >= layer_beats and the memory supplies a word a cycle
    stream-bound    otherwise: the layer takes ``layer_beats`` cycles

With a memory of bandwidth B bytes per cycle and latency L cycles, the documented bound is

    max(issue_cycles, layer_bytes / min(B, DW / 8)) + L + FILL <= cycles

and the RTL stays within ``+ blocks * ng`` cycles of that figure (one bubble per group at
most, where a scale record and the next weight word meet); ``tests/test_engine.py`` checks both
sides under throttled memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from ptqtp.formats.stream_layout import MAX_PLANES, StreamLayout
from ptqtp.golden import IntConfig, acc_width

from .contract import ENGINE_ID, LAYOUT, PARAMS, Reg

__all__ = ["EngineParams", "Reg", "ENGINE_ID", "LayerRun"]


@dataclass(frozen=True)
class EngineParams:
    """What the engine is elaborated with; every layer-specific value comes at run time.

    Parameters
    ----------
    lanes: P, trits per plane per row unit per cycle (power of two, divides G).
    rows: R, row units (power of two).
    planes: trit planes the datapath carries (1 or 2); a one-plane layer runs on a two-plane
        engine with a zero second plane.
    max_planes: the most planes a layer may have (1..4); a layer of K > planes planes runs in
        ceil(K / planes) passes over the same activations (``StreamLayout``'s wide layer), so
        cycles and bytes scale with K and the datapath stays the same; the accumulators are
        sized for max_planes.
    offset: whether the datapath has PT^2-LLM's offset term.
    act_bits, scale_bits: A and S.
    group_size: G.
    max_d: the widest layer input (d_pad up to this, rounded up to G).
    vectors: M, input vectors held at once (power of two); every weight word serves them all.
    data_width: DW, the AXI data width in bits.
    addr_width: AXI address bits.
    burst, outstanding: the DMA's beats per burst and bursts in flight.
    packing: the weight stream's trit packing, "2bit" or "base3" (a base-3 decoder in front of
        the core; ``ptqtp.formats.stream_layout``).
    """

    lanes: int = 16
    rows: int = 4
    planes: int = 2
    offset: bool = False
    max_planes: int = 4
    act_bits: int = 8
    scale_bits: int = 16
    group_size: int = 128
    max_d: int = 1536
    vectors: int = 4
    data_width: int = 512
    addr_width: int = 32
    burst: int = 64
    outstanding: int = 4
    packing: str = "2bit"

    def __post_init__(self):
        IntConfig(self.act_bits, self.scale_bits)
        _ = self.layout  # validates P, R, planes, offset, G, S, DW
        for name in ("vectors", "max_d", "burst", "outstanding"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if not isinstance(self.max_planes, int) or not self.planes <= self.max_planes <= MAX_PLANES:
            raise ValueError(f"max_planes must be in {self.planes}..{MAX_PLANES}, not {self.max_planes!r}")
        if self.vectors & (self.vectors - 1):
            raise ValueError(f"vectors M must be a power of two, not {self.vectors!r}")
        if not 16 <= self.addr_width <= 64:
            raise ValueError(f"addr_width must be in 16..64, not {self.addr_width!r}")
        if self.acc_bits > 64:
            raise ValueError(f"ACC = {self.acc_bits} bits exceeds 64; lower max_d, A or S")

    @property
    def layout(self) -> StreamLayout:
        return StreamLayout(
            self.lanes,
            self.rows,
            self.planes,
            self.offset,
            self.group_size,
            self.scale_bits,
            self.data_width,
            self.packing,
        )

    @property
    def terms(self) -> int:
        return self.planes + self.offset

    @property
    def max_passes(self) -> int:
        """Passes of a max_planes layer: ceil(max_planes / planes)."""
        return self.layout.passes(self.max_planes)

    @property
    def max_d_pad(self) -> int:
        return -(-self.max_d // self.group_size) * self.group_size

    @property
    def acc_bits(self) -> int:
        # a layer of max_passes passes sums max_passes * planes planes' terms (offsets once)
        terms = self.max_passes * self.planes + self.offset
        return acc_width(self.max_d_pad // self.group_size, self.group_size, self.act_bits, self.scale_bits, terms)

    @property
    def chunk_stride(self) -> int:
        """Activation words reserved per vector: max d_pad / P rounded up to a power of two."""
        chunks = self.max_d_pad // self.lanes
        return 1 << (chunks - 1).bit_length()

    @property
    def tid_bits(self) -> int:
        """Width of a result beat's ``tid`` (the vector of the batch; at least one bit)."""
        return max(1, (self.vectors - 1).bit_length())

    @property
    def out_bits(self) -> int:
        """Width of a result beat: ACC rounded up to whole bytes, sign-extended."""
        return -(-self.acc_bits // 8) * 8

    @property
    def burst_bytes(self) -> int:
        return self.burst * self.data_width // 8

    def params_word(self) -> int:
        """The PARAMS register (``ptqtp.hdl.contract.PARAMS``)."""
        return PARAMS.pack(lanes=self.lanes, rows=self.rows, vectors=self.vectors, word_bytes=self.data_width // 8)

    def layout_word(self) -> int:
        """The LAYOUT register: what a host checks before pairing a model image with the engine."""
        return LAYOUT.pack(
            planes=self.planes,
            offset=self.offset,
            base3=self.packing == "base3",
            max_planes=self.max_planes,
            scale_bits=self.scale_bits,
            group_size=self.group_size,
        )

    def check_layer(self, n: int, d_pad: int, planes: int, offset: bool, m: int = 1) -> None:
        """``ValueError`` unless the layer (and batch of ``m`` vectors) runs on this engine."""
        self.layout.check_layer(planes, offset)
        if planes > self.max_planes:
            raise ValueError(
                f"a layer with {planes} planes does not run on an engine with max_planes {self.max_planes}"
                f" ({self.planes} a pass)"
            )
        if d_pad % self.group_size or not 0 < d_pad <= self.max_d_pad or n < 1:
            raise ValueError(
                f"layer n={n}, d_pad={d_pad} does not fit the engine (G={self.group_size}, max d_pad {self.max_d_pad})"
            )
        if not 1 <= m <= self.vectors:
            raise ValueError(f"batch m={m} must be in 1..{self.vectors}")

    # ------------------------------------------------------------------ cycle model

    def run(self, n: int, d_pad: int, m: int = 1, planes: int | None = None) -> LayerRun:
        return LayerRun(self, n, d_pad, m, planes or self.planes)


@dataclass(frozen=True)
class LayerRun:
    """The cycle model of one layer run of ``m`` vectors (see the module doc)."""

    params: EngineParams
    n: int
    d_pad: int
    m: int = 1
    planes: int = 2  # the layer's; more than the engine's take passes

    @property
    def passes(self) -> int:
        return self.params.layout.passes(self.planes)

    @property
    def groups(self) -> int:
        """Steps the core takes: blocks x groups x passes."""
        return self.params.layout.blocks(self.n) * (self.d_pad // self.params.group_size) * self.passes

    @property
    def issue_cycles(self) -> int:
        """Chunk-cycles the core issues: every lane of every row unit busy."""
        return self.groups * self.params.layout.chunks_per_group * self.m

    @property
    def stream_cycles(self) -> int:
        """Cycles the DMA needs at one word per cycle."""
        return self.params.layout.layer_beats(self.n, self.d_pad, self.planes)

    @property
    def beats(self) -> int:
        return self.stream_cycles

    @property
    def layer_bytes(self) -> int:
        return self.params.layout.layer_bytes(self.n, self.d_pad, self.planes)

    def bound(self, bytes_per_cycle: float | None = None) -> str:
        """ "compute" or "bandwidth": which side sets the layer's time at that bandwidth."""
        return "compute" if self.issue_cycles >= self.memory_cycles(bytes_per_cycle) else "bandwidth"

    def memory_cycles(self, bytes_per_cycle: float | None = None) -> float:
        """Cycles to read the region at ``bytes_per_cycle`` (default and at most DW / 8)."""
        bus = self.params.data_width / 8
        rate = bus if bytes_per_cycle is None else min(bus, bytes_per_cycle)
        return self.layer_bytes / rate

    def cycles(self, bytes_per_cycle: float | None = None, latency: int = 0) -> float:
        """Lower bound of the run's cycles (the module doc's formula, FILL omitted)."""
        return max(self.issue_cycles, self.memory_cycles(bytes_per_cycle)) + latency

    def slack(self) -> int:
        """How far above :meth:`cycles` the RTL may land: one bubble per group plus pipeline fill."""
        return self.groups + FILL


#: Pipeline fill of one run: descriptor latch, record unpacking, two alignment stages, the
#: adder tree and the group accumulator, the output buffer and serializer (measured bound).
FILL = 64
