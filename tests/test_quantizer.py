import math

import numpy as np
import pytest
import torch
from reference_ptqtp import reference_ptqtp

from ptqtp import PTQTPConfig, quantize, quantize_ptqtp, quantize_rtn, quantize_ternary_absmean


def dyadic(n, d, seed, bits=12):
    """Gaussian-like weights on a 2^-bits grid: every sum is exact in float64, in any order,
    so the fast and reference implementations see identical Gram statistics."""
    g = torch.Generator().manual_seed(seed)
    return torch.round(torch.randn(n, d, generator=g, dtype=torch.float64) * 2**bits) / 2**bits


@pytest.mark.parametrize("n,d,G,seed", [(3, 256, 128, 0), (5, 200, 64, 1), (1, 77, 32, 2), (4, 96, 32, 3)])
def test_matches_float64_reference(n, d, G, seed):
    W = dyadic(n, d, seed)
    cfg = PTQTPConfig(group_size=G, search_dtype="float64")
    r = quantize_ptqtp(W, cfg)
    codes, scales, iters, errors = reference_ptqtp(W.numpy(), G=G)
    assert r.iterations == iters
    np.testing.assert_array_equal(r.codes.numpy(), codes)
    np.testing.assert_allclose(r.scales.numpy(), scales, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(r.error_history, errors, rtol=1e-9)


def test_float32_search_close_to_reference():
    W = torch.randn(8, 512, generator=torch.Generator().manual_seed(5))
    r = quantize_ptqtp(W)
    codes, scales, _, _ = reference_ptqtp(W.double().numpy())
    ref = (codes.reshape(2, 8, 4, 128) * scales[..., None]).sum(0).reshape(8, 512)
    ref_err = np.linalg.norm(W.double().numpy() - ref) / np.linalg.norm(W.double().numpy())
    assert r.rel_error == pytest.approx(ref_err, rel=0.02)


def test_error_non_increasing_and_stops_at_eps():
    W = torch.randn(64, 384, generator=torch.Generator().manual_seed(3))
    r = quantize_ptqtp(W, PTQTPConfig(max_iters=200))
    h = r.error_history
    assert all(b <= a * (1 + 1e-9) for a, b in zip(h[1:], h[2:]))
    assert r.iterations < 200  # stopped by eps, not Tmax
    looser = quantize_ptqtp(W, PTQTPConfig(max_iters=200, eps=1e-2))
    assert looser.iterations <= r.iterations


def test_respects_tmax():
    W = torch.randn(32, 256, generator=torch.Generator().manual_seed(4))
    for tmax in (1, 3):
        r = quantize_ptqtp(W, PTQTPConfig(max_iters=tmax))
        assert r.iterations == tmax and len(r.error_history) == tmax


def test_first_iteration_scales_are_half_mean_abs():
    # SPEC: at init t1 = t2, so the first solve gives a = (mean|w| / 2, mean|w| / 2).
    W = torch.randn(4, 128, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    r = quantize_ptqtp(W, PTQTPConfig(max_iters=1, search_dtype="float64"))
    expect = W.abs().mean(1) / 2
    torch.testing.assert_close(r.scales[0, :, 0], expect, rtol=1e-5, atol=0)
    torch.testing.assert_close(r.scales[1, :, 0], expect, rtol=1e-5, atol=0)


def test_dequantize_matches_reported_error_and_levels():
    W = torch.randn(16, 300, generator=torch.Generator().manual_seed(7))
    r = quantize_ptqtp(W)
    W_hat = r.dequantize(torch.float64)
    rel = float(torch.linalg.norm(W.double() - W_hat) / torch.linalg.norm(W.double()))
    assert r.rel_error == pytest.approx(rel, rel=1e-6)  # from float32-summed Gram statistics
    assert set(r.codes.unique().tolist()) <= {-1, 0, 1}
    assert not r.codes[:, :, 300:].any()  # padding holds trit 0


def test_single_row_and_tail_group():
    W = torch.randn(1, 130, generator=torch.Generator().manual_seed(8))
    r = quantize_ptqtp(W)
    assert r.codes.shape == (2, 1, 256) and r.scales.shape == (2, 1, 2)
    assert r.rel_error < 0.3


def test_all_zero_groups_reconstruct_exactly():
    W = torch.randn(4, 256, generator=torch.Generator().manual_seed(9))
    W[1] = 0
    W[2, 128:] = 0
    r = quantize_ptqtp(W)
    W_hat = r.dequantize()
    assert torch.equal(W_hat[1], torch.zeros(256))
    assert torch.equal(W_hat[2, 128:], torch.zeros(128))
    assert r.scales[:, 1].abs().max() == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_input_dtypes(dtype):
    W = torch.randn(8, 256, generator=torch.Generator().manual_seed(10)).to(dtype)
    r = quantize_ptqtp(W)
    ref = quantize_ptqtp(W.to(torch.float64), PTQTPConfig(search_dtype="float64"))
    assert r.rel_error == pytest.approx(ref.rel_error, rel=1e-3)
    assert r.rel_error < 0.25


@pytest.mark.parametrize("scale", [2.0**-100, 2.0**100])
def test_scale_invariance_at_extreme_magnitudes(scale):
    # Power-of-two scaling is exact, so codes must not move and scales scale exactly;
    # eps is absolute (in weight units, as SPEC pins it), so it scales along.
    W = dyadic(4, 256, 11)
    base = quantize_ptqtp(W, PTQTPConfig(search_dtype="float64"))
    big = quantize_ptqtp(W * scale, PTQTPConfig(search_dtype="float64", eps=1e-4 * scale))
    assert big.iterations == base.iterations
    assert torch.equal(base.codes, big.codes)
    torch.testing.assert_close(big.scales / scale, base.scales, rtol=1e-9, atol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_rejected_by_name(bad):
    W = torch.randn(4, 128)
    W[2, 5] = bad
    for fn in (
        lambda: quantize_ptqtp(W, name="model.layers.0.mlp"),
        lambda: quantize(W, "ternary", name="model.layers.0.mlp"),
        lambda: quantize(W, "rtn3", name="model.layers.0.mlp"),
    ):
        with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp: weight has 1 NaN/Inf"):
            fn()


@pytest.mark.parametrize(
    "bad,err",
    [(torch.zeros(3), ValueError), (torch.zeros(0, 4), ValueError), (torch.zeros(2, 4, dtype=torch.int32), TypeError)],
)
def test_bad_shapes_and_dtypes(bad, err):
    with pytest.raises(err, match="weight"):
        quantize_ptqtp(bad)


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        ({"group_size": 6}, "group_size must be a positive multiple of 4"),
        ({"max_iters": 0}, "max_iters must be"),
        ({"eps": -1.0}, "eps must be a positive finite number"),
        ({"search_dtype": "float16"}, "search_dtype must be"),
    ],
)
def test_config_validation(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        PTQTPConfig(**kwargs)


def test_chunking_does_not_change_result():
    W = torch.randn(40, 640, generator=torch.Generator().manual_seed(12))
    a = quantize_ptqtp(W, PTQTPConfig(chunk_groups=3))
    b = quantize_ptqtp(W, PTQTPConfig(chunk_groups=4096))
    assert torch.equal(a.codes, b.codes) and torch.equal(a.scales, b.scales)


def test_input_not_modified():
    W = torch.randn(8, 256)
    before = W.clone()
    quantize_ptqtp(W)
    assert torch.equal(W, before)


# ---------------------------------------------------------------- baselines


def test_ternary_absmean_matches_definition():
    W = torch.randn(6, 200, dtype=torch.float64, generator=torch.Generator().manual_seed(13))
    r = quantize_ternary_absmean(W, group_size=64)
    for row in range(6):
        for g in range(4):
            w = W[row, g * 64 : min(200, (g + 1) * 64)]
            gamma = w.abs().mean()
            t = torch.clamp(torch.round(w / gamma), -1, 1)
            torch.testing.assert_close(r.dequantize(torch.float64)[row, g * 64 : g * 64 + len(w)], gamma * t)
    assert not r.codes[1].any() and not r.scales[1].any()


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_rtn_error_within_half_step(bits):
    W = torch.randn(5, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(14))
    r = quantize_rtn(W, bits, group_size=128)
    err = (W - r.dequantize(torch.float64)).abs().view(-1)
    step = r.scale.repeat_interleave(128, dim=1)[:, :300].reshape(-1)
    assert bool((err <= step / 2 + 1e-12).all())


def test_rtn_constant_group_exact():
    W = torch.full((2, 128), -0.375, dtype=torch.float64)
    assert torch.equal(quantize_rtn(W, 2).dequantize(torch.float64), W)


@pytest.mark.parametrize("dist", ["gaussian", "student_t4"])
def test_quality_beats_single_plane_and_rtn3(dist):
    g = torch.Generator().manual_seed(15)
    if dist == "gaussian":
        W = torch.randn(256, 1024, generator=g)
    else:
        W = torch.distributions.StudentT(4.0).sample((256, 1024))
    errs = {m: quantize(W, m).rel_error for m in ("ptqtp", "ternary", "rtn3", "rtn2")}
    print(dist, {k: round(v, 4) for k, v in errs.items()})
    assert errs["ptqtp"] < errs["ternary"]
    assert errs["ptqtp"] < errs["rtn3"]
    assert errs["ptqtp"] < errs["rtn2"]
    assert not math.isnan(errs["ptqtp"])


@pytest.mark.gpu
def test_cuda_matches_cpu():
    W = dyadic(64, 640, 16)
    cfg = PTQTPConfig(search_dtype="float64")
    cpu = quantize_ptqtp(W, cfg)
    gpu = quantize_ptqtp(W.cuda(), cfg)
    assert gpu.codes.is_cuda and gpu.iterations == cpu.iterations
    assert torch.equal(gpu.codes.cpu(), cpu.codes)
    torch.testing.assert_close(gpu.scales.cpu(), cpu.scales, rtol=1e-12, atol=0)
