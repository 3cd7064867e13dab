"""Benchmark: ECP5 resources and Fmax of the whole token core for SmolLM2 (the engine, the
decoder's units, the sequencer and its memories), nextpnr on an LFE5U-85F.

    .venv/bin/python -m ptqtp.tools.bench_token_hdl [--seeds 1] [--capacity 512] [--small] [--json F]

The architecture is SmolLM2-135M's (from ``ptqtp.models.data``'s config, no weights needed),
or with ``--small`` a two-block one of the same design (hidden 128, 4 heads of 32, 64 KV
positions) that places and routes in a fraction of the time, to read the core's own
critical path; the engine is the token core's (P16 R4 M1 DW128, A = 10). Synthesis is
cached by the Verilog's hash (``ptqtp hdl``'s cache). Prints nextpnr's worst path per seed.
"""

from __future__ import annotations

import argparse
import json

from ptqtp.golden_decoder import DecoderArch
from ptqtp.hdl.synth import LFE5U_85F, cached_synth_report, to_verilog
from ptqtp.hdl.token_core import TokenCore
from ptqtp.workflows.token import smollm2_token_params, token_params

#: The small core of the same design: two blocks, hidden 128, 4 heads of 32 (2 kv), vocab 512.
SMALL_ARCH = DecoderArch(
    hidden=128, layers=2, heads=4, kv_heads=2, head_dim=32, intermediate=256, vocab=512, rope_theta=1e4, eps=1e-5
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--capacity", type=int, default=512)
    ap.add_argument("--packing", default="2bit", choices=("2bit", "base3"))
    ap.add_argument("--small", action="store_true", help="the two-block core of the same design, 64 KV positions")
    ap.add_argument("--json", help="write the row here")
    args = ap.parse_args(argv)
    if args.small:
        params = token_params(SMALL_ARCH, capacity=64, packing=args.packing)
    else:
        params = smollm2_token_params(capacity=args.capacity, packing=args.packing)
    r = cached_synth_report(
        to_verilog(TokenCore(params), name="token"), top="token", fmax=True, seeds=args.seeds, timeout=3600
    )
    by_seed = {int(k): v for k, v in r["fmax_by_seed"].items()}
    e = r["ecp5"]
    paths = {int(k): v for k, v in r.get("critical_path_by_seed", {}).items()}
    row = {
        "unit": "token core (" + ("small, 2 blocks" if args.small else "SmolLM2") + ")",
        **e,
        "fmax_by_seed": by_seed,
        "lut_share": e["LUT"] / LFE5U_85F["LUT"],
        "critical_path_by_seed": paths,
    }
    print(f"{row['unit']}: {e}; LUT {row['lut_share']:.1%} of the LFE5U-85F; Fmax {by_seed}")
    for sd, path in paths.items():
        print(f"worst path, seed {sd}: " + " -> ".join(f"{p['through']} ({p['ns']} ns)" for p in path))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
