"""The ``rtl`` backend: the generated Verilog in Verilator, kept running between calls.

``load`` builds the accelerator straight from the golden layer, generates and builds the
Verilog (cached by its hash) and starts one simulator per layer running the bench's ``serve_host`` test,
which connects back to a loopback socket owned by this object. ``run`` sends a batch and
reads the accumulators: one build and one simulator process for many vectors.
"""

from __future__ import annotations

import socket
import struct
import tempfile
import threading
from pathlib import Path

import numpy as np

from ptqtp.formats.layer_npz import save_layer
from ptqtp.formats.wire import recv_exact
from ptqtp.golden import GoldenLayer
from ptqtp.hdl.synth import to_verilog
from ptqtp.hdl.top import TritMatmul
from ptqtp.sim.runner import TOP, build, verilator_env

from .backends import Backend, check_int_input

__all__ = ["RtlBackend"]


class RtlBackend(Backend):
    """Parameters: ``lanes`` P and ``rows`` R of the accelerator; ``timeout`` seconds per call."""

    name = "rtl-layer"

    def __init__(self, lanes: int = 16, rows: int = 1, timeout: float = 600.0):
        self.lanes, self.rows, self.timeout = lanes, rows, timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="ptqtp-rtl-")
        self._sims: dict[int, tuple] = {}

    def load(self, layer_id: int, layer: GoldenLayer) -> None:
        self._stop(layer_id)
        folder = Path(self._tmp.name) / f"layer{layer_id}"
        folder.mkdir(exist_ok=True)
        save_layer(folder / "layer.npz", layer)
        build_dir = build(to_verilog(TritMatmul.from_golden(layer, self.lanes, self.rows)))
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(self.timeout)
        env = {"PTQTP_LAYER": str(folder / "layer.npz"), "PTQTP_LANES": str(self.lanes), "PTQTP_ROWS": str(self.rows),
               "PTQTP_RTL_PORT": str(listener.getsockname()[1]), **verilator_env()}

        def simulate():
            from cocotb_tools.runner import get_runner  # cocotb: heavy, optional

            try:
                get_runner("verilator").test(test_module="ptqtp.sim.cocotb_bench", hdl_toplevel=TOP,
                                             hdl_toplevel_lang="verilog", testcase="serve_host", build_dir=build_dir,
                                             test_dir=folder, extra_env=env, log_file=folder / "sim.log")
            except (SystemExit, RuntimeError):  # reported to the host as a closed connection
                pass

        thread = threading.Thread(target=simulate, daemon=True)
        thread.start()
        try:
            conn, _ = listener.accept()
        except (TimeoutError, socket.timeout):
            raise TimeoutError(f"the simulator did not start within {self.timeout} s; see {folder / 'sim.log'}")
        finally:
            listener.close()
        conn.settimeout(self.timeout)
        self._sims[layer_id] = (layer, conn, thread)

    def run(self, layer_id: int, x_q: np.ndarray) -> np.ndarray:
        try:
            layer, conn, _ = self._sims[layer_id]
        except KeyError:
            raise KeyError(f"unknown layer id {layer_id}") from None
        n = layer.n
        x = np.ascontiguousarray(check_int_input(layer, x_q), dtype="<i4")
        conn.sendall(struct.pack("<I", x.shape[0]) + x.tobytes())
        try:
            body = recv_exact(conn, x.shape[0] * n * 8)
        except ConnectionError:
            raise ConnectionError("the simulator exited mid-request") from None
        return np.frombuffer(body, "<i8").reshape(x.shape[0], n).astype(np.int64)

    def unload(self, layer_id: int) -> None:
        self._stop(layer_id)

    def _stop(self, layer_id: int) -> None:
        sim = self._sims.pop(layer_id, None)
        if sim is not None:
            _, conn, thread = sim
            try:
                conn.sendall(struct.pack("<I", 0))
            except OSError:
                pass
            conn.close()
            thread.join(timeout=30)

    def close(self) -> None:
        for layer_id in list(self._sims):
            self._stop(layer_id)
        self._tmp.cleanup()
