"""The host-to-RTL contract of the engine, defined once: register addresses, their bit
fields, and the names the simulation benches read from the environment.

Plain Python (no Amaranth): the RTL (``ptqtp.hdl.control``), the cocotb bench, the runtime
driver and docs/SPEC.md section 6.2 all take it from here; ``tests/test_contract.py`` checks
that the spec's register table is :func:`register_table`'s text.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "ENGINE_ID",
    "Reg",
    "Field",
    "BitFields",
    "PARAMS",
    "LAYOUT",
    "STATUS",
    "ERRORS",
    "CTRL",
    "REGISTERS",
    "BenchEnv",
    "register_table",
    "descriptor_writes",
]

ENGINE_ID = 0x50545145  # "PTQE"


class Reg(enum.IntEnum):
    """Word addresses (byte address / 4) of the AXI4-Lite registers."""

    ID = 0x00
    PARAMS = 0x01
    CTRL = 0x02
    STATUS = 0x03
    N = 0x04
    CHUNKS = 0x05
    M = 0x06
    ADDR_LO = 0x07
    ADDR_HI = 0x08
    BEATS = 0x09
    CYCLES = 0x0A
    ISSUED = 0x0B
    WAIT_W = 0x0C
    WAIT_X = 0x0D
    WAIT_Y = 0x0E
    ERRORS = 0x0F
    LAYOUT = 0x10
    PASSES = 0x11


@dataclass(frozen=True)
class Field:
    """``width`` bits of a register from bit ``lsb``."""

    name: str
    lsb: int
    width: int
    meaning: str

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb


class BitFields:
    """The bit fields of one 32-bit register: pack, unpack and describe them."""

    def __init__(self, *fields: Field):
        self.fields = {f.name: f for f in fields}
        taken = 0
        for f in fields:
            if f.lsb < 0 or f.width < 1 or f.lsb + f.width > 32 or taken & f.mask:
                raise ValueError(f"field {f.name} overlaps another or leaves the 32-bit word")
            taken |= f.mask

    def __getitem__(self, name: str) -> Field:
        return self.fields[name]

    def __iter__(self):
        return iter(self.fields.values())

    def pack(self, **values: int) -> int:
        word = 0
        for name, value in values.items():
            f = self.fields[name]
            if not 0 <= int(value) < 1 << f.width:
                raise ValueError(f"{name}={value} does not fit {f.width} bits")
            word |= int(value) << f.lsb
        return word

    def unpack(self, word: int) -> dict[str, int]:
        return {f.name: (word & f.mask) >> f.lsb for f in self}

    def describe(self) -> str:
        def bits(f: Field) -> str:
            return f"bit {f.lsb}" if f.width == 1 else f"bits {f.lsb}..{f.lsb + f.width - 1}"

        return "; ".join(f"{bits(f)} {f.meaning}" for f in self)


PARAMS = BitFields(
    Field("lanes", 0, 8, "P"),
    Field("rows", 8, 8, "R"),
    Field("vectors", 16, 8, "M"),
    Field("word_bytes", 24, 8, "DW / 8"),
)
LAYOUT = BitFields(
    Field("planes", 0, 2, "planes"),
    Field("offset", 2, 1, "offset"),
    Field("base3", 3, 1, "base-3 packing"),
    Field("max_planes", 4, 3, "most planes a layer may have (in passes of `planes`)"),
    Field("scale_bits", 8, 8, "S"),
    Field("group_size", 16, 16, "G"),
)
CTRL = BitFields(
    Field("start", 0, 1, "queue the descriptor in words 4..9"), Field("clear", 1, 1, "clear counters and errors")
)
STATUS = BitFields(
    Field("busy", 0, 1, "busy"),
    Field("queue_full", 1, 1, "descriptor queue full"),
    Field("error", 2, 1, "an error bit is set"),
    Field("runs", 8, 24, "runs finished"),
)
ERRORS = BitFields(
    Field("memory", 0, 1, "memory error response"),
    Field("overflow", 1, 1, "activation overflow"),
    Field("mismatch", 2, 1, "batch size differs from the M register"),
    Field(
        "refused",
        3,
        1,
        "descriptor refused (queue full, n >= 2^24, m, chunks, passes or beats out of "
        "range, or an address not aligned to a burst)",
    ),
)

#: register -> (access, meaning); the bit-field registers describe themselves.
REGISTERS: dict[Reg, tuple[str, str]] = {
    Reg.ID: ("R", f'{ENGINE_ID:#x} ("PTQE")'),
    Reg.PARAMS: ("R", PARAMS.describe()),
    Reg.CTRL: ("W", CTRL.describe()),
    Reg.STATUS: ("R", STATUS.describe()),
    Reg.N: ("RW", "rows n (below 2^24)"),
    Reg.CHUNKS: ("RW", "d_pad / P (a multiple of G / P, at most max d_pad / P)"),
    Reg.M: ("RW", "vectors in the batch, 1..M"),
    Reg.ADDR_LO: ("RW", "byte address of the layer's region, low word (aligned to burst x DW / 8)"),
    Reg.ADDR_HI: ("RW", "byte address, high word"),
    Reg.BEATS: ("RW", "DW-bit words of the region"),
    Reg.CYCLES: ("R", "cycles the compute core held a run"),
    Reg.ISSUED: ("R", "chunk-cycles issued (every lane busy)"),
    Reg.WAIT_W: ("R", "cycles a run waited for weight or scale records"),
    Reg.WAIT_X: ("R", "cycles a run waited for its activations"),
    Reg.WAIT_Y: ("R", "cycles a run waited for room in the output buffer"),
    Reg.ERRORS: ("R", ERRORS.describe() + "; sticky until CTRL clear"),
    Reg.LAYOUT: ("R", LAYOUT.describe() + ": with PARAMS, what a host checks before pairing a model image"),
    Reg.PASSES: ("RW", "passes of the layer, ceil(K / planes) for K planes: 1..ceil(max_planes / planes); reset 1"),
}

#: Registers a host may write; writes elsewhere are ignored.
WRITABLE = frozenset(r for r, (access, _) in REGISTERS.items() if "W" in access)


class BenchEnv:
    """Environment variables a simulation bench reads (set by ``ptqtp.sim.runner``)."""

    JOB = "PTQTP_JOB"  # .npz: the memory image, each run's x_q and expected accumulators
    CFG = "PTQTP_CFG"  # JSON: the engine's view (engine_config) and the runs or layers
    REPORT = "PTQTP_REPORT"  # JSON written by the bench: verdict, cycles, counters
    PORT = "PTQTP_PORT"  # loopback port of the host in persistent (serve_host) mode


def descriptor_writes(run: dict) -> list[tuple[Reg, int]]:
    """The register writes, in order, that queue one run {n, chunks, m, addr, beats[,
    passes]} and start it: what every host driver and bench sends."""
    return [
        (Reg.PASSES, run.get("passes", 1)),
        (Reg.N, run["n"]),
        (Reg.CHUNKS, run["chunks"]),
        (Reg.M, run["m"]),
        (Reg.ADDR_LO, run["addr"] & 0xFFFFFFFF),
        (Reg.ADDR_HI, run["addr"] >> 32),
        (Reg.BEATS, run["beats"]),
        (Reg.CTRL, CTRL.pack(start=1)),
    ]


def register_table() -> str:
    """docs/SPEC.md section 6.2's table, from the definitions above."""
    rows = ["| word | name | access | meaning |", "|---|---|---|---|"]
    rows += [f"| {int(r)} | {r.name} | {access} | {meaning} |" for r, (access, meaning) in REGISTERS.items()]
    return "\n".join(rows)
