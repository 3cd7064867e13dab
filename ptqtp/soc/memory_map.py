"""The SoC's address map as the host sees it, defined once (docs/SPEC.md section 11).

Plain Python (no Migen): the gateware (``ptqtp.soc.gateware``), the host driver
(``ptqtp.soc.host``) and the spec's table all take it from here. Addresses are bus byte
addresses of the SoC's 32-bit Wishbone bus; the engine's AXI master sees DRAM from byte 0.
"""

from __future__ import annotations

import enum

__all__ = [
    "SOC_ID",
    "MAIN_RAM",
    "ENGINE_REGS",
    "CONTROL",
    "X_WINDOW",
    "Y_WINDOW",
    "REGION_SIZE",
    "Ctl",
    "Y_HIGH",
    "memory_map_table",
]

SOC_ID = 0x50545153  # "PTQS"

#: DRAM through the SoC bus (no cache: the engine reads the same bytes on its own port)
MAIN_RAM = 0x40000000
#: the engine's AXI4-Lite registers (docs/SPEC.md 6.2), word w at ENGINE_REGS + 4 w
ENGINE_REGS = 0x30000000
#: the SoC's own registers (:class:`Ctl`)
CONTROL = 0x30001000
#: activations in: every 32-bit write, at any address of the window, is the next word of x
X_WINDOW = 0x30002000
#: results out: every read, at any address of the window, pops the next half of a y entry
Y_WINDOW = 0x30003000
REGION_SIZE = 0x1000


class Ctl(enum.IntEnum):
    """Word offsets of the SoC registers at :data:`CONTROL`."""

    SOC_ID = 0x0  # R: "PTQS"
    X_FRAME = (
        0x1  # RW: bits 0..15 chunks per vector (d_pad / P), bits 16..23 vectors per batch; a write restarts the framer
    )
    Y_LEVEL = 0x2  # R: whole y entries waiting (each is two reads of the window)
    STATUS = (
        0x3  # R: bit 0 a y read found the FIFO empty, bit 1 an x write arrived with no frame set; write 1s to clear
    )
    CYCLES = 0x4  # R: free-running system-clock counter (wraps at 2^32)
    X_WORDS = 0x5  # R: 32-bit words per activation beat (P * A / 32, rounded up)
    Y_DEPTH = 0x6  # R: entries the y FIFO holds


#: the second read of a y entry: bits 0..23 the accumulator's bits 32.. sign-extended,
#: bits 24..30 the vector (tid), bit 31 the last row of the vector (tlast)
Y_HIGH = {"acc_high": (0, 24), "tid": (24, 7), "tlast": (31, 1)}


def memory_map_table() -> str:
    """docs/SPEC.md section 11's table."""
    rows = ["| base | size | what |", "|---|---|---|"]
    rows += [
        f"| {ENGINE_REGS:#010x} | {REGION_SIZE:#x} | engine registers (section 6.2), word w at base + 4 w |",
        f"| {CONTROL:#010x} | {REGION_SIZE:#x} | SoC registers (below) |",
        f"| {X_WINDOW:#010x} | {REGION_SIZE:#x} | x window: each 32-bit write is the next word of x |",
        f"| {Y_WINDOW:#010x} | {REGION_SIZE:#x} | y window: each read pops the next half of a result entry |",
        f"| {MAIN_RAM:#010x} | DRAM size | DRAM, uncached; the engine's byte address a is bus address base + a |",
    ]
    return "\n".join(rows)
