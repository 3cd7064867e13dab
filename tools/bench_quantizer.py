"""Benchmark: PTQTP on a 4096 x 4096 float32 matrix versus a straightforward torch version,
and on the Llama-2-7B linear shapes (4096 x 4096, 11008 x 4096, 4096 x 11008).

    .venv/bin/python -m ptqtp.tools.bench_quantizer [--size 4096] [--llama7b]

With CUDA, ``--llama7b`` adds the same shapes on the GPU.

Each method runs in its own subprocess so its peak memory (VmHWM, reset after the
matrix exists) is its own. The fast path runs 5 times (best and median shown; this
machine's timings vary by +-20% run to run), the straightforward one once. Prints one
Markdown table; ratios (best times) come from the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from ptqtp.workflows.report import markdown_table


def straightforward_ptqtp(W: torch.Tensor, G: int = 128, max_iters: int = 50, eps: float = 1e-4):
    """docs/SPEC.md section 1 written plainly over all groups at once: 9 squared errors per element,
    argmin, Gram matrices from the codes. Same algorithm, none of the fast path's tricks."""
    n, d = W.shape
    w = W.reshape(-1, G).to(torch.float32)
    c = torch.tensor([(c1, c2) for c1 in (-1, 0, 1) for c2 in (-1, 0, 1)], dtype=torch.float32)
    T = torch.where(w >= 0, 1.0, -1.0).unsqueeze(-1).repeat(1, 1, 2)
    a = torch.ones(w.shape[0], 2, dtype=torch.float64)
    lam = torch.full((w.shape[0],), 1e-8, dtype=torch.float64)
    eye = torch.eye(2, dtype=torch.float64)
    for it in range(1, max_iters + 1):  # noqa: B007 - returned: the iterations taken
        S = T.to(torch.float64)
        A = S.transpose(1, 2) @ S + lam[:, None, None] * eye
        kappa = torch.linalg.matrix_norm(A) * torch.linalg.matrix_norm(torch.linalg.inv(A))
        lam = torch.where(kappa >= 1e12, torch.clamp(lam * torch.sqrt(kappa / 1e12), max=1.0), lam)
        A = S.transpose(1, 2) @ S + lam[:, None, None] * eye
        a_new = torch.linalg.solve(A, (S.transpose(1, 2) @ w.to(torch.float64).unsqueeze(-1)).squeeze(-1))
        delta = float((a_new - a).abs().max())
        a = a_new
        levels = a.to(torch.float32) @ c.T  # [g, 9]
        best = ((w.unsqueeze(-1) - levels.unsqueeze(1)) ** 2).argmin(-1)
        T = c[best]
        if delta < eps:
            break
    W_hat = (T * a.to(torch.float32).unsqueeze(1)).sum(-1).reshape(n, d)
    rel = float(torch.linalg.norm((W - W_hat).double()) / torch.linalg.norm(W.double()))
    return it, rel


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def child(method: str, size: int, cols: int | None = None, device: str = "cpu") -> None:
    from ptqtp import quantize_ptqtp

    torch.set_num_threads(torch.get_num_threads())
    W = torch.randn(size, cols or size, generator=torch.Generator().manual_seed(0)).to(device)
    quantize_ptqtp(W[:64])  # warm-up: first-call overheads are not the algorithm
    base = _status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
    times = []
    for _ in range((5 if size * (cols or size) <= 1 << 24 else 3) if method == "ptqtp" else 1):
        t0 = time.perf_counter()
        if method == "ptqtp":
            r = quantize_ptqtp(W)
            iters, rel = r.iterations, r.rel_error
        else:
            iters, rel = straightforward_ptqtp(W)
        if device != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = _status("VmHWM:") - base
    print(
        json.dumps(
            {
                "method": method,
                "seconds": min(times),
                "median": sorted(times)[len(times) // 2],
                "iterations": iters,
                "rel_error": rel,
                "peak_bytes": peak,
                "matrix_bytes": W.numel() * 4,
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--llama7b", action="store_true", help="also the Llama-2-7B linear shapes (fast path only)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--cols", type=int, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.size, args.cols, args.device)
    results = []
    for method in ("ptqtp", "straightforward"):
        out = subprocess.run(
            [sys.executable, "-m", "ptqtp.tools.bench_quantizer", "--child", method, "--size", str(args.size)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    fast = results[0]["seconds"]
    rows = [
        [
            r["method"],
            round(r["seconds"], 3),
            round(r["median"], 3),
            f"{args.size**2 / r['seconds'] / 1e6:.1f} M",
            r["iterations"],
            round(r["rel_error"], 5),
            f"{r['peak_bytes'] / 2**20:.0f} MiB ({r['peak_bytes'] / r['matrix_bytes']:.2f}x)",
            f"{r['seconds'] / fast:.1f}x",
        ]
        for r in results
    ]
    print(f"{args.size}x{args.size} float32, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(
        markdown_table(
            [
                "implementation",
                "seconds (best)",
                "seconds (median)",
                "weights/s",
                "iterations",
                "rel. error",
                "peak extra memory (x matrix)",
                "time vs fast",
            ],
            rows,
        )
    )
    if args.llama7b:
        shapes = [(4096, 4096), (11008, 4096), (4096, 11008)]
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        rows = []
        for device in devices:
            for n, d in shapes:
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "ptqtp.tools.bench_quantizer",
                        "--child",
                        "ptqtp",
                        "--size",
                        str(n),
                        "--cols",
                        str(d),
                        "--device",
                        device,
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                r = json.loads(out.strip().splitlines()[-1])
                rows.append(
                    [
                        f"{n} x {d}",
                        device,
                        round(r["seconds"], 2),
                        round(r["median"], 2),
                        f"{n * d / r['seconds'] / 1e6:.2f} M",
                        r["iterations"],
                        round(r["rel_error"], 5),
                        f"{r['peak_bytes'] / 2**20:.0f} MiB",
                    ]
                )
        print("Llama-2-7B linear shapes (Gaussian weights, fast path):")
        print(
            markdown_table(
                [
                    "shape",
                    "device",
                    "seconds (best)",
                    "seconds (median)",
                    "weights/s",
                    "iterations",
                    "rel. error",
                    "peak extra memory",
                ],
                rows,
            )
        )


if __name__ == "__main__":
    main()
