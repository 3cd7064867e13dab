"""The ``rtl`` backend: every loaded layer on ONE Verilator build of the streaming engine.

Layers are collected by ``load``; the first ``run`` writes them into a model image (the
simulated DRAM) and starts one simulation of the engine: by default the compiled harness
(``ptqtp.sim.compiled``, in this process, about a million cycles a second), or with
``bench="cocotb"`` the cocotb bench's ``serve_host`` test answering over a loopback socket
(the verification bench, ~40x slower; same results and cycles). A run of m vectors goes
through the engine in batches of at most M, so a prefill of many tokens shares each weight
pass. ``cycles`` keeps the simulated core cycles per layer id, so a caller can report
cycles per token and per layer type.
"""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import numpy as np

from ptqtp.formats.model_image import read_model_image, write_model_image
from ptqtp.formats.wire import recv_exact
from ptqtp.golden import GoldenLayer
from ptqtp.hdl.contract import BenchEnv
from ptqtp.hdl.engine_model import EngineParams
from ptqtp.sim.runner import ENGINE_TOP, build, engine_config, serve_in_thread

from .backends import Backend, check_int_input

__all__ = ["EngineBackend", "image_runs"]


def image_runs(layers: dict[int, GoldenLayer], params: EngineParams, folder: Path):
    """Write ``layers`` into a model image laid out for ``params`` in ``folder``; the image
    and each layer id's run descriptor {name, n, chunks, passes, addr, beats}."""
    ids = sorted(layers)
    image = read_model_image(write_model_image(folder, {f"layer{i}": layers[i] for i in ids}, params.layout))
    entries = {e["name"]: e for e in image.entries}
    runs = {
        i: {
            "name": f"layer{i}",
            "n": layers[i].n,
            "chunks": layers[i].d_pad // params.lanes,
            "passes": params.layout.passes(layers[i].planes),
            "addr": entries[f"layer{i}"]["byte_offset"],
            "beats": entries[f"layer{i}"]["beats"],
        }
        for i in ids
    }
    return image, runs


class EngineBackend(Backend):
    """Parameters: ``params`` (:class:`EngineParams`, or its fields as keyword arguments;
    the defaults are EngineParams'), ``timeout`` seconds per call."""

    name = "rtl"

    def __init__(
        self, params: EngineParams | None = None, timeout: float = 3600.0, bench: str = "compiled", **engine_kwargs
    ):
        if bench not in ("compiled", "cocotb"):
            raise ValueError(f"bench must be 'compiled' or 'cocotb', not {bench!r}")
        self.params = params or EngineParams(**engine_kwargs)
        self.timeout = timeout
        self.bench = bench
        self.layers: dict[int, GoldenLayer] = {}
        self.cycles: dict[int, int] = {}
        self.vectors: dict[int, int] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="ptqtp-engine-")
        self._sim = None  # (conn, thread, index of layer id)

    def device_info(self) -> dict:
        from ptqtp.hdl.contract import ENGINE_ID

        return {
            "kind": self.name,
            "id": ENGINE_ID,
            "params": self.params.params_word(),
            "layout": self.params.layout_word(),
        }

    def load(self, layer_id: int, layer: GoldenLayer) -> None:
        self.params.check_layer(layer.n, layer.d_pad, layer.planes, layer.m_q is not None)
        self._stop()  # a new layer needs a new image
        self.layers[layer_id] = layer

    def unload(self, layer_id: int) -> None:
        if self.layers.pop(layer_id, None) is not None:
            self._stop()  # the image changes

    def run(self, layer_id: int, x_q: np.ndarray) -> np.ndarray:
        if layer_id not in self.layers:
            raise KeyError(f"unknown layer id {layer_id}")
        layer = self.layers[layer_id]
        x = np.ascontiguousarray(check_int_input(layer, x_q), dtype="<i4")
        if self._sim is None:
            self._start()
        if self.bench == "compiled":
            engine, runs = self._sim
            acc, cycles = engine.run_layer(runs[layer_id], x, self.params.vectors)
        else:
            acc, cycles = self._request(self._sim, layer_id, layer, x)
        self.cycles[layer_id] = self.cycles.get(layer_id, 0) + cycles
        self.vectors[layer_id] = self.vectors.get(layer_id, 0) + len(x)
        return acc

    def _request(self, sim, layer_id: int, layer: GoldenLayer, x: np.ndarray) -> tuple[np.ndarray, int]:
        """One request to the cocotb bench's serve_host over its socket: (accumulators, cycles)."""
        conn, _, index = sim
        conn.sendall(struct.pack("<II", index[layer_id], len(x)) + x.tobytes())
        try:
            (cycles,) = struct.unpack("<Q", recv_exact(conn, 8))
            body = recv_exact(conn, len(x) * layer.n * 8)
        except ConnectionError:
            raise ConnectionError(f"the engine simulator exited mid-request; see {self._folder / 'sim.log'}") from None
        return np.frombuffer(body, "<i8").reshape(len(x), layer.n).astype(np.int64), cycles

    @property
    def _folder(self) -> Path:
        return Path(self._tmp.name)

    def _start(self) -> None:
        from ptqtp.hdl.engine import TritEngine  # Amaranth and cocotb: heavy, optional
        from ptqtp.hdl.synth import to_verilog

        ids = sorted(self.layers)
        image, runs = image_runs(self.layers, self.params, self._folder / "image")
        runs = [runs[i] for i in ids]
        verilog = to_verilog(TritEngine(self.params), name=ENGINE_TOP)
        if self.bench == "compiled":
            from ptqtp.sim.compiled import CompiledEngine

            engine = CompiledEngine(verilog, engine_config(self.params), image.blob_bytes())
            self._sim = (engine, dict(zip(ids, runs)))
            return
        np.savez(self._folder / "job.npz", image=np.frombuffer(image.blob_bytes(), np.uint8))
        (self._folder / "cfg.json").write_text(json.dumps({**engine_config(self.params), "layers": runs}))
        build_dir = build(verilog, top=ENGINE_TOP)
        env = {BenchEnv.JOB: str(self._folder / "job.npz"), BenchEnv.CFG: str(self._folder / "cfg.json")}
        conn, thread = serve_in_thread(build_dir, self._folder, env, self.timeout)
        self._sim = (conn, thread, {i: k for k, i in enumerate(ids)})

    def _stop(self) -> None:
        if self._sim is not None and self.bench == "compiled":
            self._sim[0].close()
            self._sim = None
        if self._sim is not None:
            conn, thread, _ = self._sim
            try:
                conn.sendall(struct.pack("<II", 0, 0))
            except OSError:
                pass
            conn.close()
            thread.join(timeout=60)
            self._sim = None

    def close(self) -> None:
        self._stop()
        self._tmp.cleanup()
