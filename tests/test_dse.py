"""``ptqtp dse``: synthesis cache, fit, best point per board, Pareto front and plots.

Synthesis results are stand-ins here (the real sweep takes minutes per point); what is
tested is the selection logic against figures derived by hand from ``ptqtp plan``.
"""

import json

import pytest

from ptqtp.hdl import synth
from ptqtp.workflows import dse
from ptqtp.workflows.plan import Board, LayerShape, plan

LAYERS = [
    LayerShape(f"model.layers.{i}.mlp.{k}", n, d)
    for i in range(2)
    for k, n, d in (("up_proj", 256, 128), ("down_proj", 128, 256))
]


def report(lut, ff=1000, bram=10, dsp=8, lutram=0, fmax=100.0):
    return {"ecp5": {"LUT": lut, "FF": ff, "BRAM": bram, "DSP": dsp, "LUTRAM": lutram}, "fmax_mhz": fmax}


SMALL, BIG, HUGE = dse.DesignPoint(16, 1, 4, 128), dse.DesignPoint(64, 4, 4, 512), dse.DesignPoint(64, 8, 4, 512)


def boards():
    ecp5 = Board(
        "e", "ecp5", bandwidth_gbs=100.0, fmax_mhz=100, luts=10_000, family="ecp5", ffs=10_000, bram_blocks=20, dsps=20
    )
    amd = Board(
        "a",
        "amd",
        bandwidth_gbs=100.0,
        fmax_mhz=200,
        luts=50_000,
        family="xilinx-7",
        ffs=50_000,
        bram_blocks=10,
        dsps=20,
    )
    return [ecp5, amd]


def test_fit_rules():
    ecp5, amd = boards()
    assert dse.fits(ecp5, report(9_000)["ecp5"]) == (True, "")
    assert dse.fits(ecp5, report(9_000, lutram=600)["ecp5"]) == (False, "LUT 10200 > 10000")  # LUTRAM = 2 LUTs
    assert dse.fits(ecp5, report(100, bram=21)["ecp5"])[0] is False
    assert dse.fits(amd, report(100, bram=20)["ecp5"])[0] is True  # 20 DP16KD -> 10 RAMB36
    assert dse.fits(amd, report(100, bram=21)["ecp5"]) == (False, "BRAM 11 > 10")


def test_best_point_per_board_is_the_fastest_that_fits():
    synth = {SMALL: report(3_000, fmax=110.7), BIG: report(9_500, fmax=90.2), HUGE: report(20_000, fmax=80.0)}
    rows = dse.explore(LAYERS, synth, boards())
    best = dse.best_per_board(rows)
    # ECP5: HUGE does not fit; BIG is faster than SMALL at its own (floored) Fmax
    assert best["e"]["point"] == BIG and best["e"]["fmax_mhz"] == 90
    want = plan(LAYERS, BIG.params(), Board("x", "", 100.0, 90))["decode_tokens_per_s"]
    assert best["e"]["plan"]["decode_tokens_per_s"] == pytest.approx(want)
    # AMD: everything fits; the board's assumed clock, HUGE has the most rows
    assert best["a"]["point"] == HUGE and best["a"]["fmax_mhz"] == 200
    for r in rows:
        if r["fits"]:
            assert r["plan"]["decode_tokens_per_s"] <= best[r["board"]]["plan"]["decode_tokens_per_s"]
    # a point without a timing result is never chosen on ECP5
    synth[BIG] = {**report(9_500), "fmax_mhz": None, "fmax_error": "ERROR: routing failed"}
    best = dse.best_per_board(dse.explore(LAYERS, synth, boards()))
    assert best["e"]["point"] == SMALL


def test_pareto_front():
    synth = {
        SMALL: report(3_000, fmax=110.0),
        BIG: report(9_500, fmax=90.0),
        HUGE: report(20_000, fmax=80.0),
        dse.DesignPoint(32, 1, 4, 128): report(5_000, fmax=100.0),  # 3.2 G at 5k LUT: beats nothing above
        dse.DesignPoint(16, 2, 4, 128): report(6_000, fmax=50.0),
    }  # 1.6 G at 6k LUT: dominated by P32 R1
    front = dse.pareto_front(synth)
    assert front == [SMALL, dse.DesignPoint(32, 1, 4, 128), BIG, HUGE]


def test_plots_are_written(tmp_path):
    synth = {SMALL: report(3_000, fmax=110.0), BIG: report(9_500, fmax=90.0)}
    best = dse.best_per_board(dse.explore(LAYERS, synth, boards()))
    for path in (
        dse.plot_roofline(tmp_path / "r.png", LAYERS, boards(), best),
        dse.plot_pareto(tmp_path / "p.png", synth),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_synthesis_is_cached_by_verilog_hash(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(synth, "synth_report", lambda text, top, **kw: calls.append(text) or {"ecp5": {"LUT": 1}})
    a = synth.cached_synth_report("module a; endmodule", top="a", cache=tmp_path, seed=1)
    b = synth.cached_synth_report("module a; endmodule", top="a", cache=tmp_path, seed=1)
    c = synth.cached_synth_report("module b; endmodule", top="a", cache=tmp_path, seed=1)
    d = synth.cached_synth_report("module a; endmodule", top="a", cache=tmp_path, seed=2)
    assert (a["cached"], b["cached"], c["cached"], d["cached"]) == (False, True, False, False)
    assert len(calls) == 3 and b["ecp5"] == a["ecp5"]
    # a torn cache file (killed run) is synthesised again, not trusted
    victim = next(tmp_path.glob("*.json"))
    victim.write_text('{"ecp5": ')
    files = {p.name: p for p in tmp_path.glob("*.json")}
    assert len(files) == 3
    for text, seed in (("module a; endmodule", 1), ("module b; endmodule", 1), ("module a; endmodule", 2)):
        synth.cached_synth_report(text, top="a", cache=tmp_path, seed=seed)
    assert len(calls) == 4 and all(json.loads(p.read_text()) for p in files.values())


def test_cli_dse_with_stand_in_synthesis(tmp_path, monkeypatch, capsys):
    import torch

    from ptqtp import PTQTPConfig, quantize, save_artifact
    from ptqtp.tools.cli import main

    art = save_artifact(
        tmp_path / "a.safetensors",
        {
            f"model.layers.0.mlp.{k}": quantize(torch.randn(n, d) * 0.02, config=PTQTPConfig())
            for k, n, d in (("up_proj", 64, 128), ("down_proj", 128, 64))
        },
    )
    monkeypatch.setattr(
        dse, "synthesise", lambda p, seed=1: report(300 * p.lanes * p.rows, fmax=120.7 - p.lanes / 2) | {"cached": True}
    )
    out = tmp_path / "dse"
    assert (
        main(
            [
                "dse",
                str(art),
                "--lanes",
                "16",
                "64",
                "--rows",
                "1",
                "4",
                "--data-width",
                "128",
                "--output",
                str(out),
                "--board",
                "ulx3s-85f",
                "--board",
                "kria-kv260",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "| ulx3s-85f | 0.1 |" in text and "| kria-kv260 | 19.2 |" in text
    record = json.loads((out / "dse.json").read_text())
    assert len(record["sweep"]) == 4 and set(record["best"]) == {"ulx3s-85f", "kria-kv260"}
    assert all((out / f).stat().st_size > 0 for f in ("dse.md", "roofline.png", "pareto.png"))
    # Every point fits both (76,800 LUTs at most); the fastest wins: decode, then prefill, then fewest LUTs.
    # ECP5 runs each point at its own Fmax floored to a MHz but no faster than the SoC's system
    # clock, the KV260 at its assumed 250 MHz.
    from dataclasses import replace

    from ptqtp.workflows.plan import load_boards

    shapes = [LayerShape(k, n, d) for k, n, d in (("up_proj", 64, 128), ("down_proj", 128, 128))]
    for key in ("ulx3s-85f", "kria-kv260"):
        board = load_boards()[key]

        def score(P, R):
            mhz = min(int(120.7 - P / 2), board.fmax_mhz) if key == "ulx3s-85f" else board.fmax_mhz
            p = plan(shapes, dse.DesignPoint(P, R, 4, 128).params(), replace(board, fmax_mhz=mhz))
            return p["decode_tokens_per_s"], p["prefill_tokens_per_s"], -P * R

        P, R = max(((P, R) for P in (16, 64) for R in (1, 4)), key=lambda pr: score(*pr))
        assert record["best"][key]["point"] == {"lanes": P, "rows": R, "vectors": 4, "data_width": 128}, key
