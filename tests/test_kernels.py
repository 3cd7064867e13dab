"""Triton kernels: under TRITON_INTERPRET=1 on the CPU (conftest), natively on a GPU."""

import numpy as np
import pytest
import torch

from ptqtp import PTQTPConfig, load_artifact, quantize, save_artifact
from ptqtp.golden import GoldenLayer, IntConfig
from ptqtp.kernels import TritPlaneLinear, trit_matmul, trit_matmul_int

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Output rounding of each dtype dominates: fp16 2^-11, bf16 2^-8 relative.
TOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def packed_layer(tmp_path, n, d, G, seed=0, bias=False, packing="2bit"):
    g = torch.Generator().manual_seed(seed)
    r = quantize(torch.randn(n, d, generator=g) * 0.02, config=PTQTPConfig(group_size=G))
    tensors = {"l.bias": torch.randn(n, generator=g)} if bias else {}
    path = save_artifact(tmp_path / f"{packing}.safetensors", {"l": r}, tensors, packing=packing)
    return load_artifact(path).layers["l"]


@pytest.mark.parametrize("m", [1, 3, 8, 17])
@pytest.mark.parametrize("n,d,G", [(40, 200, 128), (33, 100, 32), (24, 96, 96)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_float_path_matches_float64_reference(tmp_path, m, n, d, G, dtype):
    layer = packed_layer(tmp_path, n, d, G)
    x = torch.randn(m, d, generator=torch.Generator().manual_seed(m)).to(dtype)
    y = trit_matmul(x.to(DEVICE), layer.codes.to(DEVICE), layer.scales.to(DEVICE), G).cpu()
    ref = x.double() @ layer.dequantize(torch.float64).T
    assert y.dtype == dtype and y.shape == (m, n)
    rel = float((y.double() - ref).abs().max() / ref.abs().max())
    assert rel <= TOL[dtype], rel


@pytest.mark.parametrize("m", [1, 5, 18])
@pytest.mark.parametrize("A,S,G,d", [(8, 16, 128, 200), (4, 8, 32, 100), (16, 16, 64, 130)])
def test_int_path_bit_exact_with_golden(tmp_path, m, A, S, G, d):
    layer = packed_layer(tmp_path, 37, d, G, seed=A + S)
    golden = GoldenLayer.from_packed(layer, IntConfig(A, S))
    x_q, _ = golden.quantize_input(np.random.default_rng(m).standard_normal((m, d)))
    acc = trit_matmul_int(
        torch.from_numpy(x_q).to(DEVICE), layer.codes.to(DEVICE), torch.from_numpy(golden.a_q).to(DEVICE), G
    )
    np.testing.assert_array_equal(acc.cpu().numpy(), golden.acc(x_q))


def test_int_path_extreme_values(tmp_path):
    layer = packed_layer(tmp_path, 8, 256, 128)
    golden = GoldenLayer.from_packed(layer, IntConfig(16, 16))
    Q = golden.config.q_max
    x_q = np.array([[Q] * 256, [-Q] * 256, [Q, -Q] * 128])
    acc = trit_matmul_int(torch.from_numpy(x_q), layer.codes, torch.from_numpy(golden.a_q), 128)
    np.testing.assert_array_equal(acc.numpy(), golden.acc(x_q))


@pytest.mark.parametrize("m", [1, 17])
@pytest.mark.parametrize("n,d,G", [(40, 200, 128), (24, 96, 96)])
def test_base3_float_path_equals_2bit(tmp_path, m, n, d, G):
    """Base-3 codes read directly: the same weights, so the same fp32 sums as the 2-bit kernel."""
    two, three = packed_layer(tmp_path, n, d, G), packed_layer(tmp_path, n, d, G, packing="base3")
    x = torch.randn(m, d, generator=torch.Generator().manual_seed(m)).to(DEVICE)
    y2 = trit_matmul(x, two.codes.to(DEVICE), two.scales.to(DEVICE), G)
    y3 = trit_matmul(x, three.codes.to(DEVICE), three.scales.to(DEVICE), G, packing="base3")
    torch.testing.assert_close(y3, y2, rtol=0, atol=0)
    ref = x.double().cpu() @ three.dequantize(torch.float64).T
    assert float((y3.double().cpu() - ref).abs().max() / ref.abs().max()) <= TOL[torch.float32]


@pytest.mark.parametrize("G,d", [(128, 200), (32, 100)])
def test_base3_int_path_bit_exact_with_golden(tmp_path, G, d):
    layer = packed_layer(tmp_path, 37, d, G, seed=G, packing="base3")
    golden = GoldenLayer.from_packed(layer, IntConfig(8, 16))
    x_q, _ = golden.quantize_input(np.random.default_rng(G).standard_normal((5, d)))
    acc = trit_matmul_int(
        torch.from_numpy(x_q).to(DEVICE),
        layer.codes.to(DEVICE),
        torch.from_numpy(golden.a_q).to(DEVICE),
        G,
        packing="base3",
    )
    np.testing.assert_array_equal(acc.cpu().numpy(), golden.acc(x_q))


def test_base3_every_byte_in_kernel(tmp_path):
    """All 243 byte values through the kernel's decode: a row holding each once, x = one-hot columns."""
    from ptqtp.formats.packing import unpack_trits

    codes = torch.arange(243, dtype=torch.uint8).repeat(3)[: 640 // 5 * 2].view(1, 2, 128)  # 2 rows, d_pad 640
    trits = unpack_trits(codes, "base3", 640)
    a_q = torch.ones(1, 2, 5, dtype=torch.int64)
    eye = torch.eye(640, dtype=torch.int64)
    acc = trit_matmul_int(eye, codes, a_q, 128, packing="base3")  # acc[j, r] = trit r, j
    assert torch.equal(acc.T, trits[0].long())


@pytest.mark.parametrize("packing", ["2bit", "base3"])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_trit_plane_linear(tmp_path, backend, packing):
    layer = packed_layer(tmp_path, 24, 200, 128, bias=True, packing=packing)
    mod = TritPlaneLinear.from_packed(layer, backend=backend).to(DEVICE)
    assert mod.packing == packing
    x = torch.randn(2, 3, 200, device=DEVICE)
    y = mod(x)
    ref = x.double().cpu() @ layer.dequantize(torch.float64).T + layer.bias.double()
    assert y.shape == (2, 3, 24)
    torch.testing.assert_close(y.double().cpu(), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="input has 199 features"):
        mod(x[..., :199])


def test_module_validation(tmp_path):
    layer = packed_layer(tmp_path, 8, 128, 128)
    with pytest.raises(ValueError, match="backend must be one of"):
        TritPlaneLinear.from_packed(layer, backend="cuda")
    with pytest.raises(ValueError, match="scales .* do not match"):
        TritPlaneLinear(layer.codes, layer.scales[:, :4], 128)
    with pytest.raises(ValueError, match="codes must be uint8"):
        trit_matmul(torch.randn(1, 128), layer.codes.int(), layer.scales)
    with pytest.raises(ValueError, match=r"do not hold 128 columns .* in base3 packing \(26 bytes a row\)"):
        TritPlaneLinear(layer.codes, layer.scales, 128, packing="base3")  # 2-bit codes called base-3
    with pytest.raises(ValueError, match="packing must be one of"):
        TritPlaneLinear(layer.codes, layer.scales, 128, packing="base4")


@pytest.mark.gpu
@pytest.mark.parametrize("packing", ["2bit", "base3"])
def test_auto_backend_uses_triton_on_cuda(tmp_path, packing):
    layer = packed_layer(tmp_path, 64, 512, 128, packing=packing)
    mod = TritPlaneLinear.from_packed(layer).cuda()
    x = torch.randn(4, 512, device="cuda", dtype=torch.float16)
    ref = x.double() @ layer.dequantize(torch.float64).cuda().T
    torch.testing.assert_close(mod(x).double(), ref, rtol=2e-3, atol=2e-3)


def test_interpreter_choice_is_explicit_and_checked():
    """Importing ptqtp sets nothing; the choice fails loudly once Triton is already compiled-mode."""
    import subprocess
    import sys

    code = (
        "import os, torch, ptqtp, ptqtp.kernels as k\n"
        "assert 'TRITON_INTERPRET' not in os.environ  # no import-time side effect\n"
        "if torch.cuda.is_available(): raise SystemExit(0)\n"
        "import triton\n"
        "try:\n    k.use_interpreter_without_cuda()\nexcept RuntimeError as e:\n"
        "    assert 'imported before TRITON_INTERPRET=1' in str(e); raise SystemExit(0)\n"
        "raise SystemExit(1)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0
