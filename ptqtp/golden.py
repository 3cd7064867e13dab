"""The golden model: the accelerator's integer arithmetic, bit-exact (docs/SPEC.md section 3).

This module is the one definition. The RTL, the Triton integer kernel and every tool
compare with it; none of them re-derive it.

    Q = 2^(A-1) - 1
    s_x = max|x| / Q  (1 if x == 0);  x_q = clip(rint(x / s_x), -Q, Q), zero-padded to d_pad
    F = floor(log2((2^(S-1) - 1) / max|a|)) over the layer;  a_q = clip(rint(a 2^F), -2^(S-1), 2^(S-1) - 1)
    p[m, r, g, k] = sum_{j in g} T_k[r, j] x_q[m, j]
    acc[m, r] = sum_g sum_k p[m, r, g, k] a_q[k, r, g]      (exact, int64)
             (+ sum_g s[m, g] m_q[r, g],  s[m, g] = sum_{j in g} x_q[m, j], with offsets)
    y[m, r] = acc[m, r] s_x[m] 2^-F (+ bias[r])

PT^2-LLM layers (one plane and a per-group offset m, docs/SPEC.md) add the offset
term; m_q = clip(rint(m 2^F)) shares F with a_q (F is taken over max |a| and |m| together),
and a stored column order ``perm`` is applied to x on the host before quantizing
(s_x does not depend on the order).

``rint`` is round-half-to-even. F is computed exactly: the largest integer with
max|a| 2^F <= 2^(S-1) - 1 (a power-of-two scaling is exact in float64), so |a_q| never
exceeds 2^(S-1) - 1. For an all-zero layer F = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "IntConfig",
    "GoldenLayer",
    "quantize_activations",
    "quantize_scales",
    "scale_exponent",
    "acc_width",
    "group_partial_sums",
    "group_sums",
    "accumulate",
    "check_fits",
    "is_permutation",
]

# float64 matmuls of integers are exact while every partial sum stays below 2^53.
_EXACT_F64 = 2**53


@dataclass(frozen=True)
class IntConfig:
    """Integer datapath parameters: activation bits A and scale bits S.

    Defaults A = 8, S = 16 (SPEC's), confirmed with :func:`ptqtp.workflows.budget.budget_sweep`
    (README): over the float trit planes, S = 16 adds 0.04% relative output error (S = 12:
    0.7%), A = 8 adds 4% on inputs with x10 outlier channels (A = 12: 0.25%).
    """

    act_bits: int = 8
    scale_bits: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.act_bits, int) or not 2 <= self.act_bits <= 16:
            raise ValueError(f"act_bits must be an integer in 2..16, not {self.act_bits!r}")
        if not isinstance(self.scale_bits, int) or not 2 <= self.scale_bits <= 32:
            raise ValueError(f"scale_bits must be an integer in 2..32, not {self.scale_bits!r}")

    @property
    def q_max(self) -> int:
        """Q = 2^(A-1) - 1, the largest activation magnitude."""
        return 2 ** (self.act_bits - 1) - 1


def quantize_activations(x, act_bits: int, d_pad: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric quantization: (x_q int64 [m, d_pad], s_x float64 [m]).

    ``x`` is (m, d) or (d,); a 1-D input gives m = 1. Raises ``ValueError`` on NaN/Inf.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"activations must be (m, d) or (d,), not shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("activations contain NaN/Inf")
    d = x.shape[1]
    d_pad = d if d_pad is None else d_pad
    if d_pad < d:
        raise ValueError(f"d_pad ({d_pad}) is smaller than the activation length {d}")
    Q = 2 ** (act_bits - 1) - 1
    amax = np.abs(x).max(axis=1)
    s_x = np.where(amax > 0, amax / Q, 1.0)
    x_q = np.zeros((x.shape[0], d_pad), dtype=np.int64)
    x_q[:, :d] = np.clip(np.rint(x / s_x[:, None]), -Q, Q).astype(np.int64)
    return x_q, s_x


def scale_exponent(amax: float, scale_bits: int) -> int:
    """F: the largest integer with amax * 2^F <= 2^(S-1) - 1 (0 when amax == 0)."""
    if not (amax >= 0 and math.isfinite(amax)):
        raise ValueError(f"max |a| must be finite, not {amax!r}")
    if amax == 0:
        return 0
    limit = 2 ** (scale_bits - 1) - 1
    F = math.floor(math.log2(limit / amax))
    while math.ldexp(amax, F + 1) <= limit:  # log2 may be off by one near powers of two
        F += 1
    while math.ldexp(amax, F) > limit:
        F -= 1
    return F


def quantize_scales(scales, scale_bits: int) -> tuple[np.ndarray, int]:
    """Per-layer fixed-point scales: (a_q int64, same shape as ``scales``; F)."""
    a = np.asarray(scales, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError("scales contain NaN/Inf")
    F = scale_exponent(float(np.abs(a).max()) if a.size else 0.0, scale_bits)
    lo, hi = -(2 ** (scale_bits - 1)), 2 ** (scale_bits - 1) - 1
    return np.clip(np.rint(np.ldexp(a, F)), lo, hi).astype(np.int64), F


def acc_width(ng: int, group_size: int, act_bits: int, scale_bits: int, terms: int = 2) -> int:
    """ACC = ceil(log2(terms * ng * G * Q * 2^(S-1))) + 1 bits, two's complement; ``terms`` is
    the number of scaled group sums per group: planes, plus one with offsets."""
    bound = terms * ng * group_size * (2 ** (act_bits - 1) - 1) * 2 ** (scale_bits - 1)
    return (bound - 1).bit_length() + 1


def check_fits(acc: np.ndarray, bits: int) -> None:
    """Raise ``OverflowError`` if any value needs more than ``bits`` two's complement bits."""
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    acc = np.asarray(acc)
    bad = (acc < lo) | (acc > hi)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise OverflowError(f"accumulator {int(acc[where])} at {where} does not fit {bits} bits")


def is_permutation(perm, d: int) -> bool:
    """Whether ``perm`` (array-like, e.g. a CPU tensor) holds each of 0..d-1 exactly once: the
    check every stored column order (``tp_perm``, ``perm.hex``, a golden layer's) must pass."""
    p = np.asarray(perm)
    return p.shape == (d,) and np.array_equal(np.sort(p), np.arange(d))


def _int_matmul(a: np.ndarray, b: np.ndarray, bound: int) -> np.ndarray:
    """Exact integer a @ b (batched); float BLAS when every partial sum is exact there
    (|sum| <= bound: float32 below 2^24, float64 below 2^53)."""
    for dtype, limit in ((np.float32, 2**24), (np.float64, _EXACT_F64)):
        if bound < limit:
            return np.matmul(a.astype(dtype), b.astype(dtype)).astype(np.int64)
    return np.matmul(a.astype(np.int64), b.astype(np.int64))


def group_partial_sums(trits: np.ndarray, x_q: np.ndarray, group_size: int) -> np.ndarray:
    """p int64 [m, n, ng, planes] = per-group sums of T_k[r, j] x_q[m, j]."""
    planes, n, d_pad = trits.shape
    m = x_q.shape[0]
    ng = d_pad // group_size
    q = int(np.abs(x_q).max()) if x_q.size else 0
    # strided views (no copy of the planes): a batch of ng products [planes * n, G] @ [G, m]
    t = trits.reshape(planes * n, ng, group_size).transpose(1, 0, 2)
    xg = x_q.reshape(m, ng, group_size).transpose(1, 2, 0)
    p = _int_matmul(t, xg, group_size * q)  # [ng, planes * n, m]
    # C order, as callers expect: a transposed view here made einsum's acc column-major, and a
    # torch tensor over it took another (last-bit different) attention kernel downstream
    return np.ascontiguousarray(p.reshape(ng, planes, n, m).transpose(3, 2, 0, 1))


def group_sums(x_q: np.ndarray, group_size: int) -> np.ndarray:
    """s int64 [m, ng] = per-group sums of x_q (the offset term's operand, shared by all rows)."""
    m, d_pad = x_q.shape
    return x_q.astype(np.int64).reshape(m, d_pad // group_size, group_size).sum(-1)


def accumulate(
    p: np.ndarray, a_q: np.ndarray, s: np.ndarray | None = None, m_q: np.ndarray | None = None
) -> np.ndarray:
    """acc int64 [m, n] = sum over groups and planes of p * a_q (a_q is [planes, n, ng]), plus
    sum over groups of s * m_q (s [m, ng], m_q [n, ng]) when offsets are given."""
    acc = np.einsum("mrgk,krg->mr", p, a_q.astype(np.int64))
    if m_q is not None:
        if s is None:
            raise ValueError("offsets need the activation group sums s")
        acc += s @ m_q.astype(np.int64).T
    return acc


class GoldenLayer:
    """One quantized linear in integer form: trits, fixed-point scales (and offsets), F and ACC.

    Parameters
    ----------
    trits: int8 [planes, n, d_pad] in {-1, 0, 1}, planes 1 to 4.
    scales: float [planes, n, ng], the artifact's (float16) scales.
    in_features: d, the unpadded input width.
    group_size: G.
    config: A and S.
    acc_bits: the declared accumulator width; ``None`` takes ACC from the width rule.
    offsets: float [n, ng] or None, PT^2-LLM's per-group offsets m (same F as the scales).
    perm: int [d] or None; stored column j is input column perm[j].

    Raises
    ------
    ValueError: shapes disagree, perm is not a permutation, or ACC exceeds 64 bits (cannot
        be exact in int64), or the declared ``acc_bits`` is narrower than the worst case needs.
    """

    def __init__(
        self,
        trits,
        scales,
        in_features: int,
        group_size: int,
        config: IntConfig | None = None,
        acc_bits: int | None = None,
        bias=None,
        offsets=None,
        perm=None,
    ):
        self.config = config or IntConfig()
        self.trits = np.asarray(trits, dtype=np.int8)
        scales = np.asarray(scales, dtype=np.float64)
        if self.trits.ndim != 3 or self.trits.shape[0] not in (1, 2, 3, 4):
            raise ValueError(f"trits must be [planes, n, d_pad] with 1 to 4 planes, not shape {self.trits.shape}")
        planes, n, d_pad = self.trits.shape
        if d_pad % group_size or scales.shape != (planes, n, d_pad // group_size):
            raise ValueError(f"scales shape {scales.shape} does not match trits {self.trits.shape} with G={group_size}")
        if not 0 < in_features <= d_pad or d_pad - in_features >= group_size:
            raise ValueError(f"in_features {in_features} does not fit d_pad {d_pad} with G={group_size}")
        self.n, self.d, self.d_pad, self.group_size, self.planes = n, in_features, d_pad, group_size, planes
        self.ng = d_pad // group_size
        self.m_q = None
        if offsets is None:
            self.a_q, self.F = quantize_scales(scales, self.config.scale_bits)
        else:
            offsets = np.asarray(offsets, dtype=np.float64)
            if offsets.shape != (n, self.ng):
                raise ValueError(f"offsets shape {offsets.shape} must be (n, ng) = {(n, self.ng)}")
            both, self.F = quantize_scales(np.concatenate([scales, offsets[None]]), self.config.scale_bits)
            self.a_q, self.m_q = both[:planes], both[planes]
        self.perm = None
        if perm is not None:
            self.perm = np.asarray(perm, dtype=np.int64)
            if not is_permutation(self.perm, in_features):
                raise ValueError(f"perm must be a permutation of 0..{in_features - 1}")
        self.terms = planes + (self.m_q is not None)
        self.acc_bits = acc_width(self.ng, group_size, self.config.act_bits, self.config.scale_bits, self.terms)
        if self.acc_bits > 64:
            raise ValueError(f"ACC = {self.acc_bits} bits exceeds int64; lower A, S or the layer width")
        if acc_bits is not None and acc_bits < self.acc_bits:
            raise ValueError(f"declared accumulator width {acc_bits} < {self.acc_bits} bits the worst case needs")
        self.bias = None if bias is None else np.asarray(bias, dtype=np.float64)

    @classmethod
    def from_fixed_point(
        cls, trits, a_q, F: int, in_features: int, group_size: int, config: IntConfig | None = None, m_q=None, perm=None
    ) -> GoldenLayer:
        """From fixed-point scales (a hardware image, a wire message): the scales a_q 2^-F (and
        offsets m_q 2^-F) must give back exactly a_q, m_q and F, else ``ValueError``."""
        a_q = np.asarray(a_q, dtype=np.int64)
        m_q = None if m_q is None else np.asarray(m_q, dtype=np.int64)
        g = cls(
            trits,
            np.ldexp(a_q.astype(np.float64), -F),
            in_features,
            group_size,
            config,
            offsets=None if m_q is None else np.ldexp(m_q.astype(np.float64), -F),
            perm=perm,
        )
        if (
            g.F != F
            or not np.array_equal(g.a_q, a_q)
            or (m_q is not None and (g.m_q is None or not np.array_equal(g.m_q, m_q)))
        ):
            raise ValueError(
                f"a_q and F={F} are not normalised (max |a_q|, |m_q| must lie in (2^(S-2), 2^(S-1) - 1]; "
                f"the golden model derives F={g.F})"
            )
        return g

    @classmethod
    def from_packed(cls, layer, config: IntConfig | None = None) -> GoldenLayer:
        """From a packed layer: an artifact's ``PackedLayer`` or a ``TritPlaneLinear`` (both give
        ``trits()`` and hold scales, offsets, perm, bias, in_features and group_size)."""

        def host(t):  # floats widen to float64 exactly (NumPy has no bfloat16)
            if t is None:
                return None
            t = t.detach().cpu()
            return (t.double() if t.is_floating_point() else t).numpy()

        return cls(
            host(layer.trits()),
            host(layer.scales),
            layer.in_features,
            layer.group_size,
            config,
            bias=host(layer.bias),
            offsets=host(layer.offsets),
            perm=host(layer.perm),
        )

    def quantize_input(self, x) -> tuple[np.ndarray, np.ndarray]:
        """(x_q int64 [m, d_pad], s_x [m]) for activations x (m, d), in stored column order."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.d:
            raise ValueError(f"activations have {x.shape[-1]} features, the layer takes {self.d}")
        if self.perm is not None:
            x = x[..., self.perm]
        return quantize_activations(x, self.config.act_bits, self.d_pad)

    def acc(self, x_q) -> np.ndarray:
        """Exact accumulators int64 [m, n] for already-quantized, padded x_q [m, d_pad]."""
        x_q = np.asarray(x_q)
        if x_q.ndim != 2 or x_q.shape[1] != self.d_pad:
            raise ValueError(f"x_q must be (m, {self.d_pad}), not {x_q.shape}")
        Q = self.config.q_max
        if np.abs(x_q).max(initial=0) > Q:
            raise ValueError(f"x_q values exceed Q = {Q}")
        x_q = x_q.astype(np.int64)
        p = group_partial_sums(self.trits, x_q, self.group_size)
        s = None if self.m_q is None else group_sums(x_q, self.group_size)
        acc = accumulate(p, self.a_q, s, self.m_q)
        check_fits(acc, self.acc_bits)
        return acc

    def output(self, acc: np.ndarray, s_x: np.ndarray, bias: bool = True) -> np.ndarray:
        """y = acc * s_x * 2^-F (+ bias), float64."""
        y = np.ldexp(acc.astype(np.float64) * s_x[:, None], -self.F)
        return y + self.bias if bias and self.bias is not None else y

    def forward(self, x, bias: bool = True) -> np.ndarray:
        """The accelerator's real output for float activations x (m, d)."""
        x_q, s_x = self.quantize_input(x)
        return self.output(self.acc(x_q), s_x, bias)

    def dequantized_scales(self) -> np.ndarray:
        """a_q 2^-F: the scales as the hardware sees them."""
        return np.ldexp(self.a_q.astype(np.float64), -self.F)

    def dequantized_offsets(self) -> np.ndarray | None:
        """m_q 2^-F: the offsets as the hardware sees them (None without offsets)."""
        return None if self.m_q is None else np.ldexp(self.m_q.astype(np.float64), -self.F)
