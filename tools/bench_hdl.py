"""Resource and Fmax table of the accelerator over lanes P and row units R (ECP5, LFE5U-85F).

    .venv/bin/python -m ptqtp.tools.bench_hdl [--n 64] [--d 512]

One random layer (G = 128, A = 8, S = 16); each (P, R) is elaborated, synthesised with
Yosys synth_ecp5 and placed and routed out of context with nextpnr-ecp5 (seed 1).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    from ptqtp.golden import GoldenLayer
    from ptqtp.hdl.synth import synth_report, to_verilog
    from ptqtp.hdl.top import AccelParams, TritMatmul, cycles_per_vector
    from ptqtp.report import markdown_table

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="layer rows (default 64)")
    ap.add_argument("--d", type=int, default=512, help="layer columns (default 512)")
    ap.add_argument("--lanes", type=int, nargs="+", default=[16, 32, 64], help="P values (default 16 32 64)")
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 4], help="R values (default 1 4)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    trits = rng.integers(-1, 2, (2, args.n, args.d)).astype(np.int8)
    golden = GoldenLayer(trits, rng.standard_normal((2, args.n, args.d // 128)), args.d, 128)
    rows = []
    for R in args.rows:
        for P in args.lanes:
            params = AccelParams(n=args.n, d_pad=args.d, group_size=128, lanes=P, rows=R)
            t0 = time.perf_counter()
            cyc = cycles_per_vector(params)
            try:
                rep = synth_report(to_verilog(TritMatmul(golden.trits, golden.a_q, params)))
            except RuntimeError as err:  # reported, not hidden: the row says the tool failed
                rows.append([P, R, "failed", *["-"] * 6, cyc, f"{2 * args.n * args.d / cyc:.1f}", "n/a",
                             f"{time.perf_counter() - t0:.0f}"])
                print(rows[-1], str(err).splitlines()[-1:], flush=True)
                continue
            e = rep["ecp5"]
            macs = 2 * args.n * args.d / cyc
            fmax = rep["fmax_mhz"]
            rows.append([P, R, rep["lut_mapping"], e["LUT"], e["FF"], e["DSP"], e["BRAM"], e["LUTRAM"],
                         f"{fmax:.1f}" if fmax else "n/a",
                         cyc, f"{macs:.1f}", f"{macs * fmax / 1e3:.2f}" if fmax else "n/a",
                         f"{time.perf_counter() - t0:.0f}"])
            print(rows[-1], flush=True)
    print(f"\nlayer {args.n}x{args.d}, G=128, A=8, S=16, ACC={params.acc_bits}; ECP5 LFE5U-85F")
    print(markdown_table(["P", "R", "LUT mapping", "LUT", "FF", "DSP", "BRAM", "LUTRAM", "Fmax MHz", "cycles/vector",
                          "trit MACs/cycle", "GMAC/s at Fmax", "tool s"], rows))


if __name__ == "__main__":
    main()
