"""The generated Verilog in Verilator under cocotb, against the golden model.

The CI subset covers three random parameter sets, a real quantized 256 x 512 layer,
back-to-back vectors, random stalls on both streams, a reset in the middle of a vector
and maximum-magnitude activations and scales. ``--runslow`` adds a wider sweep.
"""

import numpy as np
import pytest

from ptqtp import load_artifact, quantize, save_artifact
from ptqtp.workflows.budget import random_activations
from ptqtp.golden import GoldenLayer, IntConfig
from ptqtp.hdl.synth import to_verilog
from ptqtp.hdl.top import TritMatmul
from ptqtp.formats.hwimage import read_image, write_image
from ptqtp.workflows.report import sample_weight
from ptqtp.sim.runner import run_bench


def image_and_verilog(tmp_path, golden, lanes, rows, name="layer"):
    """The layer through its hardware image (an export round trip) and the accelerator for it."""
    folder = write_image(tmp_path / name, golden, lanes, name, "0" * 64)
    return folder, to_verilog(TritMatmul.from_golden(read_image(folder).golden(), lanes, rows))


def run(folder, verilog, x_q, rows, **kwargs):
    image = read_image(folder)
    return run_bench(image.golden(), verilog, x_q, image.lanes, rows, **kwargs)


def random_golden(n, d, G, A, S, seed, extreme=False):
    rng = np.random.default_rng(seed)
    d_pad = -(-d // G) * G
    trits = rng.integers(-1, 2, (2, n, d_pad)).astype(np.int8)
    trits[:, :, d:] = 0
    scales = rng.standard_normal((2, n, d_pad // G))
    if extreme:  # every trit +1 and every scale at the largest magnitude: the ACC worst case
        trits[:, :, :d] = 1
        scales[:] = (2**15 - 1) / 2**15  # a_q = 2^(S-1) - 1 exactly
    return GoldenLayer(trits, scales, d, G, IntConfig(A, S))


def x_vectors(golden, m, seed):
    Q = golden.config.q_max
    x = np.zeros((m, golden.d_pad), np.int64)
    x[:, : golden.d] = np.random.default_rng(seed).integers(-Q, Q + 1, (m, golden.d))
    x[0, : golden.d] = Q
    x[1, : golden.d] = -Q
    return x


# (P, R, A, S, G, n, d)
CI_SETS = [(8, 2, 8, 16, 32, 5, 60), (16, 1, 4, 8, 64, 3, 100), (4, 3, 8, 12, 16, 7, 40)]
SLOW_SETS = [(32, 4, 16, 16, 64, 9, 128), (64, 2, 8, 16, 128, 6, 300), (2, 1, 6, 10, 8, 4, 20)]


def check(result):
    assert result.passed, f"mismatches: {result.mismatches}, first: {result.first_mismatch}"


@pytest.mark.parametrize("P,R,A,S,G,n,d", CI_SETS + [pytest.param(*s, marks=pytest.mark.slow) for s in SLOW_SETS])
def test_random_layers_back_to_back_and_stalled(tmp_path, P, R, A, S, G, n, d):
    golden = random_golden(n, d, G, A, S, seed=P + R)
    folder, verilog = image_and_verilog(tmp_path, golden, P, R)
    x = x_vectors(golden, 4, seed=A)
    res = run(folder, verilog, x, R)
    check(res)
    assert res.cycles_per_vector == [res.model_cycles] * 3  # back to back, exactly the cycle model
    stalled = run(folder, verilog, x, R, in_stall=0.3, out_stall=0.5, seed=3)
    check(stalled)
    assert min(stalled.cycles_per_vector) > res.model_cycles


def test_reset_mid_vector_then_clean_run(tmp_path):
    golden = random_golden(5, 60, 32, 8, 16, seed=0)
    folder, verilog = image_and_verilog(tmp_path, golden, 8, 2)
    res = run(folder, verilog, x_vectors(golden, 3, 1), 2, testcase="reset_mid_vector")
    check(res)
    assert res.report["reset_after_chunks"] == 4


def test_maximum_magnitudes_do_not_overflow(tmp_path):
    golden = random_golden(3, 256, 128, 8, 16, seed=0, extreme=True)
    folder, verilog = image_and_verilog(tmp_path, golden, 16, 1)
    x = x_vectors(golden, 2, 0)
    res = run(folder, verilog, x, 1)
    check(res)
    worst = 2 * 2 * 128 * golden.config.q_max * (2 ** 15 - 1)  # ng * planes * G * Q * max a_q
    assert golden.acc(x).max() == worst and worst.bit_length() + 1 == golden.acc_bits


def test_real_quantized_layer(tmp_path):
    W = sample_weight(256, 512, seed=3)
    art = save_artifact(tmp_path / "a.safetensors", {"real": quantize(W)})
    golden = GoldenLayer.from_packed(load_artifact(art).layers["real"])
    folder, verilog = image_and_verilog(tmp_path, golden, 64, 4, "real")
    x_q, _ = golden.quantize_input(random_activations(4, 512))
    res = run(folder, verilog, x_q, 4)
    check(res)
    assert res.cycles_per_vector == [res.model_cycles] * 3 == [1544] * 3  # 8 + 64 * (8 + 12) + 256
    print(f"real 256x512 layer: {res.cycles_per_second:.0f} simulated cycles/s")


def test_cli_hdl_and_sim(tmp_path, capsys):
    from ptqtp.tools.cli import main

    golden = random_golden(5, 60, 32, 8, 16, seed=0)
    folder = write_image(tmp_path / "img", golden, 8, "layer", "0" * 64)
    assert main(["hdl", str(folder), "-o", str(tmp_path / "top.v"), "--rows", "2", "--no-synth"]) == 0
    assert "module trit_matmul" in (tmp_path / "top.v").read_text()
    assert "cycles/vector" in capsys.readouterr().out
    assert main(["sim", str(folder), "--rows", "2", "--vectors", "3", "--waves", str(tmp_path / "w.vcd")]) == 0
    out = capsys.readouterr().out
    assert "MATCH: 3 vectors x 5 rows" in out and "model 64" in out
    assert "$enddefinitions" in (tmp_path / "w.vcd").read_text()
    import gzip

    assert main(["sim", str(folder), "--rows", "2", "--vectors", "3", "--waves", str(tmp_path / "w.vcd.gz")]) == 0
    packed = (tmp_path / "w.vcd.gz").read_bytes()
    assert gzip.decompress(packed) == (tmp_path / "w.vcd").read_bytes() and len(packed) < len(gzip.decompress(packed))
    from ptqtp.sim.runner import wave_format

    try:
        assert wave_format(tmp_path / "w.fst") == "fst"  # the lz4 headers are installed here
    except RuntimeError as e:
        assert "lz4" in str(e) and ".vcd.gz" in str(e)
    capsys.readouterr()
    assert main(["hdl", str(folder), "-o", str(tmp_path / "x.v"), "--rows", "9", "--no-synth"]) == 2
    assert "rows R=9 exceeds" in capsys.readouterr().err


def test_real_pt2_layer_with_offsets_and_permutation(tmp_path):
    """A calibrated PT^2-LLM layer (one plane, offsets, SSR order) through artifact, image and RTL."""
    import torch

    from ptqtp.methods.pt2 import pt2_calibrated

    W = sample_weight(96, 320, seed=4)
    X = torch.from_numpy(random_activations(256, 320, seed=5))
    r = pt2_calibrated(W, X.T @ X)
    assert r.perm is not None and r.offsets is not None
    art = save_artifact(tmp_path / "a.safetensors", {"pt2": r})
    golden = GoldenLayer.from_packed(load_artifact(art).layers["pt2"])
    folder, verilog = image_and_verilog(tmp_path, golden, 16, 2, "pt2")
    assert read_image(folder).meta.planes == 1 and read_image(folder).perm is not None
    x_q, _ = golden.quantize_input(random_activations(3, 320, seed=6))
    res = run(folder, verilog, x_q, 2)
    check(res)
    assert res.cycles_per_vector == [res.model_cycles] * 2
    check(run(folder, verilog, x_q, 2, in_stall=0.3, out_stall=0.5, seed=2))


def test_pt2_maximum_magnitudes_do_not_overflow(tmp_path):
    rng = np.random.default_rng(0)
    trits = np.ones((1, 3, 256), np.int8)
    top = (2**15 - 1) / 2**15  # a_q = m_q = 2^(S-1) - 1 exactly
    golden = GoldenLayer(trits, np.full((1, 3, 2), top), 256, 128, IntConfig(8, 16), offsets=np.full((3, 2), top))
    folder, verilog = image_and_verilog(tmp_path, golden, 16, 1)
    x = x_vectors(golden, 2, int(rng.integers(100)))
    check(run(folder, verilog, x, 1))
    worst = 2 * 2 * 128 * golden.config.q_max * (2**15 - 1)  # ng * (plane + offset) * G * Q * max
    assert golden.acc(x).max() == worst and worst.bit_length() + 1 == golden.acc_bits
