"""The ``soc-sim`` and ``board`` backends: every loaded layer in the DRAM of a LiteX SoC, run
on its engine through the host bridge (``ptqtp.soc.host``).

``soc-sim`` builds the SoC for a simulated board (``sim-sdr`` or ``sim-ddr3``: LiteDRAM's
real controller in front of its SDRAM model) and talks UARTBone to the simulator over a
loopback socket; ``board`` talks to a programmed board at ``url`` with the soc.json its
``ptqtp soc build`` wrote. The driver and the register traffic are the same. The first
``run`` writes the model image into DRAM over the bridge (on a board, after LiteDRAM's init
sequence and read leveling), or with ``backdoor=True`` (simulation only, named so) starts the
simulator with the image already in its DRAM. ``cycles`` keeps the engine's cycles per
layer id, ``transfer`` the weight bytes and cycles of every run (the measured DRAM
efficiency).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from ptqtp.golden import GoldenLayer
from ptqtp.hdl.contract import Reg
from ptqtp.hdl.engine_model import EngineParams

from .backends import Backend, check_int_input
from .engine import image_runs

__all__ = ["SocBackend"]


class SocBackend(Backend):
    """``board``: a simulated board's name (``soc-sim``), or with ``url`` and ``config`` (the
    build's soc.json, a path or dict) a real one. ``params``: the engine (default: the
    board's, ``ptqtp.soc.system.soc_params``)."""

    def __init__(
        self,
        board: str = "sim-sdr",
        url: str | None = None,
        config: str | Path | dict | None = None,
        params: EngineParams | None = None,
        init_dram: bool | None = None,
        backdoor: bool = False,
        **engine_kwargs,
    ):
        from ptqtp.soc.system import board as board_spec
        from ptqtp.soc.system import soc_params

        if isinstance(config, (str, Path)):
            path = Path(config)
            try:
                config = json.loads(path.read_text())
                board = config["board"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}: not a soc.json written by `ptqtp soc build` ({e})") from None
        if isinstance(config, dict) and not board:
            board = config.get("board", "")
        if not board:
            raise ValueError(
                "the board backend needs url= (udp://IP[:PORT] or a serial port; --url) and config= (the soc.json "
                "that `ptqtp soc build` wrote; --soc-config)"
            )
        self.board = board_spec(board)
        if self.board.simulated and url is not None:
            raise ValueError(f"board {board!r} is simulated; it takes no url")
        if not self.board.simulated and (url is None or config is None):
            raise ValueError(f"board {board!r} needs url= (udp://IP or a serial port) and config= (its soc.json)")
        if config is not None and not self.board.simulated:
            self.params = EngineParams(**config["engine"])  # the engine that was built
        else:  # the engine the simulator will build: the board sets its data width
            self.params = soc_params(self.board, params or (EngineParams(**engine_kwargs) if engine_kwargs else None))
        self.name = "soc-sim" if self.board.simulated else "board"
        self.url, self.config = url, config
        self.init_dram = (not self.board.simulated) if init_dram is None else init_dram
        if backdoor and not self.board.simulated:
            raise ValueError("backdoor= preloads a simulated board's DRAM; a board loads over its host link")
        self.backdoor = backdoor
        self._preload: bytes | None = None
        self.layers: dict[int, GoldenLayer] = {}
        self.cycles: dict[int, int] = {}
        self.vectors: dict[int, int] = {}
        self.transfer: list[tuple[int, int]] = []  # (weight bytes, engine cycles) per run
        self._tmp = tempfile.TemporaryDirectory(prefix="ptqtp-soc-")
        self._sim = None
        self._driver = None
        self._runs: dict[int, dict] = {}
        self.sim_cycles: int | None = None  # cycles the simulator ran, once it has exited

    def device_info(self) -> dict:
        return {
            "kind": self.name,
            "board": self.board.name,
            "params": self.params.params_word(),
            "layout": self.params.layout_word(),
        }

    def load(self, layer_id: int, layer: GoldenLayer) -> None:
        self.params.check_layer(layer.n, layer.d_pad, layer.planes, layer.m_q is not None)
        self.layers[layer_id] = layer
        self._runs = {}

    def unload(self, layer_id: int) -> None:
        if self.layers.pop(layer_id, None) is not None:
            self._runs = {}

    @property
    def driver(self):
        """The connected :class:`ptqtp.soc.host.SocDriver` (starting the simulator)."""
        if self._driver is None:
            from ptqtp.soc.host import SocDriver, open_bus

            if self.board.simulated:
                from ptqtp.soc.simulate import SocSimulator, build_sim

                build = build_sim(self.board.name, self.params)
                self._sim = SocSimulator(build, preload=self._preload)
                self.config = build.config
            self._driver = SocDriver(open_bus(self._sim.url if self._sim else self.url), self.config)
            self._driver.check()
            if self.init_dram:
                self._driver.init_dram()
                self._driver.level_reads()
        return self._driver

    def run(self, layer_id: int, x_q: np.ndarray) -> np.ndarray:
        if layer_id not in self.layers:
            raise KeyError(f"unknown layer id {layer_id}")
        x = check_int_input(self.layers[layer_id], x_q)
        if not self._runs:
            image, self._runs = image_runs(self.layers, self.params, Path(self._tmp.name) / "image")
            if self.backdoor:  # sim-only: a simulator started with the image already in its DRAM
                self._close_link()
                self._preload = image.blob_bytes()
                self.driver.check_loaded(self._preload)
            else:
                self.driver.load(image.blob_bytes())
        run = self._runs[layer_id]
        acc, cycles = self.driver.run_layer(run, x)
        self.cycles[layer_id] = self.cycles.get(layer_id, 0) + cycles
        self.vectors[layer_id] = self.vectors.get(layer_id, 0) + len(x)
        batches = -(-len(x) // self.params.vectors)
        self.transfer.append((batches * run["beats"] * self.params.data_width // 8, cycles))
        return acc

    def counters(self) -> dict[str, int]:
        return {
            r.name: self.driver.reg(r) for r in (Reg.CYCLES, Reg.ISSUED, Reg.WAIT_W, Reg.WAIT_X, Reg.WAIT_Y, Reg.ERRORS)
        }

    def close(self) -> None:
        self._close_link()
        self._tmp.cleanup()

    def _close_link(self) -> None:
        if self._driver is not None:
            self._driver.bus.close()
            self._driver = None
        if self._sim is not None:
            self._sim.close()
            self.sim_cycles = self._sim.cycles
            self._sim = None
