"""PT^2-LLM: ITF against a plain per-row reference, AGA optimality, block error propagation,
SSR, and the one-plane + offset + permutation layer through artifact, golden model and kernels."""

import numpy as np
import pytest
import torch
from test_calibrated import correlated, out_err

from ptqtp import ArtifactError, load_artifact, quantize, save_artifact
from ptqtp.golden import GoldenLayer, IntConfig
from ptqtp.kernels import TritPlaneLinear, trit_matmul, trit_matmul_int
from ptqtp.methods.pt2 import PT2Config, aga, itf, pt2_calibrated, pt2_itf, ssr_order


def itf_reference(w, max_rounds=100, threshold=0.75):
    """The issue's ITF, one row at a time in plain Python floats."""
    w = [float(v) for v in w]
    G = len(w)
    m = sum(w) / G
    wc = [v - m for v in w]
    D = threshold * sum(abs(v) for v in wc) / G
    t = [1 if v > D else -1 if v < -D else 0 for v in wc]
    nz = sum(abs(v) for v in t)
    a = sum(ti * v for ti, v in zip(t, wc)) / nz if nz else 0.0
    for _ in range(max_rounds):
        st, stt = sum(t), sum(ti * ti for ti in t)
        sw, stw = sum(w), sum(ti * v for ti, v in zip(t, w))
        den = stt - st * st / G
        if den > 0:
            a = (stw - st * sw / G) / den
        m = (sw - a * st) / G
        errs = [[abs(v - (m + a * c)) for c in (-1, 0, 1)] for v in w]
        new = [e.index(min(e)) - 1 for e in errs]
        if new == t:
            break
        t = new
    else:
        st, stt, sw, stw = sum(t), sum(ti * ti for ti in t), sum(w), sum(ti * v for ti, v in zip(t, w))
        den = stt - st * st / G
        if den > 0:
            a = (stw - st * sw / G) / den
        m = (sw - a * st) / G
    return t, a, m


@pytest.mark.parametrize("cols", [128, 37])
def test_itf_matches_plain_reference(cols):
    torch.manual_seed(cols)
    w = torch.distributions.StudentT(4.0).sample((40, cols)).double() * 0.02 + 0.003
    w[0] = 0.5  # a constant row: den = 0 keeps a
    w[1, :5] = 0.0
    t, a, m, rounds = itf(w)
    assert rounds >= 2
    for r in range(w.shape[0]):
        t_ref, a_ref, m_ref = itf_reference(w[r].tolist())
        assert t[r].tolist() == t_ref, r
        assert a[r].item() == pytest.approx(a_ref, abs=1e-12) and m[r].item() == pytest.approx(m_ref, abs=1e-12)


def test_itf_error_never_increases_with_rounds():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(64, 128, generator=g, dtype=torch.float64) * torch.rand(64, 1, generator=g, dtype=torch.float64)
    errs = []
    for k in range(1, 8):
        t, a, m, _ = itf(w, max_rounds=k)
        errs.append((w - (a[:, None] * t + m[:, None])).square().sum(1))
    for prev, cur in zip(errs, errs[1:]):
        assert bool((cur <= prev + 1e-15).all())


def test_aga_is_the_covariance_weighted_least_squares_optimum():
    W, X = correlated(n=20, d=64)
    t, a, m, _ = itf(W)
    a2, m2 = aga(W, t, a, m, X.T @ X)
    for r in range(20):  # independent: numpy lstsq on (X t, X 1) -> X w
        A = np.stack([(X @ t[r]).numpy(), (X @ torch.ones(64, dtype=torch.float64)).numpy()], 1)
        sol = np.linalg.lstsq(A, (X @ W[r]).numpy(), rcond=None)[0]
        assert a2[r].item() == pytest.approx(sol[0], rel=1e-8) and m2[r].item() == pytest.approx(sol[1], rel=1e-8)
    err = lambda aa, mm: ((W - aa[:, None] * t - mm[:, None]) @ X.T).square().sum(1)  # noqa: E731
    assert bool((err(a2, m2) <= err(a, m) * (1 + 1e-12)).all())


def test_aga_keeps_itf_values_where_singular():
    W = torch.randn(2, 8, dtype=torch.float64)
    t = torch.ones(2, 8, dtype=torch.float64)  # t parallel to the ones vector: a and m are not separable
    a, m = torch.tensor([0.3, 0.4], dtype=torch.float64), torch.tensor([0.1, 0.2], dtype=torch.float64)
    a2, m2 = aga(W, t, a, m, torch.eye(8, dtype=torch.float64))
    assert torch.equal(a2, a) and torch.equal(m2, m)


def test_block_propagation_equals_column_by_column_gptq():
    """The triangular solve is GPTQ's column loop with the block's codes fixed."""
    from ptqtp.methods.linalg import upper_inverse_cholesky

    W, X = correlated(n=12, d=96)
    cfg = PT2Config(group_size=32, aga=False, ssr=False)
    r = pt2_calibrated(W, X.T @ X, cfg)
    U = upper_inverse_cholesky(X.T @ X)
    Wc = W.clone()
    for g in range(3):
        c0, c1 = 32 * g, 32 * (g + 1)
        t, a, m, _ = itf(Wc[:, c0:c1])
        assert torch.equal(t.to(torch.int8), r.codes[0, :, c0:c1])
        q = a[:, None] * t + m[:, None]
        for j in range(c0, c1):  # GPTQ: err_j = (w_j - q_j) / U_jj, later columns -= err_j U_j,later
            err = (Wc[:, j] - q[:, j - c0]) / U[j, j]
            Wc[:, j + 1 :] -= err[:, None] * U[j, j + 1 :][None, :]
        torch.testing.assert_close(r.scales[0, :, g], a, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(r.offsets[:, g], m, rtol=1e-9, atol=1e-12)


def test_ssr_takes_the_most_similar_columns_first():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(16, generator=g, dtype=torch.float64)
    W = torch.randn(16, 24, generator=g, dtype=torch.float64)
    W[:, ::3] = base[:, None] * torch.rand(8, generator=g, dtype=torch.float64)[None] * 5  # 8 parallel columns
    order = ssr_order(W, 8)
    assert sorted(order.tolist()) == list(range(24))
    # independent: the first block is the 8 top cosines to the mean unit column of all columns
    U = W / torch.linalg.norm(W, dim=0)
    cos = (U.T @ U.mean(1)) / torch.linalg.norm(U.mean(1))
    assert set(order[:8].tolist()) == set(torch.topk(cos, 8).indices.tolist()) == set(range(0, 24, 3))


def test_calibrated_beats_data_free_and_ssr_is_used():
    W, X = correlated(n=48, d=256)
    H = X.T @ X
    free = pt2_itf(W, PT2Config(group_size=64))
    full = pt2_calibrated(W, H, PT2Config(group_size=64))
    no_ssr = pt2_calibrated(W, H, PT2Config(group_size=64, ssr=False))
    e_free, e_full = out_err(W, X, free.dequantize(torch.float64)), out_err(W, X, full.dequantize(torch.float64))
    print(
        f"output error: ITF only {e_free:.4f}, full PT^2 {e_full:.4f}, "
        f"no SSR {out_err(W, X, no_ssr.dequantize(torch.float64)):.4f}"
    )
    assert e_full < 0.8 * e_free
    assert full.perm is not None and no_ssr.perm is None and full.method == "pt2" and free.method == "pt2-itf"


def test_quantize_api_and_errors():
    W, X = correlated(n=8, d=64)
    assert quantize(W, "pt2-itf").codes.shape == (1, 8, 128)
    assert quantize(W, "pt2", hessian=X.T @ X).perm is not None
    with pytest.raises(ValueError, match="needs calibration statistics"):
        quantize(W, "pt2")
    bad = W.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        quantize(bad, "pt2-itf", name="layer7")
    with pytest.raises(ValueError, match="H must be 64 x 64"):
        pt2_calibrated(W, torch.eye(5))
    with pytest.raises(ValueError, match="group_size"):
        PT2Config(group_size=30)


# ---------------------------------------------------------------- the stored layer


@pytest.fixture
def pt2_layer(tmp_path):
    W, X = correlated(n=40, d=200)
    r = pt2_calibrated(W.float(), X.T @ X, PT2Config(group_size=64))
    art = load_artifact(save_artifact(tmp_path / "p.safetensors", {"l": r}))
    return r, art.layers["l"], art.path


def test_artifact_round_trip(pt2_layer):
    r, layer, _ = pt2_layer
    assert layer.planes == 1 and layer.info["method"] == "pt2" and layer.info["planes"] == 1
    assert torch.equal(layer.trits(), r.codes) and torch.equal(layer.perm.long(), r.perm)
    half = r.dequantize(torch.float64)
    assert (layer.dequantize(torch.float64) - half).abs().max() < 1e-3 * half.abs().max()  # float16 scales only


def test_artifact_rejects_bad_pt2_tensors(pt2_layer, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    _, _, path = pt2_layer
    with safe_open(str(path), "pt") as f:
        meta, raw = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    for key, value, match in [
        ("l.tp_perm", torch.zeros(200, dtype=torch.int32), "not a permutation"),
        ("l.tp_offsets", torch.zeros(40, 3, dtype=torch.float16), "tp_offsets is"),
        ("l.tp_offsets", torch.full((40, 4), float("inf"), dtype=torch.float16), "non-finite offsets"),
        ("l.tp_codes", torch.zeros(2, 40, 64, dtype=torch.uint8), "tp_codes is"),
    ]:
        from ptqtp.formats.artifact import HASH_KEY, tensor_sha256, with_hashes

        bad = dict(raw, **{key: value})  # a consistent writer's mistake: hashes recomputed
        fresh = with_hashes(
            {k: v for k, v in meta.items() if k != HASH_KEY}, {k: tensor_sha256(v) for k, v in bad.items()}
        )
        save_file(bad, str(tmp_path / "bad.safetensors"), metadata=fresh)
        with pytest.raises(ArtifactError, match=match):
            load_artifact(tmp_path / "bad.safetensors")


def test_golden_offset_term_equals_integer_weights(pt2_layer):
    """acc = sum over groups of (sum T x_q) a_q + (sum x_q) m_q equals x_q times the integer
    weights a_q T + m_q, with x taken in the stored column order."""
    _, layer, _ = pt2_layer
    g = GoldenLayer.from_packed(layer, IntConfig(8, 16))
    x = np.random.default_rng(0).standard_normal((5, 200)) * 3
    x_q, s_x = g.quantize_input(x)
    np.testing.assert_array_equal(
        x_q[:, :200],
        GoldenLayer(g.trits, layer.scales.double().numpy(), 200, 64).quantize_input(x[:, g.perm])[0][:, :200],
    )
    w_int = g.trits[0].astype(np.int64) * np.repeat(g.a_q[0], 64, 1) + np.repeat(g.m_q, 64, 1)
    w_int[:, 200:] = np.repeat(g.m_q, 64, 1)[:, 200:]  # padding: x_q is 0 there anyway
    np.testing.assert_array_equal(g.acc(x_q), x_q @ w_int.T)
    assert g.acc_bits == 1 + (3 * 2 * 64 * 127 * 2**15 - 1).bit_length()  # plane + offset terms
    y = g.forward(x)
    ref = x @ layer.dequantize(torch.float64).numpy().T
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 0.03  # A = 8 bits on x


def test_offsets_share_the_scale_exponent():
    trits = np.ones((1, 2, 32), np.int8)
    g = GoldenLayer(trits, np.full((1, 2, 1), 0.01), 32, 32, IntConfig(8, 16), offsets=np.array([[0.5], [-0.25]]))
    assert g.F == 15 and g.m_q.tolist() == [[16384], [-8192]] and g.a_q.tolist() == [[[328], [328]]]


def test_model_image_round_trip_with_offsets_and_permutation(pt2_layer, tmp_path):
    from ptqtp.formats.model_image import ModelImageError, read_model_image, write_model_image
    from ptqtp.formats.stream_layout import StreamLayout

    _, layer, _ = pt2_layer
    g = GoldenLayer.from_packed(layer)
    folder = write_model_image(tmp_path / "img", {"l": g}, StreamLayout(16, 2, 1, True, 64, 16, 128))
    back = read_model_image(folder).layers["l"]
    assert np.array_equal(back.trits, g.trits) and np.array_equal(back.m_q, g.m_q) and np.array_equal(back.perm, g.perm)
    x_q = g.quantize_input(np.ones((1, 200)))[0]
    assert np.array_equal(back.acc(x_q), g.acc(x_q))
    with pytest.raises(ValueError, match="offsets"):  # an engine without the offset term cannot run it
        write_model_image(tmp_path / "img2", {"l": g}, StreamLayout(16, 2, 1, False, 64, 16, 128))
    blob = bytearray((folder / "weights.bin").read_bytes())
    blob[5] ^= 1
    (folder / "weights.bin").write_bytes(bytes(blob))
    with pytest.raises(ModelImageError, match="weights.bin"):
        read_model_image(folder)


@pytest.mark.parametrize("m", [1, 6, 17])
def test_kernels_float_and_integer_paths(pt2_layer, m):
    _, layer, _ = pt2_layer
    x = torch.randn(m, 200, generator=torch.Generator().manual_seed(m), dtype=torch.float32)
    xs = x[:, layer.perm.long()]
    ref = xs.double() @ _stored_order_weights(layer).T
    y = trit_matmul(xs, layer.codes, layer.scales, 64, layer.offsets)
    assert float((y.double() - ref).abs().max() / ref.abs().max()) < 1e-5
    for backend in ("torch", "triton"):
        lin = TritPlaneLinear.from_packed(layer, backend)
        full = x.double() @ layer.dequantize(torch.float64).T
        assert float((lin(x).double() - full).abs().max() / full.abs().max()) < 1e-5
    g = GoldenLayer.from_packed(layer)
    x_q, _ = g.quantize_input(x.double().numpy())
    acc = trit_matmul_int(torch.from_numpy(x_q), layer.codes, torch.from_numpy(g.a_q), 64, torch.from_numpy(g.m_q))
    np.testing.assert_array_equal(acc.numpy(), g.acc(x_q))


def _stored_order_weights(layer):
    from ptqtp.methods import dequantize_planes

    return dequantize_planes(layer.trits(), layer.scales, 64, 200, torch.float64, layer.offsets)
