"""The engine in Verilator under cocotb on real and extreme layers, and the `hdl`, `export`
and `sim` commands end to end. (Per-component tests: tests/test_engine_parts.py; bus-level
engine tests: tests/test_engine.py.)"""

import gzip

import numpy as np
import pytest

from ptqtp import load_artifact, quantize, save_artifact
from ptqtp.formats.model_image import read_model_image, write_model_image
from ptqtp.golden import GoldenLayer, IntConfig
from ptqtp.hdl.engine_model import EngineParams
from ptqtp.workflows.budget import random_activations
from ptqtp.workflows.report import sample_weight
from ptqtp.workflows.simulate import simulate_layers

pytestmark = pytest.mark.rtl


def extreme_layer(n, d, planes=2, offset=False, S=16):
    """Every trit +1 and every scale (and offset) at its largest magnitude: the ACC worst case."""
    top = (2 ** (S - 1) - 1) / 2 ** (S - 1)  # a_q = m_q = 2^(S-1) - 1 exactly
    return GoldenLayer(
        np.ones((planes, n, d), np.int8),
        np.full((planes, n, d // 128), top),
        d,
        128,
        IntConfig(8, S),
        offsets=np.full((n, d // 128), top) if offset else None,
    )


@pytest.mark.parametrize("planes,offset,K", [(2, False, 2), (1, True, 1), (2, False, 4), (1, True, 3)])
def test_maximum_magnitudes_fit_the_engine_accumulator(tmp_path, planes, offset, K):
    """At the engine's widest input the worst-case sum of a layer of its max_planes = K planes
    (in passes when K > planes) needs exactly its ACC bits, and the RTL gives it (and its
    negation) bit for bit."""
    from test_engine import check, run

    params = EngineParams(
        lanes=16, rows=2, planes=planes, max_planes=K, offset=offset, max_d=256, vectors=2, data_width=128, burst=8
    )
    g = extreme_layer(3, 256, K, offset)
    img = read_model_image(write_model_image(tmp_path / "img", {"x": g}, params.layout))
    Q = g.config.q_max
    x = np.stack([np.full(256, Q), np.full(256, -Q)])
    res, _ = run(params, img, [("x", x)])
    check(res)
    passes = -(-K // planes)
    worst = 2 * (K + offset) * 128 * Q * (2**15 - 1)  # groups * terms * G * Q * max scale
    assert g.acc(x)[0].max() == worst
    assert (2 * (passes * planes + offset) * 128 * Q * (2**15 - 1)).bit_length() + 1 == params.acc_bits


def test_real_quantized_layer_with_cycles_near_the_model(tmp_path):
    art = save_artifact(tmp_path / "a.safetensors", {"real": quantize(sample_weight(256, 512, seed=3))})
    params = EngineParams(lanes=16, rows=4, vectors=4, max_d=512)
    rep = simulate_layers(art, params, samples=4)
    assert rep["bit_exact"] and len(rep["runs"]) == 1
    run = rep["runs"][0]
    assert run["model_cycles"] <= run["cycles"] <= run["model_cycles"] + params.run(256, 512, 4).slack()


def test_real_pt2_layer_with_offsets_and_permutation(tmp_path):
    """A calibrated PT^2-LLM layer (one plane, offsets, SSR column order) through artifact, model
    image and the offset engine, under back-pressure and a busy memory."""
    import torch

    from ptqtp.methods.pt2 import pt2_calibrated

    W = sample_weight(96, 320, seed=4)
    X = torch.from_numpy(random_activations(256, 320, seed=5))
    r = pt2_calibrated(W, X.T @ X)
    assert r.perm is not None and r.offsets is not None
    art = save_artifact(tmp_path / "a.safetensors", {"pt2": r})
    params = EngineParams(lanes=16, rows=2, planes=1, offset=True, vectors=2, max_d=384, data_width=128, burst=8)
    rep = simulate_layers(art, params, samples=3, stall=0.3, mem_busy=0.3, seed=2)
    assert rep["bit_exact"] and [r["m"] for r in rep["runs"]] == [2, 1]
    assert load_artifact(art).layers["pt2"].perm is not None


def test_cli_export_hdl_sim(tmp_path, capsys):
    from ptqtp.tools.cli import main

    art = save_artifact(
        tmp_path / "a.safetensors", {f"l{i}": quantize(sample_weight(24, 200, seed=i)) for i in range(2)}
    )
    eng = ["--lanes", "8", "--rows", "2", "--vectors", "2", "--data-width", "64", "--burst", "8", "--max-d", "256"]
    assert main(["export", str(art), "-o", str(tmp_path / "img"), *eng]) == 0
    assert main(["hdl", "-o", str(tmp_path / "e.v"), "--no-synth", *eng]) == 0
    assert "module trit_engine" in (tmp_path / "e.v").read_text()
    assert main(["hdl", "-o", str(tmp_path / "rom.v"), "--no-synth", "--rom", str(tmp_path / "img"), *eng]) == 0
    assert "m_axi__araddr" not in (tmp_path / "rom.v").read_text()  # weights in ROM: no AXI master
    capsys.readouterr()
    waves = ["--waves", str(tmp_path / "w.vcd.gz"), "--from", "100", "--to", "120"]
    assert main(["sim", str(tmp_path / "img"), "--samples", "3", *waves, *eng]) == 0
    out = capsys.readouterr().out
    assert "MATCH: 4 runs on one engine build (compiled bench)" in out
    vcd = gzip.decompress((tmp_path / "w.vcd.gz").read_bytes()).decode()
    assert "$enddefinitions" in vcd and {ln for ln in vcd.splitlines() if ln.startswith("#")} >= {"#1000", "#1200"}
    assert main(["sim", str(art), "--layers", "l1", "--stall", "0.3", "--bench", "cocotb", *eng]) == 0
    assert "MATCH: 1 runs on one engine build (cocotb bench)" in capsys.readouterr().out
    assert main(["sim", str(art), "--bench", "cocotb", *waves, *eng]) == 2
    assert "window (--from/--to) needs the compiled bench" in capsys.readouterr().err
    # an image exported for another engine is refused, naming the folder
    assert main(["sim", str(tmp_path / "img"), *eng[:2], "--rows", "4", *eng[4:]]) == 2
    assert f"{tmp_path / 'img'}: the image was exported for" in capsys.readouterr().err
    assert main(["hdl", "-o", str(tmp_path / "x.v"), "--rows", "3", "--no-synth"]) == 2
    assert "rows" in capsys.readouterr().err
    from ptqtp.sim.runner import wave_format

    try:
        assert wave_format(tmp_path / "w.fst") == "fst"  # the lz4 headers are installed here
    except RuntimeError as e:
        assert "lz4" in str(e) and ".vcd.gz" in str(e)
