"""The host side of the SoC: a bus bridge (UARTBone or Etherbone) and the driver that
initialises DRAM, loads a model image and runs layers on the engine.

The same driver talks to a board and to the simulator (``ptqtp.soc.simulate``); only the
transport differs: ``UartBone("/dev/ttyUSB0")`` on a ULX3S, ``UartBone("socket://127.0.0.1:PORT")``
on the simulator, ``Etherbone("192.168.1.50")`` on an ECPIX-5. Addresses are
``ptqtp.soc.memory_map``'s; the register sequence of a run is ``ptqtp.hdl.contract``'s.
"""

from __future__ import annotations

import time

import numpy as np

from ptqtp.formats.stream_layout import gather_results, pack_activations
from ptqtp.hdl.contract import ENGINE_ID, ERRORS, LAYOUT, PARAMS, STATUS, Reg, descriptor_writes
from ptqtp.hdl.engine_model import EngineParams

from .memory_map import CONTROL, ENGINE_REGS, MAIN_RAM, REGION_SIZE, SOC_ID, X_WINDOW, Y_HIGH, Y_WINDOW, Ctl

__all__ = ["UartBone", "Etherbone", "open_bus", "SocDriver", "SocError"]

_BURST = 255  # words per UARTBone command (its length byte)
_WRITE, _READ = 0x01, 0x02  # Stream2Wishbone's incrementing-burst commands


class SocError(RuntimeError):
    """The SoC answered, but not as the image or the protocol needs."""


class UartBone:
    """LiteX's UARTBone protocol (``Stream2Wishbone``) over a serial port or any pyserial
    URL (``socket://host:port`` for the simulator): per command one byte of command, one of
    length (words), the word address big-endian, then the words big-endian."""

    def __init__(self, url: str, baudrate: int = 3_000_000, timeout: float = 60.0):
        import serial  # pyserial, a LiteX dependency

        self.url = url
        self.port = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout)
        self.timeout = timeout

    def _header(self, cmd: int, addr: int, count: int) -> bytes:
        return bytes([cmd, count]) + (addr // 4).to_bytes(4, "big")

    def write(self, addr: int, words) -> None:
        w = np.asarray(words, dtype=">u4").ravel()
        out = bytearray()
        for i in range(0, len(w), _BURST):
            part = w[i : i + _BURST]
            out += self._header(_WRITE, addr + 4 * i, len(part)) + part.tobytes()
            if len(out) > 1 << 20:
                self.port.write(bytes(out))
                out.clear()
        if out:
            self.port.write(bytes(out))

    def read(self, addr: int, count: int, step: bool = True) -> np.ndarray:
        """``count`` words from ``addr`` on (``step=False``: every burst from ``addr`` again,
        for a FIFO window; a burst stays inside its 4 kB window either way)."""
        sizes = [min(_BURST, count - i) for i in range(0, count, _BURST)]
        self.port.write(b"".join(self._header(_READ, addr + 4 * i * _BURST * step, n) for i, n in enumerate(sizes)))
        data = self.port.read(4 * count)
        if len(data) != 4 * count:
            raise TimeoutError(f"{self.url}: {len(data)} of {4 * count} bytes read back in {self.timeout} s")
        return np.frombuffer(data, dtype=">u4").astype(np.uint32)

    def close(self) -> None:
        self.port.close()


class Etherbone:
    """Etherbone over UDP (LiteX's ``CommUDP``), for boards with Ethernet. A lost reply is
    retried by CommUDP; a retried read of the y window pops entries twice, which the driver
    detects (a vector with the wrong number of rows) rather than returning wrong values."""

    def __init__(self, ip: str, port: int = 1234, timeout: float = 1.0):
        from litex.tools.remote.comm_udp import CommUDP

        self.url = f"udp://{ip}:{port}"
        self.comm = CommUDP(server=ip, port=port, timeout=timeout)
        self.comm.open(probe=False)

    def write(self, addr: int, words) -> None:
        w = np.asarray(words, dtype=np.uint32).ravel()
        for i in range(0, len(w), _BURST):
            self.comm.write(addr + 4 * i, [int(v) for v in w[i : i + _BURST]])

    def read(self, addr: int, count: int, step: bool = True) -> np.ndarray:
        out = [self.comm.read(addr + 4 * i * step, min(_BURST, count - i)) for i in range(0, count, _BURST)]
        return np.asarray([v for part in out for v in part], dtype=np.uint32)

    def close(self) -> None:
        self.comm.close()


def open_bus(url: str):
    """A bridge by URL: ``udp://IP[:PORT]`` (Etherbone), else a pyserial URL or device
    (UARTBone): ``socket://HOST:PORT``, ``/dev/ttyUSB0``."""
    if url.startswith("udp://"):
        host, _, port = url[len("udp://") :].partition(":")
        return Etherbone(host, int(port or 1234))
    return UartBone(url)


def _init_commands(config: dict) -> list[tuple[str, int, int, int, float]]:
    """LiteDRAM's own power-up sequence for the board's DRAM: (comment, address, bank,
    DFII command bits, delay in microseconds)."""
    from litedram import modules as dram_modules
    from litedram.init import get_sdram_phy_init_sequence
    from litedram.phy.model import get_sdram_phy_settings

    clk = config["sys_clk_hz"]
    rate = {"SDR": "1:1", "DDR3": "1:4" if config["board"].startswith("sim") else "1:2"}[config["memory"]]
    module = getattr(dram_modules, config["module"])(clk, rate)
    settings = get_sdram_phy_settings(memtype=module.memtype, data_width=16, clk_freq=clk)
    sequence, _ = get_sdram_phy_init_sequence(settings, module.timing_settings)
    bits = {"cs": 0x01, "we": 0x02, "cas": 0x04, "ras": 0x08, "wrdata": 0x10, "rddata": 0x20}
    out = []
    for comment, a, ba, cmd, delay in sequence:
        flags = [f.strip() for f in cmd.replace("DFII_COMMAND_", "").lower().split("|") if f.strip()]
        out.append((comment, a, ba, sum(bits[f] for f in flags if f in bits), delay))
    return out


class SocDriver:
    """Drives the SoC over ``bus`` (:func:`open_bus`); ``config`` is the build's soc.json
    (``ptqtp.soc.system.soc_config``)."""

    def __init__(self, bus, config: dict):
        self.bus = bus
        self.config = config
        self.params = EngineParams(**config["engine"])
        self.csr = config.get("csr", {})

    # ------------------------------------------------------------ registers

    def reg(self, r: Reg) -> int:
        return int(self.bus.read(ENGINE_REGS + 4 * int(r), 1)[0])

    def set_reg(self, r: Reg, value: int) -> None:
        self.bus.write(ENGINE_REGS + 4 * int(r), [value])

    def ctl(self, c: Ctl) -> int:
        return int(self.bus.read(CONTROL + 4 * int(c), 1)[0])

    def set_ctl(self, c: Ctl, value: int) -> None:
        self.bus.write(CONTROL + 4 * int(c), [value])

    def check(self) -> None:
        """The bridge reaches a ptqtp SoC whose engine is the one the build says."""
        soc_id = self.ctl(Ctl.SOC_ID)
        if soc_id != SOC_ID:
            raise SocError(f"{self.bus.url}: SOC_ID reads {soc_id:#x}, not {SOC_ID:#x} (is this a ptqtp SoC?)")
        engine_id = self.reg(Reg.ID)
        if engine_id != ENGINE_ID:
            raise SocError(f"{self.bus.url}: engine ID reads {engine_id:#x}, not {ENGINE_ID:#x}")
        self.check_engine(self.params)

    def check_engine(self, params: EngineParams) -> None:
        """The engine's PARAMS and LAYOUT registers equal ``params``' (a model image pairs only
        with the engine it was laid out for)."""
        for r, fields, want in ((Reg.PARAMS, PARAMS, params.params_word()), (Reg.LAYOUT, LAYOUT, params.layout_word())):
            got = self.reg(r)
            if got != want:
                raise SocError(
                    f"{self.bus.url}: engine {r.name} is {fields.unpack(got)}, the image needs {fields.unpack(want)}"
                )

    # ------------------------------------------------------------ DRAM

    def init_dram(self) -> None:
        """Run LiteDRAM's init sequence through the DFI injector's CSRs, then hand the DRAM
        to the controller (what LiteX's BIOS does, from the host)."""
        need = (
            "sdram_dfii_control",
            "sdram_dfii_pi0_command",
            "sdram_dfii_pi0_command_issue",
            "sdram_dfii_pi0_address",
            "sdram_dfii_pi0_baddress",
        )
        missing = [n for n in need if n not in self.csr]
        if missing:
            raise SocError(f"the build's CSR map has no {', '.join(missing)} (is it this SoC's soc.json?)")
        w = lambda name, v: self.bus.write(self.csr[name], [v])  # noqa: E731
        w("sdram_dfii_control", 0x02 | 0x04 | 0x08)  # software control: cke, odt, reset_n
        for _comment, a, ba, cmd, delay in _init_commands(self.config):
            w("sdram_dfii_pi0_address", a)
            w("sdram_dfii_pi0_baddress", ba)
            if cmd:
                w("sdram_dfii_pi0_command", cmd)
                w("sdram_dfii_pi0_command_issue", 1)
            if delay:
                time.sleep(delay * 1e-6)
        w("sdram_dfii_control", 0x01)  # hardware control

    def level_reads(self, lanes: int = 2, delays: int = 8, bitslips: int = 4, words: int = 64) -> dict:
        """Read leveling of LiteDRAM's ECP5 DDR3 PHY, from the host: write a pseudo-random
        pattern through the controller, then for every bitslip and read delay read it back
        and, per byte lane, keep the bitslip with the longest run of clean reads and the
        delay at its middle (what LiteX's BIOS does from its CPU). {lane: (bitslip, delay)}.
        A byte lane of a 32-bit word w is byte (lane + k lanes) for k = 0.. (x16 DDR3: bytes
        0 and 2 are lane 0)."""
        if "ddrphy_rdly_dq_rst" not in self.csr:
            return {}  # a PHY without read delays (SDR, the simulated models)
        rng = np.random.default_rng(0x5EED)
        pattern = rng.integers(0, 1 << 32, words, dtype=np.uint64).astype(np.uint32)
        self.bus.write(MAIN_RAM, pattern)
        masks = [sum(0xFF << 8 * b for b in range(lane, 4, lanes)) for lane in range(lanes)]
        clean = np.zeros((lanes, bitslips, delays), bool)
        for slip in range(bitslips):
            for delay in range(delays):
                self._read_delay((1 << lanes) - 1, slip, delay)
                diff = self.bus.read(MAIN_RAM, words) ^ pattern
                for lane, mask in enumerate(masks):
                    clean[lane, slip, delay] = not np.any(diff & np.uint32(mask))
        chosen = {}
        for lane in range(lanes):
            runs = [(_longest_run(clean[lane, slip]), slip) for slip in range(bitslips)]
            (length, start), slip = max(runs)
            if length == 0:
                raise SocError(f"read leveling: no bitslip and read delay reads byte lane {lane} back correctly")
            chosen[lane] = (slip, start + (length - 1) // 2)
            self._read_delay(1 << lane, *chosen[lane])
        return chosen

    def _read_delay(self, lanes_mask: int, bitslip: int, delay: int) -> None:
        w = lambda name, v: self.bus.write(self.csr[name], [v])  # noqa: E731
        w("ddrphy_dly_sel", lanes_mask)
        w("ddrphy_rdly_dq_rst", 1)
        w("ddrphy_rdly_dq_bitslip_rst", 1)
        for _ in range(bitslip):
            w("ddrphy_rdly_dq_bitslip", 1)
        for _ in range(delay):
            w("ddrphy_rdly_dq_inc", 1)
        w("ddrphy_dly_sel", 0)

    def load(self, blob: bytes, offset: int = 0, verify: bool = True) -> None:
        """Write ``blob`` to DRAM at byte ``offset`` (the engine's address ``offset``)."""
        size = self.config.get("main_ram_size")
        if size is not None and offset + len(blob) > size:
            raise SocError(
                f"the image needs {offset + len(blob):,} bytes of DRAM; the {self.config['board']} has {size:,}"
            )
        data = np.frombuffer(bytes(blob) + b"\0" * (-len(blob) % 4), dtype="<u4")
        self.bus.write(MAIN_RAM + offset, data)
        if verify:
            self.check_loaded(blob, offset)

    def check_loaded(self, blob: bytes, offset: int = 0, samples: int = 64) -> None:
        """Words of ``blob`` spread over its length read back from DRAM as written."""
        data = np.frombuffer(bytes(blob) + b"\0" * (-len(blob) % 4), dtype="<u4")
        if not len(data):
            return
        for i in sorted({0, len(data) - 1, *np.linspace(0, len(data) - 1, samples).astype(int).tolist()}):
            got = int(self.bus.read(MAIN_RAM + offset + 4 * i, 1)[0])
            if got != int(data[i]):
                raise SocError(
                    f"DRAM word {i} at {offset + 4 * i:#x} reads {got:#010x}, the image has {int(data[i]):#010x}"
                )

    # ------------------------------------------------------------ runs

    def run_layer(self, run: dict, x_q: np.ndarray) -> tuple[np.ndarray, int]:
        """Batches of at most M vectors through one layer ({n, chunks, passes, addr,
        beats}); the accumulators (m, n) and the engine's CYCLES increase."""
        p = self.params
        before = self.reg(Reg.CYCLES)
        out = []
        for start in range(0, len(x_q), p.vectors):
            batch = np.asarray(x_q[start : start + p.vectors], np.int64)
            out.append(self._batch(run, batch))
        return np.concatenate(out), (self.reg(Reg.CYCLES) - before) & 0xFFFFFFFF

    def _batch(self, run: dict, x: np.ndarray) -> np.ndarray:
        p = self.params
        m, n = len(x), run["n"]
        # activations first: the engine banks them before the descriptor arrives, so the run
        # (and its cycle count) waits on weights, not on the host link
        self.set_ctl(Ctl.X_FRAME, run["chunks"] | m << 16)
        words = pack_activations(x, p.lanes, p.act_bits).ravel()
        for i in range(0, len(words), REGION_SIZE // 4):
            self.bus.write(X_WINDOW, words[i : i + REGION_SIZE // 4])
        for r, value in descriptor_writes({**run, "m": m}):
            self.set_reg(r, value)
        entries = self._receive(n * m)
        try:
            return gather_results(*_decode_y(entries, p.out_bits), n, m)
        except ValueError as e:
            raise SocError(f"{e} (a lost or repeated read of the y window?)") from None

    def _receive(self, count: int, timeout: float = 600.0) -> np.ndarray:
        got: list[np.ndarray] = []
        have, deadline, idle = 0, time.monotonic() + timeout, 0.0
        while have < count:
            level = min(self.ctl(Ctl.Y_LEVEL), count - have, REGION_SIZE // 8)
            if level == 0:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the engine sent {have} of {count} results in {timeout} s (ERRORS "
                        f"{ERRORS.unpack(self.reg(Reg.ERRORS))}, STATUS {STATUS.unpack(self.reg(Reg.STATUS))})"
                    )
                idle = min(0.05, idle * 2 or 1e-4)
                time.sleep(idle)
                continue
            idle = 0.0
            got.append(self.bus.read(Y_WINDOW, 2 * level).reshape(level, 2))
            have += level
        status = self.ctl(Ctl.STATUS)
        if status & 1:
            self.set_ctl(Ctl.STATUS, 1)
            raise SocError("a read of the y window found it empty (the bridge read more than Y_LEVEL)")
        return np.concatenate(got)


def _longest_run(flags) -> tuple[int, int]:
    """(length, start) of the longest run of True in ``flags`` (the first of equal ones)."""
    best, start = (0, 0), None
    for i, f in enumerate([*flags, False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            best = max(best, (i - start, -start))
            start = None
    return best[0], -best[1]


def _decode_y(entries: np.ndarray, out_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(accumulators int64, tids, tlasts) from the y window's word pairs (memory_map.Y_HIGH)."""
    low = entries[:, 0].astype(np.int64)
    high = entries[:, 1].astype(np.int64)

    def field(name: str) -> np.ndarray:
        lsb, width = Y_HIGH[name]
        return (high >> lsb) & ((1 << width) - 1)

    acc_high = field("acc_high")
    width = Y_HIGH["acc_high"][1]
    acc_high -= (acc_high >> (width - 1)) << width  # sign-extend
    acc = (acc_high << 32) | low
    if out_bits < 32 + width:
        shift = 64 - out_bits
        acc = (acc << shift) >> shift
    return acc, field("tid"), field("tlast")
