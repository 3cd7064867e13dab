"""Calibrated trit planes (GPTQ error feedback on the PTQTP grid)."""

import pytest
import torch
from test_golden import exact_reference

from ptqtp import PTQTPConfig, load_artifact, quantize_ptqtp, save_artifact
from ptqtp.golden import GoldenLayer, IntConfig
from ptqtp.methods import PTQTPGPTQConfig, gptq_trit_planes
from ptqtp.methods.linalg import nearest_levels


def correlated(n=48, d=200, N=1024, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5 + torch.eye(d, dtype=torch.float64)
    X = torch.randn(N, d, generator=g, dtype=torch.float64) @ mix
    X[:, :3] *= 10  # outlier channels, as in LLM activations
    W = torch.randn(n, d, generator=g, dtype=torch.float64) * 0.02
    return W, X


def out_err(W, X, W_hat):
    return float(torch.linalg.norm(X @ (W - W_hat).T) / torch.linalg.norm(X @ W.T))


@pytest.mark.parametrize("refit", [False, True])
def test_beats_calibration_free_on_correlated_inputs(refit):
    W, X = correlated()
    r = gptq_trit_planes(W, X.T @ X, PTQTPGPTQConfig(group_size=64, refit=refit))
    free = quantize_ptqtp(W, PTQTPConfig(group_size=64))
    e, e0 = out_err(W, X, r.dequantize(torch.float64)), out_err(W, X, free.dequantize(torch.float64))
    print(f"refit={refit}: calibrated {e:.4f} vs calibration-free {e0:.4f}")
    assert e < 0.8 * e0


def test_every_element_is_one_of_its_rows_nine_levels():
    W, X = correlated(n=16, d=130)
    r = gptq_trit_planes(W, X.T @ X, PTQTPGPTQConfig(group_size=64))
    W_hat = r.dequantize(torch.float64)
    assert set(r.codes.unique().tolist()) <= {-1, 0, 1} and not r.codes[:, :, 130:].any()
    for g in range(3):
        a = r.scales[:, :, g].t()
        levels = torch.stack([a[:, 0] * c1 + a[:, 1] * c2 for c1 in (-1, 0, 1) for c2 in (-1, 0, 1)], 1)
        cols = W_hat[:, g * 64 : min(130, (g + 1) * 64)]
        dist = (cols.unsqueeze(2) - levels.unsqueeze(1)).abs().amin(2)
        assert float(dist.max()) < 1e-15


def test_nearest_levels_tie_order():
    a = torch.tensor([[1.0, 1.0]], dtype=torch.float64)  # (0,1) and (1,0) both give level 1
    idx, q = nearest_levels(torch.tensor([1.0], dtype=torch.float64), a)
    assert idx.tolist() == [5] and q.tolist() == [1.0]  # (0, 1) comes first in the pinned order


def test_artifact_round_trip_and_golden_bit_exact(tmp_path):
    W, X = correlated(n=6, d=100)
    r = gptq_trit_planes(W.float(), X.T @ X, PTQTPGPTQConfig(group_size=32))
    art = load_artifact(save_artifact(tmp_path / "g.safetensors", {"l": r}))
    layer = art.layers["l"]
    assert layer.info["method"] == "ptqtp-gptq" and torch.equal(layer.trits(), r.codes)
    golden = GoldenLayer.from_packed(layer, IntConfig(8, 16))
    x = X[:2].numpy()
    x_q, _ = golden.quantize_input(x)
    ref, F, _ = exact_reference(layer.trits().numpy(), layer.scales.double().numpy(), x, 8, 16, 32)
    assert golden.F == F and golden.acc(x_q).tolist() == ref


def test_rejects_bad_hessian():
    with pytest.raises(ValueError, match="H must be 100 x 100"):
        gptq_trit_planes(torch.randn(4, 100), torch.eye(99))
