"""Every command's --json output parses and carries its numbers; `ptqtp report` writes
its Markdown and non-empty figures."""

import json

import pytest
import torch

from ptqtp import PTQTPConfig, quantize, save_artifact
from ptqtp.tools.cli import main


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    layers = {
        f"model.layers.{i}.{k}": quantize(torch.randn(n, 128, generator=g) * 0.02, config=PTQTPConfig())
        for i in range(3)
        for k, n in (("self_attn.q_proj", 32), ("mlp.up_proj", 48))
    }
    return save_artifact(tmp_path_factory.mktemp("rep") / "a.safetensors", layers)


def test_report_writes_markdown_and_figures(art, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(art), "--samples", "8", "-o", str(out), "--json", str(tmp_path / "r.json")]) == 0
    text = (out / "report.md").read_text()
    for png in ("error_hist.png", "error_by_layer.png", "budget.png"):
        assert f"]({png})" in text
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / png).stat().st_size > 5000
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["layers"] == 6 and {"A", "S", "integer output vs float planes"} <= set(rec["budget"][0])
    assert len(rec["budget"]) == 5 * 3  # A in 4..16, S in 8..16


def test_json_outputs_parse(art, tmp_path, capsys):
    j = tmp_path / "x.json"
    assert main(["budget", str(art), "--samples", "4", "--json", str(j)]) == 0
    rows = json.loads(j.read_text())["rows"]
    assert rows and all(r["integer output vs float planes"] >= 0 for r in rows)
    assert main(["compare", str(art), "--samples", "2", "--backends", "golden", "--json", str(j)]) == 0
    assert json.loads(j.read_text())["rows"][0]["bit_exact"] == "64/64"
    assert main(["plan", str(art), "--board", "arty-a7-100t", "--json", str(j)]) == 0
    assert json.loads(j.read_text())[0]["decode_tokens_per_s"] > 0
    assert main(["export", str(art), "-o", str(tmp_path / "mi"), "--json", str(j)]) == 0
    assert len(json.loads(j.read_text())) == 6
    assert json.loads((tmp_path / "mi" / "manifest.json").read_text())["layout"]["lanes"] == 16  # engine default
    assert main(["hdl", "--no-synth", "-o", str(tmp_path / "e.v"), "--json", str(j)]) == 0
    assert json.loads(j.read_text())["verilog"].endswith("e.v")
