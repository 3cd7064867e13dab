"""7B-scale benchmark: quantize a Llama-2-7B-shaped checkpoint on this machine.

    .venv/bin/python -m ptqtp.tools.bench_7b [--dir /tmp/ptqtp-7b] [--interrupt-after S] [--reference]

Writes (once; reused while its stamp matches) a synthetic checkpoint with the exact tensor
names, shapes and dtype of Llama-2-7B (32 blocks, hidden 4096, MLP 11008, vocab 32000,
bf16, two shards and an index as the release has, about 13 GB): heavy-tailed weights (a
Gaussian scale mixture) with a few outlier input channels, seeded per tensor, written
tensor by tensor so the writer never holds a shard. Then runs ``ptqtp quantize`` on it
(calibration-free PTQTP) in a subprocess and reports wall time, weights/s, the child's
peak resident memory (``os.wait4``) and bytes written. ``--interrupt-after S`` kills
the first run after S seconds (SIGKILL) and resumes it; ``--reference`` also runs it
uninterrupted into a second file and compares the two artifacts byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import torch

from ptqtp.formats.artifact import file_sha256
from ptqtp.workflows.report import markdown_table

HIDDEN, MLP, VOCAB, BLOCKS = 4096, 11008, 32000, 32
SHARD_SPLIT = 24  # blocks 0..23 in shard 1, the rest (and the head) in shard 2, as the release


def tensor_plan() -> list[tuple[str, tuple[int, ...], int]]:
    """(name, shape, shard) of every tensor of Llama-2-7B, in the release's order."""
    plan = [("model.embed_tokens.weight", (VOCAB, HIDDEN), 1)]
    for b in range(BLOCKS):
        shard = 1 if b < SHARD_SPLIT else 2
        p = f"model.layers.{b}."
        plan += [
            (p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN), shard),
            (p + "self_attn.k_proj.weight", (HIDDEN, HIDDEN), shard),
            (p + "self_attn.v_proj.weight", (HIDDEN, HIDDEN), shard),
            (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN), shard),
            (p + "mlp.gate_proj.weight", (MLP, HIDDEN), shard),
            (p + "mlp.up_proj.weight", (MLP, HIDDEN), shard),
            (p + "mlp.down_proj.weight", (HIDDEN, MLP), shard),
            (p + "input_layernorm.weight", (HIDDEN,), shard),
            (p + "post_attention_layernorm.weight", (HIDDEN,), shard),
        ]
    plan += [("model.norm.weight", (HIDDEN,), 2), ("lm_head.weight", (VOCAB, HIDDEN), 2)]
    return plan


def synthetic(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Heavy-tailed, LLM-like values for one tensor, bf16, reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    if len(shape) == 1:
        return (1.0 + 0.1 * torch.randn(shape, generator=g)).to(torch.bfloat16)
    w = torch.randn(shape, generator=g)
    w.mul_(torch.exp(0.5 * torch.randn(shape, generator=g)))  # scale mixture: heavy tails
    cols = torch.randperm(shape[1], generator=g)[: max(1, shape[1] // 512)]
    w[:, cols] *= 8.0  # a few outlier input channels
    return w.mul_(0.02 / 1.3).to(torch.bfloat16)


def write_checkpoint(folder: Path) -> None:
    """The two shards, their index and config.json, streamed one tensor at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    plan = tensor_plan()
    names = {1: "model-00001-of-00002.safetensors", 2: "model-00002-of-00002.safetensors"}
    for shard, fname in names.items():
        entries = [(n, s) for n, s, k in plan if k == shard]
        header, offset = {}, 0
        for n, s in entries:
            size = 2 * int(torch.tensor(s).prod())
            header[n] = {"dtype": "BF16", "shape": list(s), "data_offsets": [offset, offset + size]}
            offset += size
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        tmp = folder / f".{fname}.tmp"
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            for n, s in entries:
                seed = int(hashlib.sha256(n.encode()).hexdigest()[:8], 16)
                f.write(synthetic(n, s, seed).view(torch.int16).numpy().tobytes())
                print(f"  wrote {n}", file=sys.stderr, flush=True)
        tmp.replace(folder / fname)
    index = {
        "metadata": {"total_size": sum(2 * int(torch.tensor(s).prod()) for _, s, _ in plan)},
        "weight_map": {n: names[k] for n, _, k in plan},
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": MLP,
        "num_hidden_layers": BLOCKS,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": VOCAB,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "torch_dtype": "bfloat16",
        "tie_word_embeddings": False,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1))


def run_quantize(src: Path, out: Path, kill_after: float | None = None) -> dict:
    """One ``ptqtp quantize`` subprocess: wall seconds, peak RSS, exit status."""
    cmd = [sys.executable, "-m", "ptqtp.tools.cli", "quantize", str(src), "-o", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
    _, status, usage = os.wait4(proc.pid, 0)
    return {
        "seconds": time.perf_counter() - t0,
        "peak_rss": usage.ru_maxrss * 1024,
        "status": os.waitstatus_to_exitcode(status),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=Path("/tmp/ptqtp-7b"), help="work folder (about 17 GB)")
    p.add_argument("--interrupt-after", type=float, help="kill the first run after this many seconds, then resume")
    p.add_argument("--reference", action="store_true", help="also run uninterrupted and compare bytes")
    args = p.parse_args()
    src = args.dir / "llama2-7b-synthetic"
    stamp = src / "STAMP"
    want = hashlib.sha256(json.dumps(tensor_plan()).encode() + Path(__file__).read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != want:
        t0 = time.perf_counter()
        write_checkpoint(src)
        stamp.write_text(want)
        print(f"checkpoint written in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    ck_bytes = sum(f.stat().st_size for f in src.glob("*.safetensors"))
    weights = sum(int(torch.tensor(s).prod()) for n, s, _ in tensor_plan() if ".layers." in n and len(s) == 2)
    out = args.dir / "llama2-7b.ptqtp.safetensors"
    out.unlink(missing_ok=True)
    rows = []
    first = run_quantize(src, out, args.interrupt_after)
    rows.append(["first run" + (f" (killed at {args.interrupt_after:g} s)" if args.interrupt_after else ""), first])
    if args.interrupt_after:
        parts = len(list(out.with_name(out.name + ".parts").glob("0*.safetensors")))
        print(f"killed with {parts} of {len(tensor_plan())} parts written", file=sys.stderr)
        rows.append(["resumed run", run_quantize(src, out)])
    total = sum(r["seconds"] for _, r in rows)
    table = [
        [what, r["status"], f"{r['seconds'] / 60:.1f} min", f"{r['peak_rss'] / 2**30:.2f} GiB"] for what, r in rows
    ]
    print(
        f"Llama-2-7B-shaped synthetic checkpoint: {ck_bytes / 1e9:.2f} GB bf16, {weights / 1e9:.2f} B block "
        f"weights; artifact {out.stat().st_size / 1e9:.2f} GB"
    )
    print(markdown_table(["run", "exit", "wall", "peak RSS"], table))
    print(
        f"total {total / 60:.1f} min, {weights / total / 1e6:.2f} M weights/s, written {out.stat().st_size / 1e9:.2f} "
        f"GB (+ the same again in parts while running)"
    )
    if args.reference:
        ref = args.dir / "reference.ptqtp.safetensors"
        r = run_quantize(src, ref)
        same = file_sha256(ref) == file_sha256(out)
        print(f"reference run {r['seconds'] / 60:.1f} min; artifacts byte-identical: {same}")


if __name__ == "__main__":
    main()
