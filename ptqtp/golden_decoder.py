"""The golden integer decoder: every operation of a token, from token id to logits, in integers
(docs/SPEC.md section 7). One definition; the RTL decoder units compare with it.

Number formats (widths and rounding in SPEC section 7):
  V   a vector of int32 fixed-point values with FV = 14 fractional bits (Q17.14), saturating;
      the residual stream and every linear's output
  S   a per-vector scalar m 2^e, m a 16-bit mantissa in [2^15, 2^16) (or 0); activation and
      KV-cache scales, the norm's 1/rms, attention's 1/sum
  x_q the engine's A-bit activations with an S scale (the trit-plane linears are
      :class:`ptqtp.golden.GoldenLayer`'s integer arithmetic, unchanged)
  KV  int8 per (token, kv head) with an S scale
  int8 rows with fixed-point row scales (S bits, one exponent per table): the embedding
      table and the lm_head (tied models hold one table)

Rounding is round-half-up (add half, arithmetic shift right) everywhere; every product is
checked to stay below 2^62 so that NumPy's int64 is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from ptqtp.golden import GoldenLayer, quantize_scales

__all__ = [
    "FV",
    "DecoderFormat",
    "DecoderArch",
    "IntRows",
    "DecoderBlock",
    "DecoderWeights",
    "KVCache",
    "GoldenDecoder",
    "quantize_vector",
    "normalize_rows",
    "rsqrt_scalar",
    "shift_round",
    "Scalar",
    "rope_table",
    "exp2_table",
    "softmax2",
    "score_scale",
    "scores_log2",
    "weighted_values",
    "sigmoid_table",
]

FV = 14  # fractional bits of V vectors
V_MAX = 2**31 - 1
MANT = 16  # S mantissa bits
_LIMIT = 2**62


def bitlen(a: np.ndarray) -> np.ndarray:
    """Bit length of each non-negative int64 (< 2^53: float64 frexp is exact there)."""
    a = np.asarray(a, dtype=np.int64)
    if a.size and int(a.max()) >= 2**53:
        raise OverflowError("bitlen: value >= 2^53")
    return np.frexp(a.astype(np.float64))[1].astype(np.int64)


def shift_round(v: np.ndarray, s) -> np.ndarray:
    """round-half-up(v / 2^s) for s > 0, v * 2^-s for s <= 0 (s broadcasts against v)."""
    v = np.asarray(v, dtype=np.int64)
    s = np.asarray(s, dtype=np.int64)
    right = np.clip(s, 0, 62)
    half = np.where(right > 0, np.left_shift(np.int64(1), np.maximum(right - 1, 0)), 0)
    down = np.right_shift(v + half, right)
    left = np.clip(-s, 0, 62)
    if (s < 0).any():
        room = 62 - bitlen(np.abs(np.broadcast_to(v, np.broadcast(v, s).shape)))
        if ((left > room) & (s < 0) & (v != 0)).any():
            raise OverflowError("shift_round: left shift overflows int64")
    return np.where(s > 0, down, np.left_shift(v, left))


def _check(prod_bits: np.ndarray | int, what: str) -> None:
    if np.max(prod_bits) > 62:
        raise OverflowError(f"{what}: product needs {int(np.max(prod_bits))} bits (> 62)")


def saturate(v: np.ndarray) -> np.ndarray:
    return np.clip(v, -V_MAX, V_MAX)


def imatmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact int64 a @ b; through float64 BLAS when every partial sum is below 2^53."""
    inner = a.shape[-1]
    amax = int(np.abs(a, dtype=np.int64).max(initial=0))  # int64: |-128| in an int8 array
    bmax = int(np.abs(b, dtype=np.int64).max(initial=0))
    for dtype, limit in ((np.float32, 2**24), (np.float64, 2**53)):
        if amax * bmax * inner < limit:
            return (a.astype(dtype) @ b.astype(dtype)).astype(np.int64)
    if amax.bit_length() + bmax.bit_length() + inner.bit_length() > 62:
        raise OverflowError("imatmul: sums may exceed int64")
    return a.astype(np.int64) @ b.astype(np.int64)


@dataclass(frozen=True)
class Scalar:
    """Per-row S scalars: value m 2^e (m int64 [rows], 0 or in [2^15, 2^16); e int64 [rows])."""

    m: np.ndarray
    e: np.ndarray

    @staticmethod
    def normalize(t: np.ndarray, e: np.ndarray) -> Scalar:
        """t 2^e (t >= 0, int64) rounded to a 16-bit mantissa."""
        t = np.asarray(t, dtype=np.int64)
        sh = np.where(t > 0, bitlen(t) - MANT, 0)
        m = shift_round(t, sh)
        carry = m >= 2**MANT  # rounding up to 2^16
        m = np.where(carry, m >> 1, m)
        e = np.asarray(e, dtype=np.int64) + sh + carry
        return Scalar(m, np.where(m > 0, e, 0))

    def __mul__(self, other: Scalar) -> Scalar:
        return Scalar.normalize(self.m * other.m, self.e + other.e)

    def shifted(self, k) -> Scalar:
        """This scalar times 2^k."""
        return Scalar(self.m, np.where(self.m > 0, self.e + k, 0))

    def apply(self, v: np.ndarray, frac: int = FV) -> np.ndarray:
        """round(v * value * 2^frac) per row (v is [rows, n]); saturated to V's range."""
        v = np.asarray(v, dtype=np.int64)
        _check(bitlen(np.abs(v)).max(initial=0) + MANT, "scalar apply")
        return saturate(shift_round(v * self.m[:, None], -(self.e[:, None] + frac)))

    def value(self) -> np.ndarray:
        return np.ldexp(self.m.astype(np.float64), self.e)


def quantize_vector(v: np.ndarray, bits: int, frac: int) -> tuple[np.ndarray, Scalar]:
    """Per-row symmetric quantization of integer vectors v [rows, n] (value v 2^-frac) to
    ``bits``: (q int64, s) with q ~ v 2^-frac / s. Rows are normalized to 24-bit magnitudes,
    q = round(vn R 2^-40) with R = floor(Q 2^40 / max|vn|); s = max|vn| 2^sh / Q to 16 bits."""
    v = np.asarray(v, dtype=np.int64)
    Q = 2 ** (bits - 1) - 1
    vn, sh = normalize_rows(v)
    an = np.abs(vn).max(axis=1)
    R = np.where(an > 0, (np.int64(Q) << 40) // np.maximum(an, 1), 0)
    q = np.clip(shift_round(vn * R[:, None], 40), -Q, Q)
    s = Scalar.normalize((an << 20) // Q, sh - 20 - frac)
    return q, s


def normalize_rows(h: np.ndarray, bits: int = 24, up: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(hn, sh): h = hn 2^sh per row, max |hn| of ``bits`` bits (rounded; shifted left if
    smaller, unless ``up`` is False: then sh >= 0 and small rows stay as they are)."""
    amax = np.abs(h).max(axis=1)
    sh = np.where(amax > 0, bitlen(amax) - bits, 0)
    if not up:
        sh = np.maximum(sh, 0)
    return shift_round(h, sh[:, None]), sh


def rsqrt_scalar(hn: np.ndarray, sh: np.ndarray, eps: float) -> Scalar:
    """1 / sqrt(mean(h^2) + eps) per row of V vectors h = hn 2^sh [rows, d] (hn of at most
    24 bits, sh >= 0: ``normalize_rows(h, up=False)``, so the eps term stays within 2^(28 + log2 d)):
    v = sum hn^2 + round(eps d 2^(2 FV - 2 sh)), r = isqrt(floor(d 2^80 / v)), value
    r 2^(FV - sh - 40)."""
    rows, d = hn.shape
    sumsq = (hn * hn).sum(axis=1)
    r = np.empty(rows, dtype=np.int64)
    eps_f = Fraction(eps)
    for i in range(rows):
        k = 2 * FV - 2 * int(sh[i])
        term = eps_f * d * (Fraction(2) ** k)
        v = int(sumsq[i]) + math.floor(term + Fraction(1, 2))
        r[i] = math.isqrt((d << 80) // max(v, 1))
    return Scalar.normalize(r, FV - sh - 40)


@dataclass(frozen=True)
class DecoderFormat:
    """The decoder's number formats (SPEC section 7): A-bit activations into the engine, S-bit
    scales, KV-cache bits, the softmax's fractional bits and table sizes."""

    act_bits: int = 10
    scale_bits: int = 16
    kv_bits: int = 8
    q_bits: int = 8  # the query's bits in the score dot product
    score_frac: int = 10  # FT: fractional bits of scores in log2 units
    sigmoid_step_bits: int = 5  # sigmoid table step 2^-5, over [-16, 16), linear interpolation
    rope_frac: int = 14  # cos/sin in Q1.14
    lm_bits: int = 8  # lm_head / embedding table bits
    lm_group: int = 0  # their scale groups along a row (0: one per row)

    def describe(self) -> str:
        lm = f"groups of {self.lm_group}" if self.lm_group else "per row"
        return f"A={self.act_bits}, KV cache int{self.kv_bits}, lm_head/embedding int{self.lm_bits} {lm}"

    def __post_init__(self) -> None:
        for name in ("act_bits", "kv_bits", "q_bits", "lm_bits"):
            b = getattr(self, name)
            if not isinstance(b, int) or not 2 <= b <= 16:
                raise ValueError(f"{name} must be an integer in 2..16, not {b!r}")


def rope_table(positions: np.ndarray, head_dim: int, theta: float, frac: int = 14) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) int64 [len(positions), head_dim / 2] = round(cos/sin(p theta^(-2i/head_dim)) 2^frac)."""
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    ang = np.asarray(positions, dtype=np.float64)[:, None] * inv[None, :]
    return (
        np.floor(np.cos(ang) * 2**frac + 0.5).astype(np.int64),
        np.floor(np.sin(ang) * 2**frac + 0.5).astype(np.int64),
    )


def exp2_table(frac: int) -> np.ndarray:
    """T[f] = round(2^16 2^(-f / 2^frac)), f = 0 .. 2^frac - 1 (17-bit entries, T[0] = 2^16)."""
    f = np.arange(2**frac, dtype=np.float64)
    return np.floor(np.exp2(16 - f / 2**frac) + 0.5).astype(np.int64)


def sigmoid_table(step_bits: int) -> np.ndarray:
    """round(2^16 sigmoid(x)) at x = -16 + i 2^-step_bits, i = 0 .. 32 2^step_bits (inclusive)."""
    x = -16 + np.arange(32 * 2**step_bits + 1, dtype=np.float64) / 2**step_bits
    return np.floor(2**16 / (1 + np.exp(-x)) + 0.5).astype(np.int64)


def score_scale(head_dim: int) -> Scalar:
    """log2(e) / sqrt(head_dim) as an S scalar (scores in log2 units): m = floor(c 2^(16 - k)
    + 1/2) with k = frexp(c)'s exponent, normalized."""
    c = math.log2(math.e) / math.sqrt(head_dim)
    cm = math.floor(math.ldexp(c, MANT - math.frexp(c)[1]) + 0.5)
    return Scalar.normalize(np.array([cm]), np.array([math.frexp(c)[1] - MANT]))


def scores_log2(qq: np.ndarray, qs: Scalar, kq: np.ndarray, ks: Scalar, c: Scalar, frac: int) -> np.ndarray:
    """Scores [rows, keys] in log2 units with ``frac`` fractional bits: dot = q_q . k_q;
    mu = (s_q c) s_k (S products); t = clip(rnd(dot mu_m 2^(mu_e + frac)), -2^40, 2^40)."""
    dots = imatmul(qq, kq.T)
    rows = qq.shape[0]
    qc = qs * Scalar(np.repeat(c.m, rows), np.repeat(c.e, rows))
    mu = Scalar.normalize(qc.m[:, None] * ks.m[None, :], qc.e[:, None] + ks.e[None, :])
    _check(bitlen(np.abs(dots)).max(initial=0) + MANT, "scores")
    return np.clip(shift_round(dots * mu.m, -(mu.e + frac)), -(2**40), 2**40)


def weighted_values(pn: np.ndarray, vq: np.ndarray, vs: Scalar, mask: np.ndarray) -> np.ndarray:
    """V [rows, hd] = sum over the masked keys of pn v: E = the largest value exponent e_v;
    w = rnd(pn m_v / 2^(E - e_v)); o = sum w v_q; out = saturate(rnd(o / 2^(16 - 14 - E)))."""
    E = np.where(mask, vs.e[None, :], np.iinfo(np.int64).min // 4).max(axis=1)  # per row
    w = shift_round(pn * vs.m[None, :], np.clip(E[:, None] - vs.e[None, :], 0, 62))
    o = imatmul(w, vq)
    return saturate(shift_round(o, -(E[:, None] - 16 + FV)))


def softmax2(t: np.ndarray, mask: np.ndarray, table: np.ndarray, frac: int) -> np.ndarray:
    """Base-2 softmax of scores t [rows, keys] (log2 units, ``frac`` fractional bits) over the
    keys where ``mask``: d = max t - t; p = rnd(T[d mod 2^frac] / 2^(d >> frac)) (0 from a
    shift of 17); R = floor(2^32 / sum p); pn = rnd(p R / 2^16), U0.16 (0 outside the mask)."""
    t = np.where(mask, t, np.iinfo(np.int64).min // 2)
    d = t.max(axis=1, keepdims=True) - t  # >= 0
    n, f = d >> frac, d & ((1 << frac) - 1)
    p = np.where(mask & (n < 17), shift_round(table[f], np.minimum(n, 17)), 0)
    recip = (np.int64(1) << 32) // p.sum(axis=1)  # <= 2^16: the largest term is 2^16
    return shift_round(p * recip[:, None], 16)


@dataclass
class IntRows:
    """A row table of ``bits``-bit integers with fixed-point scales per row and group of
    ``group`` columns (the last group may be shorter): entry (r, j) = q[r, j] a_q[r, j // group] 2^-F."""

    q: np.ndarray  # int8 [rows, cols]
    a_q: np.ndarray  # int64 [rows, ng]
    F: int
    bits: int = 8
    group: int = 0  # 0: one group per row

    @classmethod
    def quantize(cls, w: np.ndarray, bits: int = 8, scale_bits: int = 16, group: int = 0) -> IntRows:
        """Symmetric round-to-nearest per row and group (scale max|w| / Q in float64), scales to S bits."""
        w = np.asarray(w, dtype=np.float64)
        rows, cols = w.shape
        g = group or cols
        ng = -(-cols // g)
        Q = 2 ** (bits - 1) - 1
        pad = np.zeros((rows, ng * g))
        pad[:, :cols] = w
        s = np.abs(pad.reshape(rows, ng, g)).max(axis=2) / Q
        s = np.where(s > 0, s, 1.0)
        q = np.clip(np.rint(pad.reshape(rows, ng, g) / s[:, :, None]), -Q, Q).reshape(rows, ng * g)[:, :cols]
        a_q, F = quantize_scales(s, scale_bits)
        return cls(q.astype(np.int8 if bits <= 8 else np.int16), a_q, F, bits, group)

    @property
    def columns_per_group(self) -> int:
        return self.group or self.q.shape[1]

    def expanded_scales(self, rows=slice(None)) -> np.ndarray:
        """a_q per entry [rows, cols]."""
        return np.repeat(self.a_q[rows], self.columns_per_group, axis=-1)[..., : self.q.shape[1]]

    def logits(self, x_q: np.ndarray) -> np.ndarray:
        """int64 [m, rows] = sum over groups of a_q[r, g] (sum over j in g of q[r, j] x_q[m, j])."""
        g, cols = self.columns_per_group, self.q.shape[1]
        out = np.zeros((x_q.shape[0], self.q.shape[0]), dtype=np.int64)
        for k in range(self.a_q.shape[1]):
            part = imatmul(x_q[:, k * g : min(cols, (k + 1) * g)], self.q[:, k * g : min(cols, (k + 1) * g)].T)
            _check(bitlen(np.abs(part)).max(initial=0) + bitlen(np.abs(self.a_q[:, k])).max(initial=0) + 4, "rows")
            out += part * self.a_q[None, :, k]
        return out

    @property
    def nbytes(self) -> int:
        """Stored bytes: ``bits``-wide entries packed, a 16-bit scale per row and group."""
        return self.q.size * self.bits // 8 + 2 * self.a_q.size


@dataclass(frozen=True)
class DecoderArch:
    """What the decoder needs of a Llama-family config."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    rope_theta: float
    eps: float
    qk_norm: bool = False
    max_positions: int = 2048
    name: str = "llama"

    SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")

    @classmethod
    def from_hf(cls, cfg: dict) -> DecoderArch:
        """From a transformers config dict; ``ValueError`` names an unsupported model."""
        kind = cfg.get("model_type")
        if kind not in cls.SUPPORTED:
            arch = (cfg.get("architectures") or [kind])[0]
            raise ValueError(f"the integer decoder supports {', '.join(cls.SUPPORTED)} models, not {kind!r} ({arch})")
        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        rtype = rope.get("rope_type", rope.get("type", "default"))
        if rtype not in ("default", None):
            raise ValueError(f"the integer decoder supports default rotary embeddings, not rope_type {rtype!r}")
        if cfg.get("hidden_act", "silu") != "silu":
            raise ValueError(f"the integer decoder supports SiLU MLPs, not {cfg.get('hidden_act')!r}")
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        return cls(
            hidden=hidden,
            layers=int(cfg["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            intermediate=int(cfg["intermediate_size"]),
            vocab=int(cfg["vocab_size"]),
            rope_theta=float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))),
            eps=float(cfg.get("rms_norm_eps", 1e-6)),
            qk_norm=kind == "qwen3",
            max_positions=int(cfg.get("max_position_embeddings") or 2048),
            name=kind,
        )


@dataclass
class Norm:
    """RMSNorm weights in fixed point: w = w_q 2^-F (S bits, one exponent)."""

    w_q: np.ndarray
    F: int

    @classmethod
    def quantize(cls, w, scale_bits: int = 16) -> Norm:
        w_q, F = quantize_scales(np.asarray(w, dtype=np.float64), scale_bits)
        return cls(w_q, F)


@dataclass
class DecoderBlock:
    attn_norm: Norm
    mlp_norm: Norm
    linears: dict[str, GoldenLayer]  # q, k, v, o, gate, up, down
    biases: dict[str, np.ndarray] = field(default_factory=dict)  # V-format biases (Qwen2 q/k/v)
    q_norm: Norm | None = None
    k_norm: Norm | None = None


@dataclass
class DecoderWeights:
    arch: DecoderArch
    embed: IntRows
    blocks: list[DecoderBlock]
    final_norm: Norm
    lm_head: IntRows  # the same object as ``embed`` for tied models


class KVCache:
    """Per block: K and V int8 [kv_heads, capacity, head_dim] with S scales per (head, token)."""

    def __init__(self, arch: DecoderArch, capacity: int, bits: int = 8):
        self.capacity, self.length = capacity, 0
        shape = (arch.layers, arch.kv_heads, capacity)
        self.k = np.zeros((*shape, arch.head_dim), dtype=np.int8 if bits <= 8 else np.int16)
        self.v = np.zeros_like(self.k)
        self.k_m, self.k_e = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        self.v_m, self.v_e = np.zeros_like(self.k_m), np.zeros_like(self.k_e)


class GoldenDecoder:
    """Runs tokens through the integer decoder. ``step(ids)`` appends ``ids`` at the cache's
    current position and returns integer logits (int64 [len(ids), vocab], value
    logit_int 2^-F_lm s_x[row]) and the per-row scales; one token at a time or many (prefill)
    give identical results, every op being per row or causal."""

    def __init__(self, weights: DecoderWeights, fmt: DecoderFormat | None = None, capacity: int | None = None):
        self.w, self.fmt = weights, fmt or DecoderFormat()
        self.arch = weights.arch
        self.capacity = capacity or self.arch.max_positions
        self.exp2 = exp2_table(self.fmt.score_frac)
        self.sig = sigmoid_table(self.fmt.sigmoid_step_bits)
        self.score_c = score_scale(self.arch.head_dim)
        self.reset()

    def reset(self) -> None:
        self.cache = KVCache(self.arch, self.capacity, self.fmt.kv_bits)

    # -- ops ------------------------------------------------------------------------------
    def embed(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        bad = (ids < 0) | (ids >= self.arch.vocab)
        if bad.any():
            raise ValueError(f"token id {int(ids[bad][0])} is out of range 0..{self.arch.vocab - 1}")
        e = self.w.embed
        rows = e.q[ids].astype(np.int64)
        return saturate(shift_round(rows * e.expanded_scales(ids), e.F - FV))

    def rmsnorm(self, h: np.ndarray, norm: Norm) -> np.ndarray:
        """V -> V: h w / rms(h), on h rounded to at most 24 bits (h = hn 2^sh, sh >= 0)."""
        hn, sh = normalize_rows(h, up=False)
        r = rsqrt_scalar(hn, sh, self.arch.eps)
        _check(24 + bitlen(np.abs(norm.w_q)).max(initial=0), "rmsnorm")
        return r.shifted(sh - norm.F).apply(hn * norm.w_q[None, :], 0)

    def linear(self, x: np.ndarray, layer: GoldenLayer, bias: np.ndarray | None = None) -> np.ndarray:
        """V -> V through the engine: quantize to A bits, exact accumulators, scale back."""
        return self.linear_q(*self.quantize(x), layer, bias)

    def quantize(self, x: np.ndarray) -> tuple[np.ndarray, Scalar]:
        """The engine's A-bit input and its scale, in input column order (shared by the linears
        that read the same vector)."""
        return quantize_vector(x, self.fmt.act_bits, FV)

    def linear_q(self, x_q: np.ndarray, s: Scalar, layer: GoldenLayer, bias: np.ndarray | None = None) -> np.ndarray:
        """V from quantized input: the layer's column order and zero padding, section 3's
        accumulators, then (s 2^-F) applied (+ bias)."""
        if layer.perm is not None:
            x_q = x_q[:, layer.perm]
        pad = np.zeros((x_q.shape[0], layer.d_pad), dtype=np.int64)
        pad[:, : layer.d] = x_q
        y = s.shifted(-layer.F).apply(layer.acc(pad))
        return y if bias is None else saturate(y + bias[None, :])

    def rope(self, x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
        """x [rows, heads, head_dim] V, rotate-half pairing (i, i + head_dim / 2)."""
        half = x.shape[-1] // 2
        a, b = x[..., :half], x[..., half:]
        c, s = cos[:, None, :], sin[:, None, :]
        f = self.fmt.rope_frac
        return saturate(np.concatenate([shift_round(a * c - b * s, f), shift_round(b * c + a * s, f)], axis=-1))

    def silu_mul(self, g: np.ndarray, u: np.ndarray) -> np.ndarray:
        """V: silu(g) u, sigmoid from the table with linear interpolation."""
        sb = self.fmt.sigmoid_step_bits
        lo, hi = -(16 << FV), (16 << FV) - 1
        gc = np.clip(g, lo, hi) - lo  # >= 0
        idx = gc >> (FV - sb)
        frac = gc & ((1 << (FV - sb)) - 1)
        t0, t1 = self.sig[idx], self.sig[idx + 1]
        sig = t0 + shift_round((t1 - t0) * frac, FV - sb)
        silu = shift_round(g * sig, 16)
        _check(bitlen(np.abs(silu)).max(initial=0) + bitlen(np.abs(u)).max(initial=0), "silu x up")
        return saturate(shift_round(silu * u, FV))

    def attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, block: int, start: int) -> np.ndarray:
        """q [rows, heads, hd], k, v [rows, kv_heads, hd] (V, after RoPE): append k, v to the
        cache at ``start`` and attend causally; returns [rows, heads * hd] V."""
        arch, fmt, c = self.arch, self.fmt, self.cache
        rows, hd = q.shape[0], arch.head_dim
        end = start + rows
        for h in range(arch.kv_heads):
            kq, ks = quantize_vector(k[:, h], fmt.kv_bits, FV)
            vq, vs = quantize_vector(v[:, h], fmt.kv_bits, FV)
            c.k[block, h, start:end], c.k_m[block, h, start:end], c.k_e[block, h, start:end] = kq, ks.m, ks.e
            c.v[block, h, start:end], c.v_m[block, h, start:end], c.v_e[block, h, start:end] = vq, vs.m, vs.e
        out = np.zeros((rows, arch.heads, hd), dtype=np.int64)
        group = arch.heads // arch.kv_heads
        pos = np.arange(start, end)
        keys = np.arange(end)
        causal = keys[None, :] <= pos[:, None]  # [rows, end]
        for h in range(arch.heads):
            kv = h // group
            qq, qs = quantize_vector(q[:, h], fmt.q_bits, FV)
            k_s = Scalar(c.k_m[block, kv, :end], c.k_e[block, kv, :end])
            t = scores_log2(qq, qs, c.k[block, kv, :end], k_s, self.score_c, fmt.score_frac)
            pn = softmax2(t, causal, self.exp2, fmt.score_frac)
            v_s = Scalar(c.v_m[block, kv, :end], c.v_e[block, kv, :end])
            out[:, h] = weighted_values(pn, c.v[block, kv, :end], v_s, causal)
        return out.reshape(rows, arch.heads * hd)

    # -- a block and the model -------------------------------------------------------------
    def block(self, h: np.ndarray, i: int, start: int) -> np.ndarray:
        arch, b = self.arch, self.w.blocks[i]
        L = b.linears
        rows = h.shape[0]
        x = self.rmsnorm(h, b.attn_norm)
        x_q, s = self.quantize(x)  # q, k and v share one quantized input
        q = self.linear_q(x_q, s, L["q"], b.biases.get("q")).reshape(rows, arch.heads, arch.head_dim)
        k = self.linear_q(x_q, s, L["k"], b.biases.get("k")).reshape(rows, arch.kv_heads, arch.head_dim)
        v = self.linear_q(x_q, s, L["v"], b.biases.get("v")).reshape(rows, arch.kv_heads, arch.head_dim)
        if b.q_norm is not None and b.k_norm is not None:
            q = self.rmsnorm(q.reshape(-1, arch.head_dim), b.q_norm).reshape(q.shape)
            k = self.rmsnorm(k.reshape(-1, arch.head_dim), b.k_norm).reshape(k.shape)
        cos, sin = rope_table(np.arange(start, start + rows), arch.head_dim, arch.rope_theta, self.fmt.rope_frac)
        q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
        a = self.attention(q, k, v, i, start)
        h = saturate(h + self.linear(a, L["o"]))
        x = self.rmsnorm(h, b.mlp_norm)
        x_q, s = self.quantize(x)
        g, u = self.linear_q(x_q, s, L["gate"]), self.linear_q(x_q, s, L["up"])
        return saturate(h + self.linear(self.silu_mul(g, u), L["down"]))

    def step(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """Run ``ids`` (a 1-D sequence) from the cache's position: (logits_int [rows, vocab]
        int64, scale float64 [rows]) with logits = logits_int * scale."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        start = self.cache.length
        if start + len(ids) > self.capacity:
            raise ValueError(
                f"context {start + len(ids)} tokens exceeds the KV cache's capacity of {self.capacity} tokens"
            )
        h = self.embed(ids)
        for i in range(self.arch.layers):
            h = self.block(h, i, start)
        self.cache.length = start + len(ids)
        x = self.rmsnorm(h, self.w.final_norm)
        lm = self.w.lm_head
        x_q, s = self.quantize(x)
        logits = lm.logits(x_q)
        return logits, np.ldexp(s.value(), -lm.F)

    def logits(self, ids) -> np.ndarray:
        """float64 logits of ``step(ids)`` (for evaluation)."""
        li, s = self.step(ids)
        return li.astype(np.float64) * s[:, None]
