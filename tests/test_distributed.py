"""Distributed quantization on torch.distributed (gloo, 2 CPU processes via torchrun): the
artifact is byte-identical to one process's, and a rank that dies leaves parts a rerun uses."""

import os
import subprocess
import sys
from pathlib import Path

from test_streaming import sharded, tensors

from ptqtp import PTQTPConfig
from ptqtp.formats.checkpoint import shard_of, stream_quantize

TORCHRUN = Path(sys.executable).parent / "torchrun"
ARGS = ["--group-size", "32"]


def torchrun(*argv, script=None, timeout=300):
    launch = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2"]
    target = [script] if script else ["-m", "ptqtp.tools.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        launch + target + list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=Path(__file__).parent,
    )  # not the repository root (its kernels/ shadows a PyPI name)


def test_shards_are_balanced_and_cover_everything():
    shapes = [(100, 10), (5,), (50, 10), (60, 10), (1,), (40, 10)]
    parts = [shard_of(shapes, r, 2) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == list(range(6)) and not set(parts[0]) & set(parts[1])
    # by hand, largest first to the lighter rank: 1000 -> 0, 600 -> 1, 500 -> 1 (1100),
    # 400 -> 0 (1400), 5 -> 1 (1105), 1 -> 1 (1106)
    assert parts == [[0, 5], [1, 2, 3, 4]]
    assert shard_of(shapes, 0, 1) == list(range(6))


def test_two_ranks_give_the_single_process_artifact(tmp_path):
    src = sharded(tmp_path, tensors())
    ref = stream_quantize(src, tmp_path / "ref.safetensors", config=PTQTPConfig(group_size=32), progress=False)
    out = tmp_path / "dist.safetensors"
    proc = torchrun("quantize", str(src), "-o", str(out), "--distributed", *ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_bytes() == ref.read_bytes()
    assert not (tmp_path / "dist.safetensors.parts").exists()


KILL_RANK_1 = """
import os, sys
import ptqtp.formats.checkpoint as ck
from ptqtp.tools.cli import main
orig, done = ck.atomic_write, [0]
def write(path, fn):
    orig(path, fn)
    if os.environ["RANK"] == "1" and path.parent.name.endswith(".parts") and path.name[0].isdigit():
        done[0] += 1
        if done[0] == 2:
            os._exit(7)  # rank 1 dies after two parts
ck.atomic_write = write
sys.exit(main(sys.argv[1:]))
"""


def test_a_dead_rank_leaves_parts_and_the_rerun_finishes_identically(tmp_path):
    src = sharded(tmp_path, tensors())
    ref = stream_quantize(src, tmp_path / "ref.safetensors", config=PTQTPConfig(group_size=32), progress=False)
    out = tmp_path / "dist.safetensors"
    script = tmp_path / "die.py"
    script.write_text(KILL_RANK_1)
    proc = torchrun("quantize", str(src), "-o", str(out), "--distributed", *ARGS, script=str(script))
    assert proc.returncode != 0 and not out.exists()
    left = sorted(p.name for p in (tmp_path / "dist.safetensors.parts").glob("0*.safetensors"))
    assert len(left) >= 2
    proc = torchrun("quantize", str(src), "-o", str(out), "--distributed", *ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_bytes() == ref.read_bytes()


def test_distributed_needs_torchrun(tmp_path, capsys):
    from ptqtp.tools.cli import main

    src = sharded(tmp_path, tensors())
    env = {k: os.environ.pop(k) for k in ("RANK", "WORLD_SIZE") if k in os.environ}
    try:
        assert main(["quantize", str(src), "-o", str(tmp_path / "o.safetensors"), "--distributed", *ARGS]) == 2
    finally:
        os.environ.update(env)
    assert "launched by torchrun" in capsys.readouterr().err


STAND_IN_SYNTHESIS = """
import json, os, sys
from pathlib import Path
from ptqtp.workflows import dse
from ptqtp.tools.cli import main
log = Path(sys.argv[1]); argv = sys.argv[2:]
def synthesise(p, seed=1):
    with open(log, "a") as f:
        f.write(json.dumps([os.environ.get("RANK", "-"), p.label]) + "\\n")
    return {"ecp5": {"LUT": 300 * p.lanes * p.rows, "FF": 1000, "BRAM": 10, "DSP": 8, "LUTRAM": 0},
            "fmax_mhz": 120.7 - p.lanes / 2}
dse.synthesise = synthesise
sys.exit(main(argv))
"""


def test_dse_points_shared_out_over_two_ranks(tmp_path):
    """Each point synthesised once, on one rank; rank 0's dse.json is the one-process one."""
    import json

    import torch

    from ptqtp import quantize, save_artifact

    art = save_artifact(
        tmp_path / "a.safetensors",
        {f"model.layers.0.mlp.{k}": quantize(torch.randn(n, d) * 0.02) for k, n, d in (("up_proj", 64, 128),)},
    )
    script = tmp_path / "dse_stand_in.py"
    script.write_text(STAND_IN_SYNTHESIS)
    sweep = ["--lanes", "16", "32", "64", "--rows", "1", "4", "--data-width", "128", "--board", "ulx3s-85f"]

    def run(launch, name):
        log = tmp_path / f"{name}.log"
        argv = [str(log), "dse", str(art), *sweep, "-o", str(tmp_path / name)]
        if launch == "torchrun":
            proc = torchrun(*argv, "--distributed", script=str(script))
        else:
            proc = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return [json.loads(line) for line in log.read_text().splitlines()], (tmp_path / name / "dse.json").read_text()

    one_log, one = run("python", "one")
    two_log, two = run("torchrun", "two")
    assert two == one
    assert sorted(p for _, p in two_log) == sorted(p for _, p in one_log) and len(one_log) == 6
    assert {r for r, _ in two_log} == {"0", "1"}
