"""Error budget of one layer: where the accelerator's output error comes from.

Stages (outputs on the same inputs, float64):
  "float planes"    x W_hat^T with the artifact's float16 scales
  "S-bit scales"    + fixed-point scales: W_hat rebuilt from a_q 2^-F (S bits)
  "integer output"  + activation quantization: the golden model's integer output (A bits)
Each is reported against the float weights' output x W^T (when the weights are given)
and against "float planes", which isolates what the integer datapath adds; the keys and
table columns say which ("integer output vs float planes").
"""

from __future__ import annotations

import numpy as np
import torch

from ptqtp.golden import GoldenLayer, IntConfig
from ptqtp.methods import dequantize_planes

from .report import random_activations  # noqa: F401 - its old home; callers may import it from here

__all__ = ["error_budget", "budget_sweep", "random_activations"]


def _rel(y: np.ndarray, ref: np.ndarray) -> float:
    den = np.linalg.norm(ref)
    return float(np.linalg.norm(y - ref) / den) if den > 0 else 0.0


def _weights(golden: GoldenLayer, scales: np.ndarray, offsets: np.ndarray | None) -> np.ndarray:
    """(n, d) float64 weights, input column order, from the golden layer's trits and given
    per-group scales (and offsets)."""
    perm = None if golden.perm is None else torch.from_numpy(golden.perm)
    w = dequantize_planes(
        torch.from_numpy(golden.trits),
        torch.from_numpy(scales),
        golden.group_size,
        golden.d,
        torch.float64,
        None if offsets is None else torch.from_numpy(offsets),
        perm,
    )
    return w.numpy()


def error_budget(layer, x: np.ndarray, config: IntConfig, weight=None) -> dict[str, float]:
    """Relative output error ||y - y_ref|| / ||y_ref|| after each stage (see module doc).

    ``layer`` is a :class:`ptqtp.formats.artifact.PackedLayer`; ``weight`` the float (n, d) weights.
    """
    golden = GoldenLayer.from_packed(layer, config)
    x = np.asarray(x, dtype=np.float64)
    offsets = None if layer.offsets is None else layer.offsets.double().numpy()
    y_a = x @ _weights(golden, layer.scales.double().numpy(), offsets).T
    y_b = x @ _weights(golden, golden.dequantized_scales(), golden.dequantized_offsets()).T
    y_c = golden.forward(x, bias=False)
    out = {}
    if weight is not None:
        ref = x @ np.asarray(weight, dtype=np.float64).T
        out.update(
            {
                "float planes vs W": _rel(y_a, ref),
                "S-bit scales vs W": _rel(y_b, ref),
                "integer output vs W": _rel(y_c, ref),
            }
        )
    # What the integer datapath adds on top of the float trit planes:
    out.update({"S-bit scales vs float planes": _rel(y_b, y_a), "integer output vs float planes": _rel(y_c, y_a)})
    return out


def budget_sweep(layer, x, act_bits=(4, 6, 8, 12, 16), scale_bits=(8, 12, 16), weight=None):
    """Rows [A, S, stage errors...] over a grid of A and S."""
    rows = []
    for S in scale_bits:
        for A in act_bits:
            e = error_budget(layer, x, IntConfig(A, S), weight)
            rows.append([A, S, *e.values()])
    return rows, ["A", "S", *e.keys()]
