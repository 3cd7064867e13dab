"""The command line as one tool: every command's --help, shared options with one name,
meaning and default, --json FILE everywhere, and bad input refused with one line and no
files left behind."""

import argparse
import math

import pytest

from ptqtp.hdl.engine_model import EngineParams
from ptqtp.tools.cli import COMMANDS, build_parser, main


def subparsers() -> dict[str, argparse.ArgumentParser]:
    p = build_parser()
    return next(a for a in p._actions if a.dest == "command").choices


def options(sp: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {o: a for a in sp._actions for o in a.option_strings}


def test_every_command_has_help_and_json_file(capsys):
    subs = subparsers()
    assert set(subs) == set(COMMANDS)
    for name, sp in subs.items():
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0 and "--json FILE" in capsys.readouterr().out, name
        assert options(sp)["--json"].metavar == "FILE", name


SHARED = [
    "--lanes",
    "--rows",
    "--vectors",
    "--data-width",
    "--packing",
    "--planes",
    "--offset",
    "--max-d",
    "--burst",
    "--act-bits",
    "--scale-bits",
    "--samples",
    "--layer",
    "--group-size",
]


def test_shared_options_mean_the_same_everywhere():
    """Each shared option has one help text and one default wherever it appears (dse sweeps
    lists of the engine parameters; plan shows both packings unless asked)."""
    seen: dict[str, tuple] = {}
    for name, sp in subparsers().items():
        opts = options(sp)
        for opt in SHARED:
            if opt not in opts or (name == "dse" and opt in ("--lanes", "--rows", "--vectors", "--data-width")):
                continue
            if name in ("quantize", "eval") and opt == "--packing":  # the artifact's packing, not the engine's stream
                continue
            a = opts[opt]
            # the number of random inputs suits each command (budget's statistics need more than
            # sim's cycles); its meaning does not change
            key = (None, a.help.split(" (default")[0].split(",")[0]) if opt == "--samples" else (a.default, a.help)
            if name == "plan" and opt == "--packing":
                assert a.default is None and "default: both" in a.help
                continue
            if name == "generate" and opt == "--act-bits":  # the decoder needs A = 10 (docs/DECODER.md)
                assert a.default is None and "decoder format's, 10" in a.help
                continue
            assert seen.setdefault(opt, (name, *key))[1:] == key, (opt, name, seen[opt][0])
    e = EngineParams()
    for opt, want in (
        ("--lanes", e.lanes),
        ("--rows", e.rows),
        ("--vectors", e.vectors),
        ("--data-width", e.data_width),
        ("--packing", e.packing),
    ):
        assert seen[opt][1] == want
    assert (
        seen["--samples"][2] == "random LLM-like input vectors" and "batch" in seen["--vectors"][2]
    )  # two meanings, two names
    for name, sp in subparsers().items():  # one spelling of the output option
        opts = options(sp)
        assert "--out" not in opts, name
        if "-o" in opts:
            assert opts["-o"].dest == "output", name


@pytest.mark.parametrize(
    "argv,message",
    [
        (["plan", "A", "--bandwidth", "-1", "--fmax", "100"], "positive finite number"),
        (["plan", "A", "--bandwidth", "nan", "--fmax", "100"], "positive finite number"),
        (["plan", "A", "--bandwidth", "1", "--fmax", "0"], "positive finite number"),
        (["compare", "A", "--remote", "nonsense"], "HOST:PORT"),
        (["compare", "A", "--remote", "127.0.0.1:99999"], "HOST:PORT"),
        (["hil", "A", "--layers", "("], "regular expression"),
        (["sim", "A", "--stall", "1.5"], "share in [0, 1)"),
        (["budget", "A", "--samples", "0"], "positive integer"),
    ],
)
def test_impossible_numbers_are_refused_by_the_parser(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and sum("error:" in line for line in err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    import torch

    from ptqtp import quantize, save_artifact

    return save_artifact(tmp_path_factory.mktemp("a") / "a.safetensors", {"l": quantize(torch.randn(8, 128) * 0.02)})


def fails(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(n in err for n in needles), err


def test_bad_inputs_give_one_line_and_leave_nothing(art, tmp_path, capsys, monkeypatch):
    import safetensors.torch
    import torch

    monkeypatch.chdir(tmp_path)
    plain = tmp_path / "plain.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2, 2)}, plain)
    before = set(tmp_path.iterdir())
    fails(capsys, ["inspect", str(plain)], "not a ptqtp artifact", "ptqtp quantize")
    fails(capsys, ["compare", str(art), "--backends", ""], "names no backend")
    fails(capsys, ["compare", str(art), "--backends", "golden,fpga"], "unknown backends ['fpga']")
    fails(capsys, ["sim", str(tmp_path)], "manifest.json", "ptqtp export")
    fails(capsys, ["report", str(art), "--dse", str(tmp_path / "nodse"), "-o", str(tmp_path / "rep")], "run `ptqtp dse")
    assert set(tmp_path.iterdir()) == before  # no half output


def test_compare_lists_each_backend_once_and_triton_floats_only_when_asked(art, capsys):
    assert main(["compare", str(art), "--backends", "golden,golden", "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("golden (integer)") == 1 and "triton float" not in out


def test_plan_marks_assumptions(art, tmp_path, capsys):
    j = tmp_path / "p.json"
    assert main(["plan", str(art), "--board", "arty-a7-100t", "--json", str(j)]) == 0
    out = capsys.readouterr().out
    assert "(assumed)" in out and "not checked" in out
    import json

    rec = json.loads(j.read_text())
    assert {p["fit_checked"] for p in rec} == {False} and len(rec) == 2  # both packings by default
    assert all(math.isfinite(p["decode_tokens_per_s"]) for p in rec)
