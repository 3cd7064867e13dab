"""Hardware in the loop window by window: the report is the same bytes however the windows
are shared out (one process, two ranks in turn, two torchrun processes), a rerun redoes
only missing or stale windows, and the rtl backend's logits equal the golden model's."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_own_model import write_model_folder

import ptqtp.runtime.hil as hil
from ptqtp.runtime.backends import GoldenBackend

TORCHRUN = Path(sys.executable).parent / "torchrun"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """test_own_model's small random Llama folder (tokenizer, eval.txt), quantized with G = 128."""
    from ptqtp.tools.cli import main

    root = write_model_folder(tmp_path_factory.mktemp("hilw"))
    assert main(["quantize", str(root / "model"), "-o", str(root / "q.safetensors")]) == 0
    return root


def evaluate(root, backend, **kw):
    from ptqtp.models.data import load_tokenizer
    from ptqtp.models.hf import load_quantized

    m = load_quantized(root / "q.safetensors")
    tok = load_tokenizer(root / "model", root / "q.safetensors", m.config.to_dict())
    text = (root / "eval.txt").read_text()
    return hil.hil_evaluate(m, backend, r"layers\.0\.", tok, text, 200, 48, progress=False, **kw)


def test_windows_like_perplexity():
    assert hil.windows(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert hil.windows(9, 4) == [(0, 4), (4, 8)]  # a last window of one token predicts nothing


def test_shared_out_windows_give_the_same_report_and_reruns_redo_only_what_is_missing(model, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    one = evaluate(model, GoldenBackend())
    assert one["windows"] == 5 and len(one["window_nll"]) == 5
    parts = tmp_path / "parts"
    assert evaluate(model, GoldenBackend(), parts=parts, rank=1, world=2) is None  # windows 1, 3
    assert sorted(p.name for p in parts.iterdir()) == ["window-00001.json", "window-00003.json"]
    two = evaluate(model, GoldenBackend(), parts=parts, rank=0, world=2)
    assert json.dumps(two) == json.dumps(one)

    calls = []
    real = hil.evaluate_window
    monkeypatch.setattr(hil, "evaluate_window", lambda *a: calls.append(1) or real(*a))
    (parts / "window-00002.json").unlink()  # a rank died before writing it
    stale = json.loads((parts / "window-00004.json").read_text())
    (parts / "window-00004.json").write_text(json.dumps({**stale, "key": "another evaluation", "nll_hil": 0.0}))
    again = evaluate(model, GoldenBackend(), parts=parts)
    assert len(calls) == 2 and json.dumps(again) == json.dumps(one)

    (parts / "window-00001.json").unlink()
    with pytest.raises(RuntimeError, match="window 1 was not evaluated"):
        evaluate(model, GoldenBackend(), parts=parts, rank=0, world=2)
    with pytest.raises(ValueError, match="needs a parts folder"):
        evaluate(model, GoldenBackend(), rank=0, world=2)


@pytest.mark.rtl
def test_every_layer_of_a_block_on_the_compiled_engine_is_bit_exact(model):
    from ptqtp.hdl.engine_model import EngineParams
    from ptqtp.runtime.engine import EngineBackend

    params = EngineParams(lanes=8, rows=2, data_width=64, max_d=384, vectors=4, burst=8, outstanding=2)
    with EngineBackend(params) as engine:
        rep = evaluate(model, engine)
    assert rep["bit_exact_vs_golden"] and rep["ppl_golden"] == rep["ppl_hil"]
    assert rep["cycles_per_token"]["total"] > 0


def test_two_torchrun_processes_give_the_single_process_report(model, tmp_path):
    argv = [
        "hil",
        str(model / "q.safetensors"),
        "--tokenizer",
        str(model / "model"),
        "--text-file",
        str(model / "eval.txt"),
        "--layers",
        r"layers\.0\.",
        "--tokens",
        "200",
        "--context",
        "48",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def report(cmd, name):
        out = tmp_path / f"{name}.json"
        proc = subprocess.run(
            cmd + ["--parts", str(tmp_path / name), "--json", str(out)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,  # not the repository root (its kernels/ shadows a PyPI name)
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        rep = json.loads(out.read_text())
        rep.pop("seconds"), rep.pop("tokens_per_s")
        return rep

    single = report([sys.executable, "-m", "ptqtp.tools.cli", *argv], "one")
    ranks = report(
        [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "ptqtp.tools.cli", *argv, "--distributed"],
        "two",
    )
    assert json.dumps(ranks) == json.dumps(single)
