"""Misuse of the CLI ends in one clear line on stderr and exit status 2, never a traceback."""

import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from ptqtp import PTQTPConfig, quantize, save_artifact
from ptqtp.tools.cli import main


def ck(tmp_path):
    path = tmp_path / "ck.safetensors"
    save_file(
        {"model.layers.0.mlp.up_proj.weight": torch.randn(16, 64) * 0.02, "model.norm.weight": torch.ones(64)},
        str(path),
    )
    return path


@pytest.fixture
def art(tmp_path):
    return save_artifact(
        tmp_path / "a.safetensors",
        {"model.layers.0.mlp.up_proj": quantize(torch.randn(16, 64) * 0.02, config=PTQTPConfig())},
    )


def fails(capsys, argv, *needles):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "%|" not in ln]  # progress bars aside
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_quantize_misuse(tmp_path, capsys):
    src = ck(tmp_path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(src.read_bytes()[:60])
    fails(capsys, ["quantize", str(bad), "-o", str(tmp_path / "o.safetensors")], "bad.safetensors", "truncated")
    (tmp_path / "afile").write_text("x")
    fails(capsys, ["quantize", str(src), "-o", str(tmp_path / "afile")], "exists and is not a folder")
    fails(capsys, ["quantize", str(src), "-o", str(src)], "is the input checkpoint")
    fails(capsys, ["quantize", str(src), "-o", str(tmp_path / "o.safetensors"), "--include", "("], "regex")
    fails(
        capsys,
        ["quantize", str(src), "-o", str(tmp_path / "o.safetensors"), "--include", "nothing"],
        "nothing to quantize",
    )
    fails(capsys, ["quantize", str(src), "-o", str(src / "x.safetensors")], "ck.safetensors")  # -o under a file
    (tmp_path / "p.safetensors.parts").write_text("")
    fails(capsys, ["quantize", str(src), "-o", str(tmp_path / "p.safetensors")], "is not a folder")
    fails(capsys, ["quantize", str(tmp_path / "missing"), "-o", str(tmp_path / "o.safetensors")], "no such checkpoint")


def test_artifact_and_export_misuse(tmp_path, capsys, art):
    fails(capsys, ["inspect", str(tmp_path / "nope.safetensors")], "nope.safetensors", "no such artifact")
    fails(capsys, ["inspect", str(tmp_path)], "is a folder")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10" * 40)
    fails(capsys, ["inspect", str(tmp_path / "junk.safetensors")], "junk.safetensors")
    fails(capsys, ["export", str(art), "-o", str(art / "img")], "a.safetensors")  # -o under a file
    fails(capsys, ["hdl", "--rom", str(tmp_path / "no-image"), "-o", str(tmp_path / "t.v"), "--no-synth"], "no-image")
    fails(capsys, ["sim", str(tmp_path / "no-image")], "no-image")


@pytest.mark.parametrize(
    "argv", [["budget", "A", "--samples", "0"], ["compare", "A", "--samples", "-1"], ["serve", "--port", "70000"]]
)
def test_non_positive_counts_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "must be" in capsys.readouterr().err


def test_remote_with_nothing_listening(capsys, art):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    fails(
        capsys,
        ["compare", str(art), "--backends", "golden", "--remote", f"127.0.0.1:{port}"],
        f"cannot reach a ptqtp server at 127.0.0.1:{port}",
    )


def test_serve_on_a_busy_port_or_unknown_host(capsys):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        fails(capsys, ["serve", "--port", str(port)], f"cannot listen on 127.0.0.1:{port}")
    finally:
        busy.close()
    fails(capsys, ["serve", "--host", "no-such-host.invalid", "--port", "0"], "no-such-host.invalid")


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="no such artifact"):
        main(["--debug", "inspect", str(tmp_path / "nope.safetensors")])


def test_a_closed_pipe_is_not_an_error(art):
    cmd = f"{sys.executable} -m ptqtp.tools.cli inspect {art} --json - | head -c 10"
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert proc.stdout and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["hdl", "--no-synth", "-o", "{tmp}/e.v"]])
def test_commands_that_need_no_torch_do_not_import_it(argv, tmp_path):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = (
        "import sys\nfrom ptqtp.tools.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print('TORCH', 'torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)
    assert "TORCH False" in proc.stdout, proc.stdout + proc.stderr
    if argv == ["--version"]:
        from importlib.metadata import version

        assert f"ptqtp {version('ptqtp')}" in proc.stdout
