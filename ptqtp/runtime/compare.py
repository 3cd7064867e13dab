"""One layer, the same inputs, every backend: bit-exact agreement and float errors."""

from __future__ import annotations

import time

import numpy as np
import torch

from ptqtp.golden import GoldenLayer
from ptqtp.kernels import TritPlaneLinear

from .registry import make_backend

__all__ = ["compare_layer"]


def compare_layer(
    layer, x: np.ndarray, golden: GoldenLayer, backends=("golden", "triton", "rtl"), backend_kwargs: dict | None = None
) -> list[dict]:
    """Rows: each integer backend against the golden accumulator (count of equal outputs,
    first mismatch), then the float paths against the float64 dequantized reference.

    ``layer`` is a :class:`ptqtp.formats.artifact.PackedLayer`; ``x`` float activations (m, d).
    """
    backend_kwargs = backend_kwargs or {}
    x_q, s_x = golden.quantize_input(x)
    expect = golden.acc(x_q)
    rows = []
    for name in backends:
        t0 = time.perf_counter()
        with make_backend(name, **backend_kwargs.get(name, {})) as b:
            b.load(0, golden)
            acc = b.run(0, x_q)
        equal = acc == expect
        first = None
        if not equal.all():
            v, r = (int(i) for i in np.argwhere(~equal)[0])
            first = f"vector {v}, row {r}: {int(acc[v, r])} != {int(expect[v, r])}"
        rows.append(
            {
                "path": f"{name} (integer)",
                "bit_exact": f"{int(equal.sum())}/{equal.size}",
                "first_mismatch": first or "-",
                "rel_error": "-",
                "seconds": time.perf_counter() - t0,
            }
        )
    ref = x.astype(np.float64) @ layer.dequantize(torch.float64).numpy().T
    if layer.bias is not None:
        ref = ref + layer.bias.double().numpy()
    floats = {"golden output (A/S bits)": golden.output(expect, s_x)}
    if "triton" in backends:
        triton = TritPlaneLinear.from_packed(layer, backend="triton")  # permutation, offsets and bias included
        floats["triton float (fp32)"] = triton(torch.from_numpy(x).float()).double().numpy()
    for name, y in floats.items():
        rows.append(
            {
                "path": name,
                "bit_exact": "-",
                "first_mismatch": "-",
                "rel_error": float(np.linalg.norm(y - ref) / np.linalg.norm(ref)),
                "seconds": 0.0,
            }
        )
    return rows
