"""Benchmark: ECP5 resources and Fmax (nextpnr seeds 1-5) of the decoder's RTL units.

    .venv/bin/python -m ptqtp.tools.bench_decoder_hdl [--seeds 1 2 3 4 5] [--json F]

Units: the vector quantizer at A = 10 (the engine's inputs) and at 8 bits (the KV cache
and the query), rows up to 1536; the norm's 1/rms scalar unit and the whole RMSNorm at
SmolLM2's d and eps; attention's q.k scores, softmax over up to 2048 keys and p.v;
SwiGLU's silu(g) u; a RoPE pair. Synthesis is cached by the Verilog's hash (``ptqtp hdl``'s
cache).
"""

from __future__ import annotations

import argparse
import json

from ptqtp.hdl.pv import PVUnit
from ptqtp.hdl.rmsnorm import RMSNormUnit
from ptqtp.hdl.rope import RopeUnit
from ptqtp.hdl.rsqrt import RsqrtUnit
from ptqtp.hdl.scores import ScoreUnit
from ptqtp.hdl.softmax import SoftmaxUnit
from ptqtp.hdl.swiglu import SiluMulUnit
from ptqtp.hdl.synth import cached_synth_report, to_verilog
from ptqtp.hdl.vquant import VectorQuantizer
from ptqtp.workflows.report import markdown_table

UNITS = {
    "vector quantizer A=10 (engine input)": lambda: VectorQuantizer(bits=10, depth=1536),
    "vector quantizer 8 bits (KV cache, query)": lambda: VectorQuantizer(bits=8, depth=1536),
    "RMSNorm 1/rms (d = 576, SmolLM2's eps)": lambda: RsqrtUnit(576, 9.999999747378752e-06),
    "RMSNorm, V to V, with its 1/rms unit (d = 576)": lambda: RMSNormUnit(576, 9.999999747378752e-06),
    "attention score q.k in log2 units (head_dim 64)": lambda: ScoreUnit(64),
    "softmax (base 2, rows up to 2048 keys)": lambda: SoftmaxUnit(10, 2048),
    "attention p.v (head_dim 64)": lambda: PVUnit(64),
    "SwiGLU silu(g) u": lambda: SiluMulUnit(),
    "RoPE pair": lambda: RopeUnit(),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)
    rows = []
    for name, make in UNITS.items():
        r = cached_synth_report(to_verilog(make(), name="unit"), top="unit", fmax=True, seeds=args.seeds)
        by_seed = {int(k): v for k, v in r["fmax_by_seed"].items()}
        rows.append({"unit": name, **r["ecp5"], "fmax_by_seed": by_seed, "fmax_min": min(by_seed.values())})
        print(f"{name}: {r['ecp5']}, Fmax {by_seed}", flush=True)
    print(
        markdown_table(
            ["unit", "LUT", "FF", "DSP", "BRAM", "Fmax MHz (seeds " + " ".join(map(str, args.seeds)) + ")", "min"],
            [
                [
                    r["unit"],
                    r["LUT"],
                    r["FF"],
                    r["DSP"],
                    r["BRAM"],
                    " / ".join(f"{f:.1f}" for f in r["fmax_by_seed"].values()),
                    round(r["fmax_min"], 1),
                ]
                for r in rows
            ],
        )
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
