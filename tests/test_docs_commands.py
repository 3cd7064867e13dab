"""Every `ptqtp` command the README and docs/ show: each parses with today's options, and
(slow tier) the README's commands run in order on a fresh folder and print what they promise."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ptqtp.tools.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shown_commands(path: Path) -> list[list[str]]:
    """The `ptqtp ...` lines of a document's ```bash blocks, as argv lists (comments dropped)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
        for line in block.splitlines():
            line = re.sub(r"^\$ ", "", line.strip())
            line = re.sub(r"^(\.venv/bin/)?ptqtp ", "ptqtp ", line)
            if line.startswith("ptqtp "):
                out.append(shlex.split(line, comments=True))
    return out


def test_every_documented_command_parses():
    seen = 0
    for doc in DOCS:
        for argv in shown_commands(doc):
            try:
                build_parser().parse_args(argv[1:])
            except SystemExit:
                pytest.fail(f"{doc.name}: `{shlex.join(argv)}` no longer parses")
            seen += 1
    assert seen >= 8


@pytest.mark.slow
@pytest.mark.model
def test_readme_commands_run_in_order(tmp_path):
    """The README's quick tour on an empty folder: each succeeds and says what it did."""
    expect = [
        ("quantize", "artifact"),
        ("eval", "|"),
        ("quantize", "mixed precision"),
        ("eval", "ptqtp-gptq@3.5"),
        ("dse", "At 12 tok/s or more"),
        ("export", "MiB for the engine"),
        ("hdl", "Fmax"),
        ("sim", "MATCH"),
        ("plan", "arty"),
        ("hil", "perplexity"),
        ("generate", "equal golden-int's: True"),
        ("plan", "ztachip"),
        ("soc", "MATCH"),
    ]
    commands = shown_commands(ROOT / "README.md")
    assert [c[1] for c in commands] == [e[0] for e in expect]
    exe = Path(sys.executable).with_name("ptqtp")
    for argv in commands:
        proc = subprocess.run([str(exe), *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=3600)
        assert proc.returncode == 0, f"{shlex.join(argv)}:\n{proc.stderr[-2000:]}"
        want = expect[commands.index(argv)][1]
        assert want in proc.stdout, f"{shlex.join(argv)}:\n{proc.stdout[-2000:]}"
