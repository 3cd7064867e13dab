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
