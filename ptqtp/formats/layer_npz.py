"""One golden layer in a ``.npz`` file: how one process hands a layer to another (the
Verilator bench runs in its own process).

Arrays: ``trits`` int8 [planes, n, d_pad], ``a_q`` int64 [planes, n, ng], optional ``m_q``
int64 [n, ng] and ``perm`` int64 [d]; ``ints`` int64 [d, G, A, S, F]. Reading rebuilds the
layer with :meth:`GoldenLayer.from_fixed_point`, which checks every field.
"""

from __future__ import annotations

import os

import numpy as np

from ptqtp.golden import GoldenLayer, IntConfig

__all__ = ["save_layer", "load_layer"]


def save_layer(path: str | os.PathLike, layer: GoldenLayer) -> None:
    arrays = {"trits": layer.trits, "a_q": layer.a_q,
              "ints": np.array([layer.d, layer.group_size, layer.config.act_bits, layer.config.scale_bits, layer.F],
                               dtype=np.int64)}
    if layer.m_q is not None:
        arrays["m_q"] = layer.m_q
    if layer.perm is not None:
        arrays["perm"] = layer.perm
    np.savez(path, **arrays)


def load_layer(path: str | os.PathLike) -> GoldenLayer:
    with np.load(path) as f:
        d, G, A, S, F = (int(v) for v in f["ints"])
        return GoldenLayer.from_fixed_point(f["trits"], f["a_q"], F, d, G, IntConfig(A, S),
                                            f["m_q"] if "m_q" in f else None, f["perm"] if "perm" in f else None)
