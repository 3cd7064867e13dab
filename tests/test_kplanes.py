"""PTQTP with K = 1, 3, 4 trit planes: the search is the exact argmin over the 3^K levels,
the error falls with K, and a K-plane layer goes through the artifact (2-bit and base-3),
the golden model and the Triton kernels bit for bit; the engine refuses it by name."""

import numpy as np
import pytest
import torch

from ptqtp import PTQTPConfig, load_artifact, quantize, save_artifact
from ptqtp.golden import GoldenLayer, IntConfig
from ptqtp.methods import get_method
from ptqtp.methods.kplanes import combinations


def brute_force_codes(w: torch.Tensor, scales: torch.Tensor, G: int) -> torch.Tensor:
    """argmin_c (w - sum_k a_k c_k)^2 per element over every combination, first in pinned order."""
    K, n, ng = scales.shape
    C = combinations(K)
    wp = torch.zeros(n, ng * G, dtype=torch.float64)
    wp[:, : w.shape[1]] = w.double()
    levels = torch.einsum("kng,lk->ngl", scales, C)
    best = ((wp.view(n, ng, G).unsqueeze(-1) - levels.unsqueeze(2)) ** 2).argmin(-1)
    return C[best].permute(3, 0, 1, 2).reshape(K, n, ng * G).to(torch.int8)


@pytest.mark.parametrize("K", [1, 3, 4])
@pytest.mark.parametrize("n,d,G", [(16, 300, 128), (5, 64, 32)])
def test_codes_are_the_exact_argmin_for_the_final_scales(K, n, d, G):
    w = torch.randn(n, d, generator=torch.Generator().manual_seed(K + d)) * 0.02
    r = quantize(w, PTQTPConfig(group_size=G, planes=K, search_dtype="float64"))
    assert r.codes.shape == (K, n, -(-d // G) * G) and r.method == f"ptqtp-k{K}"
    assert torch.equal(r.codes[:, :, :d], brute_force_codes(w, r.scales, G)[:, :, :d])
    assert not r.codes[:, :, d:].any()  # padding holds zeros


def test_ties_go_to_the_first_combination():
    """Equal scales make many equal levels; the search must still match the first argmin."""
    from ptqtp.methods.kplanes import level_tables_k, search_codes_k

    C = combinations(3)
    a = torch.tensor([[0.5, 0.5, 0.25]], dtype=torch.float64)
    w = torch.linspace(-1.5, 1.5, 241, dtype=torch.float64).unsqueeze(0)
    mids, combo = level_tables_k(a, C, torch.float64)
    got = search_codes_k(w, mids, combo, C)
    best = ((w.unsqueeze(-1) - (a @ C.t()).unsqueeze(1)) ** 2).argmin(-1)
    assert torch.equal(got, C[best].permute(2, 0, 1).to(torch.int8))


def test_error_falls_with_every_plane_and_bits_are_counted():
    w = torch.randn(64, 512, generator=torch.Generator().manual_seed(1)) * 0.02
    errs = [quantize(w, PTQTPConfig(planes=K)).rel_error for K in (1, 2, 3, 4)]
    assert errs == sorted(errs, reverse=True) and errs[3] < 0.25 * errs[1]
    bits = [get_method(m).bits_per_weight(128)[0] for m in ("ptqtp-k1", "ptqtp", "ptqtp-k3", "ptqtp-k4")]
    assert bits == [2 + 16 / 128, 4 + 32 / 128, 6 + 48 / 128, 8 + 64 / 128]


def test_config_checks_and_the_two_plane_path_is_the_default():
    assert PTQTPConfig().planes == 2 and PTQTPConfig().method == "ptqtp"
    for bad in (0, 5, True, 2.0):
        with pytest.raises(ValueError, match="planes must be 1, 2, 3 or 4"):
            PTQTPConfig(planes=bad)
    w = torch.randn(8, 128, generator=torch.Generator().manual_seed(2)) * 0.02
    a, b = quantize(w, PTQTPConfig()), quantize(w, "ptqtp")
    assert torch.equal(a.codes, b.codes) and torch.equal(a.scales, b.scales)


@pytest.mark.parametrize("K", [1, 3, 4])
@pytest.mark.parametrize("packing", ["2bit", "base3"])
def test_k_planes_through_artifact_golden_and_triton(tmp_path, K, packing):
    from ptqtp.kernels import trit_matmul_int

    w = torch.randn(24, 200, generator=torch.Generator().manual_seed(K)) * 0.02
    r = quantize(w, PTQTPConfig(planes=K))
    path = save_artifact(tmp_path / "a.safetensors", {"l": r}, config=PTQTPConfig(planes=K), packing=packing)
    art = load_artifact(path)
    layer = art.layers["l"]
    assert layer.planes == K and art.config() == PTQTPConfig(planes=K)
    assert torch.equal(layer.trits(), r.codes)
    golden = GoldenLayer.from_packed(layer, IntConfig(8, 16))
    x = np.random.default_rng(K).standard_normal((5, 200))
    x_q, _ = golden.quantize_input(x)
    acc = trit_matmul_int(torch.from_numpy(x_q), layer.codes, torch.from_numpy(golden.a_q), 128, packing=packing)
    np.testing.assert_array_equal(acc.numpy(), golden.acc(x_q))
    # the golden accumulators, rebuilt directly: sum over planes and groups of a_q * (T x_q)
    t = layer.trits().numpy().astype(np.int64).reshape(K, 24, 2, 128)
    xg = np.zeros((5, 256), np.int64)
    xg[:, :200] = x_q[:, :200]
    direct = np.einsum("kngj,mgj,kng->mn", t, xg.reshape(5, 2, 128), golden.a_q.astype(np.int64))
    np.testing.assert_array_equal(golden.acc(x_q), direct)


def test_the_engine_takes_k_planes_in_passes_up_to_its_max_planes():
    from ptqtp.hdl.engine_model import EngineParams

    p = EngineParams()
    p.check_layer(64, 256, 4, False)
    assert [p.run(64, 256, 1, k).issue_cycles for k in (1, 2, 3, 4)] == [
        p.run(64, 256).issue_cycles * s for s in (1, 1, 2, 2)
    ]
    with pytest.raises(ValueError, match="max_planes 2"):
        EngineParams(max_planes=2).check_layer(64, 256, 3, False)
    with pytest.raises(ValueError, match="1 to 4 planes, not 5"):
        p.check_layer(64, 256, 5, False)
