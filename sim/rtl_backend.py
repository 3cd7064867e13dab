"""The ``rtl`` backend: the generated Verilog in Verilator, kept running between calls.

``load`` writes the layer's hardware image, generates and builds the Verilog (cached by
its hash) and starts one simulator per layer running the bench's ``serve_host`` test,
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

from ptqtp.backends import Backend, LayerSpec
from ptqtp.protocol import recv_exact

__all__ = ["RtlBackend"]


class RtlBackend(Backend):
    """Parameters: ``lanes`` P and ``rows`` R of the accelerator; ``timeout`` seconds per call."""

    name = "rtl"

    def __init__(self, lanes: int = 16, rows: int = 1, timeout: float = 600.0):
        self.lanes, self.rows, self.timeout = lanes, rows, timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="ptqtp-rtl-")
        self._sims: dict[int, tuple] = {}

    def load(self, layer_id: int, spec: LayerSpec) -> None:
        from ptqtp.hdl.synth import to_verilog
        from ptqtp.hdl.top import TritMatmul
        from ptqtp.hwimage import read_image, write_image

        from .runner import TOP, build, verilator_env

        self._stop(layer_id)
        folder = write_image(Path(self._tmp.name) / f"layer{layer_id}", spec.golden(), self.lanes, f"layer{layer_id}",
                             "0" * 64)
        verilog = to_verilog(TritMatmul.from_image(read_image(folder), rows=self.rows))
        build_dir = build(verilog)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(self.timeout)
        env = {"PTQTP_IMAGE": str(folder), "PTQTP_ROWS": str(self.rows),
               "PTQTP_RTL_PORT": str(listener.getsockname()[1]), **verilator_env()}

        def simulate():
            from cocotb_tools.runner import get_runner

            get_runner("verilator").test(test_module="ptqtp.sim.cocotb_bench", hdl_toplevel=TOP,
                                         hdl_toplevel_lang="verilog", testcase="serve_host", build_dir=build_dir,
                                         test_dir=folder, extra_env=env, log_file=folder / "sim.log")

        thread = threading.Thread(target=simulate, daemon=True)
        thread.start()
        try:
            conn, _ = listener.accept()
        except (TimeoutError, socket.timeout):
            raise TimeoutError(f"the simulator did not start within {self.timeout} s; see {folder / 'sim.log'}")
        finally:
            listener.close()
        conn.settimeout(self.timeout)
        self._sims[layer_id] = (spec, conn, thread)

    def run(self, layer_id: int, x_q: np.ndarray) -> np.ndarray:
        try:
            spec, conn, _ = self._sims[layer_id]
        except KeyError:
            raise KeyError(f"unknown layer id {layer_id}") from None
        n, d_pad = spec.shape
        Q = 2 ** (spec.act_bits - 1) - 1
        x = np.ascontiguousarray(x_q, dtype="<i4")
        if x.ndim != 2 or x.shape[1] != d_pad or x.shape[0] == 0 or np.abs(x).max(initial=0) > Q:
            raise ValueError(f"x_q must be (m >= 1, {d_pad}) integers in [-{Q}, {Q}]")
        conn.sendall(struct.pack("<I", x.shape[0]) + x.tobytes())
        try:
            body = recv_exact(conn, x.shape[0] * n * 8)
        except ConnectionError:
            raise ConnectionError("the simulator exited mid-request") from None
        return np.frombuffer(body, "<i8").reshape(x.shape[0], n).astype(np.int64)

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
