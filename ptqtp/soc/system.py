"""LiteX systems-on-chip around the engine: one per board, and two for simulation.

No soft CPU: the host drives everything over a bridge (UARTBone on a serial link, Etherbone
on Ethernet), and initialises DRAM itself with LiteDRAM's own init sequence
(``ptqtp.soc.host``). A CPU would add a RAM, a ROM and a firmware build for work the host
does in a few hundred register writes.

    board     FPGA          memory                      host link        sys clock
    ecpix5    LFE5UM5G-85F  DDR3 MT41K256M16, ECP5 1:2   Etherbone (UDP)  60 MHz
    ulx3s     LFE5U-85F     SDR MT48LC16M16, 1:1         UARTBone (USB)   50 MHz
    sim-sdr   Verilator     SDRAMPHYModel, SDR           UARTBone (TCP)   50 MHz
    sim-ddr3  Verilator     SDRAMPHYModel, DDR3 1:4      UARTBone (TCP)   100 MHz

The engine's weight port is a LiteDRAM crossbar port of the engine's data width (LiteDRAM
converts from the controller's native width where they differ: SDR's 16 bits); the SoC bus
reaches DRAM without a cache, so bytes the host writes are the bytes the engine reads.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ptqtp.hdl.engine_model import EngineParams

from .memory_map import CONTROL, ENGINE_REGS, MAIN_RAM, REGION_SIZE, X_WINDOW, Y_WINDOW

__all__ = ["Board", "BOARDS", "board", "make_soc", "engine_verilog", "soc_config", "sim_dram", "bank_memories"]


@dataclasses.dataclass(frozen=True)
class Board:
    name: str
    description: str
    memory: str  # "SDR" or "DDR3"
    module: str  # the LiteDRAM module class
    link: str  # "uartbone" or "etherbone"
    sys_clk_hz: float
    #: bytes the DRAM can move per system clock at most (data bus width x transfers per clock)
    peak_bytes_per_cycle: int
    #: engine data width (bits): the controller's native width where the engine takes it, and
    #: at least the DRAM's peak per cycle. Measured on sim-ddr3, block 0: DW = native (128)
    #: streamed 89% of peak, DW = 256 through LiteDRAM's port up-converter 63%.
    data_width: int
    simulated: bool = False

    @property
    def peak_bytes_per_s(self) -> float:
        return self.peak_bytes_per_cycle * self.sys_clk_hz


BOARDS = {
    b.name: b
    for b in (
        # DDR3 x16 at 2 x 60 MHz, two transfers a clock: 16 bits x 4 per system clock. 60, not
        # litex-boards' 75 MHz: with Etherbone's UDP/IP stack in the system clock the SoC placed
        # at 65-67 MHz; with the base-3 engine at 53-57 MHz, so that one builds at 50 (docs/SOC.md)
        Board("ecpix5", "LambdaConcept ECPIX-5 (LFE5UM5G-85F)", "DDR3", "MT41K256M16", "etherbone", 60e6, 8, 128),
        Board("ulx3s", "Radiona ULX3S 85F (LFE5U-85F)", "SDR", "MT48LC16M16", "uartbone", 50e6, 2, 128),
        Board(
            "sim-sdr", "Verilator, LiteDRAM SDRAMPHYModel (SDR)", "SDR", "MT48LC16M16", "uartbone", 50e6, 2, 128, True
        ),
        Board(
            "sim-ddr3",
            "Verilator, LiteDRAM SDRAMPHYModel (DDR3, 1:4)",
            "DDR3",
            "MT41K128M16",
            "uartbone",
            100e6,
            16,
            128,
            True,
        ),
    )
}


def board(name: str, sys_clk_hz: float | None = None) -> Board:
    """A board by name; ``sys_clk_hz`` replaces its system clock (a slower clock plan for a
    configuration that does not meet the default)."""
    try:
        b = BOARDS[name]
    except KeyError:
        raise ValueError(f"board must be one of {', '.join(BOARDS)}, not {name!r}") from None
    return b if sys_clk_hz is None else dataclasses.replace(b, sys_clk_hz=float(sys_clk_hz))


def soc_params(b: Board, params: EngineParams | None = None) -> EngineParams:
    """The engine a board's SoC carries: ``params`` (default: EngineParams' defaults) at the
    board's data width and a burst of 256 bytes."""
    p = params or EngineParams()
    if params is None or p.data_width != b.data_width:
        p = dataclasses.replace(p, data_width=b.data_width, burst=max(1, 2048 // b.data_width))
    return p


def engine_verilog(params: EngineParams) -> str:
    from ptqtp.hdl.engine import TritEngine
    from ptqtp.hdl.synth import to_verilog

    from .gateware import ENGINE_MODULE

    return to_verilog(TritEngine(params), name=ENGINE_MODULE)


def _add_engine(soc, params: EngineParams, dram_port_width: int | None = None):
    from litedram.frontend.axi import LiteDRAMAXI2NativeR
    from litex.soc.integration.soc import SoCRegion

    from .gateware import EngineInSoC

    soc.ptqtp = eng = EngineInSoC(params)
    bases = {"engine": ENGINE_REGS, "control": CONTROL, "x": X_WINDOW, "y": Y_WINDOW}
    for name, bus in eng.buses.items():
        soc.bus.add_slave(f"ptqtp_{name}", bus, SoCRegion(origin=bases[name], size=REGION_SIZE, cached=False))
    # the engine only reads: LiteDRAM's AXI read path alone, on a read port, with no
    # read/write arbiter (on the ECPIX-5 its grant logic was the system clock's critical path)
    port = soc.sdram.crossbar.get_port(mode="read", data_width=params.data_width)
    soc.submodules.ptqtp_dram = reader = LiteDRAMAXI2NativeR(eng.axi, port, buffer_depth=16, base_address=0)
    soc.comb += reader.cmd_grant.eq(1)


_SOC_KW = dict(
    cpu_type=None,
    integrated_sram_size=0,
    integrated_rom_size=0,
    with_uart=False,
    with_timer=False,
    with_ctrl=True,
)


def sim_dram(b: Board, init: list[int] | None = None):
    """LiteDRAM's SDRAM model of a simulated board (x16 module); ``init``: 32-bit words from
    DRAM byte 0, which the model itself spreads over its banks (the backdoor's layout)."""
    from litedram import modules as dram_modules
    from litedram.phy.model import SDRAMPHYModel, get_sdram_phy_settings

    module = getattr(dram_modules, b.module)(b.sys_clk_hz, "1:1" if b.memory == "SDR" else "1:4")
    settings = get_sdram_phy_settings(memtype=module.memtype, data_width=16, clk_freq=b.sys_clk_hz)
    return SDRAMPHYModel(module, settings, clk_freq=b.sys_clk_hz, init=init or [])


def bank_memories(phy) -> list:
    """The Migen memories of an SDRAM model's banks, in bank order."""
    from litedram.phy.model import BankModel
    from migen.fhdl.specials import Memory

    banks = [m for _, m in phy._submodules if isinstance(m, BankModel)]
    return [next(s for s in bank._fragment.specials if isinstance(s, Memory)) for bank in banks]


def _sim_soc(b: Board, params: EngineParams):
    from litex.build.generic_platform import Pins, Subsignal
    from litex.build.sim import SimPlatform
    from litex.soc.cores.uart import RS232PHYModel, UARTBone
    from litex.soc.integration.soc_core import SoCCore
    from migen.genlib.io import CRG

    io = [
        ("sys_clk", 0, Pins(1)),
        ("sys_rst", 0, Pins(1)),
        (
            "serial",
            0,
            Subsignal("source_valid", Pins(1)),
            Subsignal("source_ready", Pins(1)),
            Subsignal("source_data", Pins(8)),
            Subsignal("sink_valid", Pins(1)),
            Subsignal("sink_ready", Pins(1)),
            Subsignal("sink_data", Pins(8)),
        ),
    ]
    platform = SimPlatform("SIM", io)
    soc = SoCCore(platform, b.sys_clk_hz, ident=f"ptqtp {b.name}", **_SOC_KW)
    soc.crg = CRG(platform.request("sys_clk"), platform.request("sys_rst"))
    soc.sdrphy = sim_dram(b)
    soc.add_sdram("sdram", phy=soc.sdrphy, module=soc.sdrphy.module, origin=MAIN_RAM, l2_cache_size=0)
    soc.uartbone_phy = phy = RS232PHYModel(platform.request("serial"))
    soc.uartbone = bone = UARTBone(phy=phy, clk_freq=b.sys_clk_hz)
    soc.bus.add_master(name="uartbone", master=bone.wishbone)
    _add_engine(soc, params)
    return soc


def _board_soc(b: Board, params: EngineParams):
    if b.name == "ecpix5":
        from liteeth.phy.ecp5rgmii import LiteEthPHYRGMII
        from litex_boards.targets.lambdaconcept_ecpix5 import BaseSoC

        soc = BaseSoC(device="85F", sys_clk_freq=b.sys_clk_hz, with_led_chaser=False, l2_size=0, **_SOC_KW)
        soc.ethphy = LiteEthPHYRGMII(
            clock_pads=soc.platform.request("eth_clocks"), pads=soc.platform.request("eth"), rx_delay=0e-9
        )
        # a 32-bit datapath runs the UDP/IP stack in the system clock (8 bits runs it at the
        # RGMII's 125 MHz, which the stack did not meet on the ECP5: 67 MHz placed)
        soc.add_etherbone(phy=soc.ethphy, data_width=32)
    else:
        from litex_boards.targets.radiona_ulx3s import BaseSoC

        soc = BaseSoC(
            device="LFE5U-85F",
            sys_clk_freq=b.sys_clk_hz,
            sdram_module_cls=b.module,
            with_led_chaser=False,
            l2_size=0,
            **_SOC_KW,
        )
        soc.add_uartbone(name="uartbone", uart_name="serial", baudrate=3_000_000)
    _add_engine(soc, params)
    return soc


def make_soc(board_name: str, params: EngineParams | None = None, sys_clk_hz: float | None = None):
    """The LiteX SoC for a board (``BOARDS``) with the engine ``params`` (default: the
    board's, :func:`soc_params`)."""
    b = board(board_name, sys_clk_hz)
    p = soc_params(b, params)
    return (_sim_soc if b.simulated else _board_soc)(b, p)


def soc_config(board_name: str, params: EngineParams, csr_json: dict, sys_clk_hz: float | None = None) -> dict:
    """What a host needs besides the bridge: the board, the engine's parameters, the DRAM's
    size and peak rate, and the LiteX CSR map (for DRAM initialisation)."""
    b = board(board_name, sys_clk_hz)
    return {
        "board": b.name,
        "memory": b.memory,
        "module": b.module,
        "link": b.link,
        "sys_clk_hz": b.sys_clk_hz,
        "peak_bytes_per_cycle": b.peak_bytes_per_cycle,
        "engine": dataclasses.asdict(params),
        "csr": {name: v["addr"] for name, v in csr_json.get("csr_registers", {}).items()},
        "main_ram_size": csr_json.get("memories", {}).get("main_ram", {}).get("size"),
    }


def write_config(path: Path, config: dict) -> None:
    from ptqtp.formats.atomic import atomic_write

    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(config, indent=1) + "\n"))
