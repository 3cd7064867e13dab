"""Resource and Fmax table of the streaming engine over P, R and M (ECP5, LFE5U-85F).

    .venv/bin/python -m ptqtp.tools.bench_engine_hdl [--lanes 16 64] [--rows 1 4] [--vectors 1 4] [--fmax]

The engine is elaborated from its parameters alone (DW = 512, max d = 1536, two planes,
A = 8, S = 16 unless given), so its resources do not depend on any model. Each point is
synthesised with Yosys synth_ecp5; ``--fmax`` also places and routes out of context with
nextpnr-ecp5 (seed 1). Peak throughput: R * P trit positions per plane per cycle.
"""

from __future__ import annotations

import argparse
import sys
import time

from ptqtp.hdl.engine_model import EngineParams
from ptqtp.workflows.report import markdown_table


def main() -> None:
    from ptqtp.hdl.engine import TritEngine  # Amaranth and Yosys: heavy, optional
    from ptqtp.hdl.synth import fit_lines, synth_report, to_verilog

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lanes", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--vectors", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--data-width", type=int, default=512)
    ap.add_argument("--planes", type=int, default=2)
    ap.add_argument("--offset", action="store_true")
    ap.add_argument("--fmax", action="store_true", help="also place and route (minutes per point)")
    args = ap.parse_args()
    rows = []
    for P in args.lanes:
        for R in args.rows:
            for M in args.vectors:
                params = EngineParams(
                    lanes=P,
                    rows=R,
                    vectors=M,
                    data_width=args.data_width,
                    planes=args.planes,
                    offset=args.offset,
                    burst=64,
                )
                t0 = time.perf_counter()
                rep = synth_report(
                    to_verilog(TritEngine(params), name="trit_engine"),
                    top="trit_engine",
                    fmax=args.fmax,
                    generic=False,
                    timeout=3000,
                )
                e = rep["ecp5"]
                fits, _ = fit_lines(e)
                fmax = rep.get("fmax_mhz")
                rows.append(
                    [
                        P,
                        R,
                        M,
                        e["LUT"],
                        e["FF"],
                        e["DSP"],
                        e["BRAM"],
                        e["LUTRAM"],
                        "yes" if fits else "no",
                        f"{fmax:.1f}" if fmax else rep.get("fmax_error", "-"),
                        R * P,
                        rep["lut_mapping"],
                        f"{time.perf_counter() - t0:.0f}",
                    ]
                )
                print(rows[-1], file=sys.stderr, flush=True)
    print(f"engine DW={args.data_width} planes={args.planes} offset={args.offset} max d=1536 A=8 S=16; ECP5 LFE5U-85F")
    print(
        markdown_table(
            [
                "P",
                "R",
                "M",
                "LUT",
                "FF",
                "DSP",
                "BRAM",
                "LUTRAM",
                "fits 85F",
                "Fmax MHz",
                "trits/plane/cycle",
                "LUT mapping",
                "tool s",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
