from fractions import Fraction

import numpy as np
import pytest

from ptqtp.golden import GoldenLayer, IntConfig, acc_width, check_fits, quantize_activations, quantize_scales


def exact_reference(trits, scales, x, A, S, G):
    """docs/SPEC.md section 3 in Python integers and Fractions, loop by loop (independent of golden.py)."""
    Q = 2 ** (A - 1) - 1
    planes, n, d_pad = trits.shape
    limit = 2 ** (S - 1) - 1
    amax = max(abs(Fraction(float(a))) for a in scales.ravel())
    F = 0
    if amax:
        while amax * Fraction(2) ** F > limit:
            F -= 1
        while amax * Fraction(2) ** (F + 1) <= limit:
            F += 1
    a_q = [
        [
            [
                max(-limit - 1, min(limit, round(Fraction(float(scales[k, r, g])) * Fraction(2) ** F)))
                for g in range(d_pad // G)
            ]
            for r in range(n)
        ]
        for k in range(planes)
    ]
    accs, sxs = [], []
    for row in x:
        m = max(abs(float(v)) for v in row)
        s_x = m / Q if m > 0 else 1.0
        xq = [max(-Q, min(Q, round(float(v) / s_x))) for v in row] + [0] * (d_pad - len(row))
        acc = []
        for r in range(n):
            total = 0
            for g in range(d_pad // G):
                for k in range(planes):
                    p = sum(int(trits[k, r, j]) * xq[j] for j in range(g * G, (g + 1) * G))
                    total += p * a_q[k][r][g]
            acc.append(total)
        accs.append(acc)
        sxs.append(s_x)
    return accs, F, sxs


def random_layer(n, d, G, seed, scale=0.05):
    rng = np.random.default_rng(seed)
    d_pad = -(-d // G) * G
    trits = rng.integers(-1, 2, size=(2, n, d_pad)).astype(np.int8)
    trits[:, :, d:] = 0
    scales = (rng.standard_normal((2, n, d_pad // G)) * scale).astype(np.float16).astype(np.float64)
    return trits, scales


@pytest.mark.parametrize("A", [4, 8, 16])
@pytest.mark.parametrize("S", [8, 12, 16])
@pytest.mark.parametrize("G", [32, 64, 128])
def test_acc_equals_exact_integer_reference(A, S, G):
    d = G + G // 2 + 3  # not a multiple of G
    trits, scales = random_layer(3, d, G, seed=A * 100 + S * 10 + G)
    x = np.random.default_rng(G).standard_normal((2, d)) * 3
    x[1, 5] = 0.0
    golden = GoldenLayer(trits, scales, d, G, IntConfig(A, S))
    x_q, s_x = golden.quantize_input(x)
    acc = golden.acc(x_q)
    ref, F, ref_sx = exact_reference(trits, scales, x, A, S, G)
    assert golden.F == F
    assert acc.tolist() == ref
    assert s_x.tolist() == ref_sx


def test_round_half_to_even_and_zero_vector():
    x = np.array([[1.0, 0.5, -0.5, 1.5, 2.5, 0.0, 0.0], [0.0] * 7])
    x_q, s_x = quantize_activations(x, act_bits=2, d_pad=8)  # Q = 1, s_x = 2.5: x / s_x = .4 .2 -.2 .6 1 0 0
    assert x_q.tolist() == [[0, 0, 0, 1, 1, 0, 0, 0], [0] * 8]
    assert s_x.tolist() == [2.5, 1.0]
    x_q, s_x = quantize_activations(np.array([3.0, 2.5, 0.5, -2.5, 1.5]), act_bits=3)  # Q = 3, s_x = 1
    assert x_q.tolist() == [[3, 2, 0, -2, 2]] and s_x.tolist() == [1.0]


def test_scale_exponent_exact_at_powers_of_two():
    # max|a| * 2^F <= 2^(S-1) - 1 with F maximal; at S = 16 the limit is 32767.
    a_q, F = quantize_scales(np.array([0.5, -0.25]), 16)  # 0.5 * 2^16 = 32768 > 32767 -> F = 15
    assert F == 15 and a_q.tolist() == [16384, -8192]
    a_q, F = quantize_scales(np.array([32767 / 2**20]), 16)  # exactly the limit at F = 20
    assert F == 20 and a_q.tolist() == [32767]
    a_q, F = quantize_scales(np.zeros(3), 8)
    assert F == 0 and a_q.tolist() == [0, 0, 0]


def test_output_within_derived_bound_of_float_matmul():
    """|y - y_float| <= B elementwise, where y_float = x W_hat^T with the float scales.

    Write x_hat = x_q s_x (so |x - x_hat| <= s_x / 2, no clipping since |x| <= Q s_x) and
    a_hat = a_q 2^-F (so |a - a_hat| <= 2^-F / 2, no clipping since max|a| 2^F <= 2^(S-1) - 1).
    Per row r:  y_float - y = sum_j sum_k T_k[r,j] (a_k x_j - a_hat_k x_hat_j)
                            = sum_j sum_k T_k[r,j] (a_k (x_j - x_hat_j) + (a_k - a_hat_k) x_hat_j)
    so |y_float - y| <= s_x/2 sum_jk |T_k| |a_k| + 2^-F/2 sum_jk |T_k| |x_hat_j| = B,
    plus float64 rounding of the final products (relative 1e-15, covered by 1e-12 |y|).
    """
    n, d, G = 16, 300, 128
    trits, scales = random_layer(n, d, G, seed=1)
    x = np.random.default_rng(2).standard_normal((4, d))
    golden = GoldenLayer(trits, scales, d, G, IntConfig(8, 16))
    y = golden.forward(x)
    t = trits.astype(np.float64).reshape(2, n, -1, G)
    w_hat = (t * scales[..., None]).sum(0).reshape(n, -1)[:, :d]
    y_float = x @ w_hat.T
    x_q, s_x = golden.quantize_input(x)
    x_hat = x_q * s_x[:, None]
    abs_t = np.abs(t).reshape(2, n, -1)[:, :, :d]
    abs_a = np.repeat(np.abs(scales), G, axis=2)[:, :, :d]
    bound = s_x[:, None] / 2 * np.einsum("knj,knj->n", abs_t, abs_a)[None, :] + 2.0**-golden.F / 2 * np.einsum(
        "knj,mj->mn", abs_t, np.abs(x_hat[:, :d])
    )
    err = np.abs(y - y_float)
    assert (err <= bound + 1e-12 * np.abs(y)).all()
    assert bound.mean() < 0.5 * np.abs(y_float).mean()  # the bound says something
    assert err.max() > 0


@pytest.mark.parametrize("A,S,ng,G", [(8, 16, 1, 128), (8, 16, 3, 128), (4, 8, 2, 32), (16, 16, 4, 64), (2, 4, 1, 8)])
def test_worst_case_reaches_acc_within_one_bit(A, S, ng, G):
    limit = 2 ** (S - 1) - 1
    trits = np.ones((2, 1, ng * G), dtype=np.int8)
    scales = np.full((2, 1, ng), limit / 2.0**S)  # a_q = limit exactly
    golden = GoldenLayer(trits, scales, ng * G, G, IntConfig(A, S))
    Q = 2 ** (A - 1) - 1
    for sign in (1, -1):
        acc = golden.acc(np.full((1, ng * G), sign * Q))
        assert int(acc[0, 0]) == sign * 2 * ng * G * Q * limit
        needed = int(abs(acc[0, 0])).bit_length() + 1
        assert golden.acc_bits - 1 <= needed <= golden.acc_bits
        if needed == golden.acc_bits:
            with pytest.raises(OverflowError, match="does not fit"):
                check_fits(acc, golden.acc_bits - 1)
    with pytest.raises(ValueError, match="declared accumulator width"):
        GoldenLayer(trits, scales, ng * G, G, IntConfig(A, S), acc_bits=golden.acc_bits - 1)


def test_acc_width_formula():
    # ceil(log2(2 * 1 * 128 * 127 * 2^15)) + 1: 2*128*127*32768 = 1065353216 <= 2^30 -> 31
    assert acc_width(1, 128, 8, 16) == 31
    assert acc_width(4096 // 128, 128, 8, 16) == 36


def test_rejects_configs_beyond_int64():
    ng = 1024  # ACC = ceil(log2(2 * 1024 * 128 * 32767 * 2^31)) + 1 = 65
    trits = np.zeros((2, 1, ng * 128), dtype=np.int8)
    with pytest.raises(ValueError, match="ACC = 65 bits exceeds int64"):
        GoldenLayer(trits, np.ones((2, 1, ng)), ng * 128, 128, IntConfig(16, 32))


@pytest.mark.parametrize(
    "kwargs,msg", [({"act_bits": 1}, "act_bits must be"), ({"scale_bits": 40}, "scale_bits must be")]
)
def test_int_config_validation(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        IntConfig(**kwargs)


def test_bad_inputs():
    trits, scales = random_layer(2, 100, 32, 0)
    g = GoldenLayer(trits, scales, 100, 32)
    with pytest.raises(ValueError, match="features"):
        g.forward(np.zeros((1, 99)))
    with pytest.raises(ValueError, match="NaN"):
        g.forward(np.full((1, 100), np.nan))
    with pytest.raises(ValueError, match="exceed Q"):
        g.acc(np.full((1, 128), 200))


def test_bias_added_on_host():
    trits, scales = random_layer(3, 64, 32, 0)
    bias = np.array([1.0, -2.0, 0.5])
    x = np.random.default_rng(0).standard_normal((2, 64))
    with_bias = GoldenLayer(trits, scales, 64, 32, bias=bias).forward(x)
    without = GoldenLayer(trits, scales, 64, 32).forward(x)
    np.testing.assert_array_equal(with_bias, without + bias)


def test_accumulators_are_c_ordered():
    """Callers wrap acc in torch tensors; a column-major acc sent torch down another attention
    kernel (last-bit differences) once, so its layout is part of the contract."""
    rng = np.random.default_rng(0)
    g = GoldenLayer(rng.integers(-1, 2, (2, 64, 256)), rng.random((2, 64, 2)), 256, 128)
    for m in (1, 5):
        assert g.acc(rng.integers(-127, 128, (m, 256))).flags.c_contiguous
