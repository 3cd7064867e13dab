"""Backends that execute a quantized layer on integer inputs: acc = golden accumulator.

Every backend takes the same layer (trits, a_q, optional offsets m_q and the integer
parameters, as in a hardware image) and integer activations x_q (m, d_pad) in stored column
order (a PT^2-LLM permutation is applied by the host), and returns acc int64 (m, n).
They must agree with the golden model bit for bit:

    golden   ptqtp.golden (NumPy), the definition
    triton   the Triton integer kernel (GPU, or its interpreter on the CPU)
    rtl      the generated Verilog in Verilator, one simulator kept running per layer
             (ptqtp.sim.rtl_backend)
    remote   a server speaking ptqtp.protocol over TCP (a board's host software, or
             ``ptqtp serve`` answering from any local backend)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .golden import GoldenLayer, IntConfig

__all__ = ["LayerSpec", "Backend", "GoldenBackend", "TritonBackend", "make_backend", "BACKENDS"]

BACKENDS = ("golden", "triton", "rtl", "remote")


@dataclass
class LayerSpec:
    """What every backend needs for one layer: trits [planes, n, d_pad], a_q [planes, n, ng],
    d, G, A, S, F and, for PT^2-LLM layers, offsets m_q [n, ng]."""

    trits: np.ndarray
    a_q: np.ndarray
    d: int
    group_size: int
    act_bits: int
    scale_bits: int
    F: int
    m_q: np.ndarray | None = None

    @classmethod
    def from_golden(cls, g: GoldenLayer) -> LayerSpec:
        return cls(g.trits, g.a_q, g.d, g.group_size, g.config.act_bits, g.config.scale_bits, g.F, g.m_q)

    def golden(self) -> GoldenLayer:
        """The golden model of this layer (scales a_q 2^-F give back exactly a_q and F); it
        takes x_q in stored column order, so it carries no permutation."""
        return GoldenLayer.from_fixed_point(self.trits, self.a_q, self.F, self.d, self.group_size,
                                            IntConfig(self.act_bits, self.scale_bits), self.m_q)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.trits.shape[1]), int(self.trits.shape[2])


class Backend:
    """Load layers once, then run many batches. ``run`` returns acc int64 (m, n)."""

    name = "base"

    def load(self, layer_id: int, spec: LayerSpec) -> None:
        raise NotImplementedError

    def run(self, layer_id: int, x_q: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _LocalBackend(Backend):
    def __init__(self):
        self.layers: dict[int, object] = {}

    def _layer(self, layer_id: int):
        try:
            return self.layers[layer_id]
        except KeyError:
            raise KeyError(f"unknown layer id {layer_id}") from None


class GoldenBackend(_LocalBackend):
    """The golden model itself."""

    name = "golden"

    def load(self, layer_id: int, spec: LayerSpec) -> None:
        self.layers[layer_id] = spec.golden()

    def run(self, layer_id: int, x_q: np.ndarray) -> np.ndarray:
        return self._layer(layer_id).acc(np.asarray(x_q, dtype=np.int64))


class TritonBackend(_LocalBackend):
    """The Triton integer kernel; CUDA when available, else the interpreter (set
    ``TRITON_INTERPRET=1`` before Triton is first imported)."""

    name = "triton"

    def __init__(self, device: str | None = None):
        import torch

        super().__init__()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    def load(self, layer_id: int, spec: LayerSpec) -> None:
        import torch

        from .packing import pack_trits

        spec.golden()  # validates the layer
        codes = pack_trits(torch.from_numpy(np.ascontiguousarray(spec.trits, dtype=np.int8)))
        m_q = None if spec.m_q is None else torch.from_numpy(spec.m_q).to(self.device)
        self.layers[layer_id] = (spec, codes.to(self.device), torch.from_numpy(spec.a_q).to(self.device), m_q)

    def run(self, layer_id: int, x_q: np.ndarray) -> np.ndarray:
        import torch

        from .kernels import trit_matmul_int

        spec, codes, a_q, m_q = self._layer(layer_id)
        Q = 2 ** (spec.act_bits - 1) - 1
        x = np.asarray(x_q, dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != spec.shape[1] or np.abs(x).max(initial=0) > Q:
            raise ValueError(f"x_q must be (m, {spec.shape[1]}) integers in [-{Q}, {Q}]")
        acc = trit_matmul_int(torch.from_numpy(x).to(self.device), codes, a_q, spec.group_size, m_q)
        return acc.cpu().numpy()


def make_backend(name: str, **kwargs) -> Backend:
    """A backend by name: ``golden``, ``triton``, ``rtl`` (kwargs: lanes, rows) or ``remote``
    (kwargs: host, port, timeout)."""
    if name == "golden":
        return GoldenBackend()
    if name == "triton":
        return TritonBackend(**kwargs)
    if name == "rtl":
        from .sim.rtl_backend import RtlBackend

        return RtlBackend(**kwargs)
    if name == "remote":
        from .protocol import RemoteBackend

        return RemoteBackend(**kwargs)
    raise ValueError(f"backend must be one of {BACKENDS}, not {name!r}")
