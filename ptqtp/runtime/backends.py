"""Backends that execute a quantized layer on integer inputs: acc = golden accumulator.

Every backend loads a :class:`ptqtp.golden.GoldenLayer` (trits, a_q, optional offsets m_q
and the integer parameters) and takes integer activations x_q (m, d_pad) in stored column
order (a PT^2-LLM permutation is applied by the host); it returns acc int64 (m, n), equal
to the golden model's bit for bit:

    golden   ptqtp.golden (NumPy), the definition
    triton   the Triton integer kernel (GPU, or its interpreter on the CPU)
    rtl      the generated Verilog in Verilator (ptqtp.runtime.rtl)
    remote   a server speaking the wire protocol over TCP (ptqtp.runtime.client)
"""

from __future__ import annotations

import numpy as np
import torch

from ptqtp.formats.packing import pack_trits
from ptqtp.golden import GoldenLayer

__all__ = ["Backend", "GoldenBackend", "TritonBackend", "check_int_input"]


def check_int_input(layer: GoldenLayer, x_q) -> np.ndarray:
    """x_q as int64 (m >= 1, d_pad) within [-Q, Q], else ``ValueError``."""
    Q = layer.config.q_max
    x = np.asarray(x_q)
    if (
        x.ndim != 2
        or x.shape[0] == 0
        or x.shape[1] != layer.d_pad
        or not np.issubdtype(x.dtype, np.integer)
        or np.abs(x).max(initial=0) > Q
    ):
        raise ValueError(f"x_q must be (m >= 1, {layer.d_pad}) integers in [-{Q}, {Q}]")
    return x.astype(np.int64)


class Backend:
    """Load layers once, then run many batches. ``run`` returns acc int64 (m, n)."""

    name = "base"
    #: Whether ``load``/``run`` may be called from several threads at once (a simulator
    #: process may not: the server then serialises calls to it).
    thread_safe = False

    def load(self, layer_id: int, layer: GoldenLayer) -> None:
        raise NotImplementedError

    def unload(self, layer_id: int) -> None:
        """Free a loaded layer (unknown ids are ignored)."""

    def run(self, layer_id: int, x_q: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def device_info(self) -> dict:
        """What identifies the device behind this backend (a client re-checks it after a
        reconnect): its kind, and for hardware its ID and configuration words."""
        return {"kind": self.name}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _LocalBackend(Backend):
    def __init__(self):
        self.layers: dict[int, object] = {}

    def unload(self, layer_id: int) -> None:
        self.layers.pop(layer_id, None)

    def _layer(self, layer_id: int):
        try:
            return self.layers[layer_id]
        except KeyError:
            raise KeyError(f"unknown layer id {layer_id}") from None


class GoldenBackend(_LocalBackend):
    """The golden model itself."""

    name = "golden"
    thread_safe = True  # NumPy on immutable layers; dict updates are atomic

    def load(self, layer_id: int, layer: GoldenLayer) -> None:
        self.layers[layer_id] = layer

    def run(self, layer_id: int, x_q: np.ndarray) -> np.ndarray:
        return self._layer(layer_id).acc(np.asarray(x_q, dtype=np.int64))


class TritonBackend(_LocalBackend):
    """The Triton integer kernel; CUDA when available, else Triton's interpreter."""

    name = "triton"

    def __init__(self, device: str | None = None):
        super().__init__()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    def load(self, layer_id: int, layer: GoldenLayer) -> None:
        codes = pack_trits(torch.from_numpy(np.ascontiguousarray(layer.trits, dtype=np.int8)))
        m_q = None if layer.m_q is None else torch.from_numpy(layer.m_q).to(self.device)
        self.layers[layer_id] = (layer, codes.to(self.device), torch.from_numpy(layer.a_q).to(self.device), m_q)

    def run(self, layer_id: int, x_q: np.ndarray) -> np.ndarray:
        from ptqtp.kernels import trit_matmul_int  # imports Triton on first use

        layer, codes, a_q, m_q = self._layer(layer_id)
        x = check_int_input(layer, x_q)
        acc = trit_matmul_int(torch.from_numpy(x).to(self.device), codes, a_q, layer.group_size, m_q)
        return acc.cpu().numpy()
