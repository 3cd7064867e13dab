"""docs/RESULTS.md is generated from what commands wrote, never typed: record a command,
render, and find its figures with their command, date and machine."""

import json
import shlex
import sys

from ptqtp.tools import results


def test_record_and_render(tmp_path):
    folder = tmp_path / "results"
    e = results.record("echo", [sys.executable, "-c", "print('7 passed in 1.0s')"], "a check", folder)
    assert e["exit_code"] == 0 and e["record"] is None and e["tail"] == ["7 passed in 1.0s"]
    saved = json.loads((folder / "echo.json").read_text())
    assert shlex.split(saved["command"])[1:] == ["-c", "print('7 passed in 1.0s')"] and saved["machine"]["cores"]
    text = results.render(folder)
    assert "## a check" in text and "7 passed in 1.0s" in text and saved["date"] in text
    readme = tmp_path / "README.md"
    readme.write_text("top\n<!-- results:begin -->\nold\n<!-- results:end -->\nbottom\n")
    assert results.update_readme(readme, folder)
    body = readme.read_text()
    assert "old" not in body and "| a check | 7 passed in 1.0s (wall" in body and body.endswith("bottom\n")


def test_a_command_json_becomes_its_table(tmp_path):
    sim = {
        "runs": [
            {"layer": "l", "shape": "4x128", "m": 1, "cycles": 90, "model_cycles": 80, "busy": 0.5, "bit_exact": True}
        ],
        "cycles": 90,
        "wall_s": 0.5,
        "cycles_per_s": 180.0,
        "bit_exact": True,
    }
    entry = {
        "name": "s",
        "title": "sim",
        "command": "ptqtp sim x",
        "date": "2026-12-07",
        "wall_s": 1.0,
        "exit_code": 0,
        "tail": [],
        "record": sim,
        "machine": {"cores": 2, "cpu": "c", "memory_gib": 24, "python": "3.11"},
    }
    (tmp_path / "s.json").write_text(json.dumps(entry))
    text = results.render(tmp_path)
    assert "| l | 4x128 | 1 | 90 | 80 | 50.0% | True |" in text and "180 cycles/s" in text
    assert results.headline(entry) == "180 simulated cycles/s; bit-exact: True"


def test_pytest_durations_are_kept(tmp_path):
    out = "==== slowest 2 durations ====\n3.00s call t.py::a\n1.00s call t.py::b\n==== 2 passed ===="
    e = results.record("t", [sys.executable, "-c", f"print({out!r})"], "tests", tmp_path)
    assert e["durations"] == ["3.00s call t.py::a", "1.00s call t.py::b"]
    assert "3.00s call t.py::a" in results.render(tmp_path)


def test_a_synthesis_record_lists_its_worst_path(tmp_path):
    path = [{"through": "u.fsm", "ns": 0.5}, {"through": "mem.0", "ns": 9.25}]
    entry = {
        "name": "h",
        "title": "synth",
        "command": "python -m ptqtp.tools.bench_token_hdl --small",
        "date": "2026-12-08",
        "wall_s": 1.0,
        "exit_code": 0,
        "tail": [],
        "record": {"unit": "core", "LUT": 10, "fmax_by_seed": {"1": 108.1}, "critical_path_by_seed": {"1": path}},
        "machine": {"cores": 2, "cpu": "c", "memory_gib": 24, "python": "3.11"},
    }
    (tmp_path / "h.json").write_text(json.dumps(entry))
    assert "- seed 1: u.fsm 0.5 ns -> mem.0 9.25 ns" in results.render(tmp_path)
