"""GPU benchmark of the Triton trit-plane kernels (needs CUDA; prints one Markdown table).

    .venv/bin/python -m ptqtp.tools.bench_kernels

For m in {1, 16, 512} and the issue's shapes: torch fp16 matmul (cuBLAS), dequantize then
matmul, and ``trit_matmul`` from packed codes; time (triton.testing.do_bench, median),
achieved GB/s of the bytes the trit kernel must read (packed codes + fp16 scales + x),
and the speed-up over fp16, all measured in the same run; ``trit_matmul`` once on 2-bit
codes and once on base-3 codes (5 trits a byte, 20% fewer bytes, decoded in the kernel).
"""

from __future__ import annotations

import sys

import torch

from ptqtp.formats.packing import pack_trits, unpack_trits
from ptqtp.workflows.report import markdown_table

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (28672, 8192)]  # (out n, in d)


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("bench_kernels: no CUDA device; the kernels' CPU tests run under TRITON_INTERPRET=1 in ./test.sh")
    from triton.testing import do_bench  # Triton: heavy, optional

    from ptqtp.kernels import trit_matmul

    rows = []
    for n, d in SHAPES:
        trits = torch.randint(-1, 2, (2, n, d), dtype=torch.int8, device="cuda")
        codes, codes3 = pack_trits(trits), pack_trits(trits, "base3")
        scales = (torch.rand(2, n, d // 128, device="cuda") * 0.01).half()
        w16 = ((unpack_trits(codes).half().view(2, n, -1, 128) * scales.unsqueeze(-1)).sum(0)).view(n, d)

        def dequant_matmul(x):
            t = unpack_trits(codes).half().view(2, n, -1, 128)
            return x @ ((t * scales.unsqueeze(-1)).sum(0)).view(n, d).T

        for m in (1, 16, 512):
            x = torch.randn(m, d, device="cuda", dtype=torch.float16)
            t_fp16 = do_bench(lambda: x @ w16.T)
            t_deq = do_bench(lambda: dequant_matmul(x))
            t_trit = do_bench(lambda: trit_matmul(x, codes, scales))
            t_b3 = do_bench(lambda: trit_matmul(x, codes3, scales, packing="base3"))
            nbytes = codes.numel() + scales.numel() * 2 + x.numel() * 2
            rows.append(
                [
                    f"{n}x{d}",
                    m,
                    round(t_fp16 * 1e3, 1),
                    round(t_deq * 1e3, 1),
                    round(t_trit * 1e3, 1),
                    round(t_b3 * 1e3, 1),
                    round(nbytes / t_trit / 1e6, 1),
                    round(t_fp16 / t_trit, 2),
                    round(t_fp16 / t_b3, 2),
                ]
            )
    print(torch.cuda.get_device_name())
    print(
        markdown_table(
            [
                "n x d",
                "m",
                "fp16 matmul us",
                "dequant+matmul us",
                "trit_matmul us",
                "base-3 us",
                "trit GB/s",
                "speed-up vs fp16",
                "base-3 speed-up",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
