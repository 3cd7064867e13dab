"""Resource and Fmax table of the accelerator over lanes P and row units R (ECP5, LFE5U-85F).

    .venv/bin/python -m ptqtp.tools.bench_hdl [--n 64] [--d 512] [--layout ptqtp pt2]

One random layer (G = 128, A = 8, S = 16) per layout: ``ptqtp`` (two planes) or ``pt2``
(PT^2-LLM: one plane plus per-group offsets); each (P, R) is elaborated, synthesised with
Yosys synth_ecp5 and placed and routed out of context with nextpnr-ecp5 (seed 1).
"trit MACs/cycle" counts the weight trits a cycle consumes (both planes for ptqtp).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ptqtp.golden import GoldenLayer
from ptqtp.workflows.report import markdown_table


def main() -> None:
    from ptqtp.hdl.synth import synth_report, to_verilog  # Amaranth and Yosys: heavy, optional
    from ptqtp.hdl.top import AccelParams, TritMatmul, cycles_per_vector

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="layer rows (default 64)")
    ap.add_argument("--d", type=int, default=512, help="layer columns (default 512)")
    ap.add_argument("--lanes", type=int, nargs="+", default=[16, 32, 64], help="P values (default 16 32 64)")
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 4], help="R values (default 1 4)")
    ap.add_argument("--layout", nargs="+", choices=("ptqtp", "pt2"), default=["ptqtp"],
                    help="ptqtp (two planes) and/or pt2 (one plane + offsets); default ptqtp")
    args = ap.parse_args()
    rows = []
    for layout in args.layout:
        planes, offset = (2, False) if layout == "ptqtp" else (1, True)
        rng = np.random.default_rng(0)
        trits = rng.integers(-1, 2, (planes, args.n, args.d)).astype(np.int8)
        offsets = rng.standard_normal((args.n, args.d // 128)) if offset else None
        golden = GoldenLayer(trits, rng.standard_normal((planes, args.n, args.d // 128)), args.d, 128, offsets=offsets)
        for R in args.rows:
            for P in args.lanes:
                params = AccelParams(n=args.n, d_pad=args.d, group_size=128, lanes=P, rows=R, planes=planes,
                                     offset=offset)
                t0 = time.perf_counter()
                cyc = cycles_per_vector(params)
                macs = planes * args.n * args.d / cyc
                try:
                    rep = synth_report(to_verilog(TritMatmul(golden.trits, golden.a_q, params, golden.m_q)))
                except RuntimeError as err:  # reported, not hidden: the row says the tool failed
                    rows.append([layout, P, R, "failed", *["-"] * 6, cyc, f"{macs:.1f}", "n/a",
                                 f"{time.perf_counter() - t0:.0f}"])
                    print(rows[-1], str(err).splitlines()[-1:], flush=True)
                    continue
                e = rep["ecp5"]
                fmax = rep["fmax_mhz"]
                rows.append([layout, P, R, rep["lut_mapping"], e["LUT"], e["FF"], e["DSP"], e["BRAM"], e["LUTRAM"],
                             f"{fmax:.1f}" if fmax else "n/a",
                             cyc, f"{macs:.1f}", f"{macs * fmax / 1e3:.2f}" if fmax else "n/a",
                             f"{time.perf_counter() - t0:.0f}"])
                print(rows[-1], flush=True)
    print(f"\nlayer {args.n}x{args.d}, G=128, A=8, S=16; ECP5 LFE5U-85F")
    print(markdown_table(["layout", "P", "R", "LUT mapping", "LUT", "FF", "DSP", "BRAM", "LUTRAM", "Fmax MHz",
                          "cycles/vector", "trit MACs/cycle", "GMAC/s at Fmax", "tool s"], rows))


if __name__ == "__main__":
    main()
