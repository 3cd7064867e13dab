"""Benchmark: one token of a model on the token core's RTL (Verilator) at a given context,
against the golden decoder (next id and integer logit) and the plan's cycle model.

    .venv/bin/python -m ptqtp.tools.bench_token ARTIFACT [--context 512] [--tokens 1] [--json F]

The golden decoder prefills context - 1 random token ids (seeded) and hands its KV cache to
the core's memory; then ``--tokens`` tokens run on both. Prints each token's cycles by
opcode class beside the model's (``token_program.token_cycles``) and their difference.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ptqtp.formats.decoder_weights import decoder_weights
from ptqtp.golden_decoder import GoldenDecoder
from ptqtp.hdl.token_program import token_cycles
from ptqtp.workflows.report import markdown_table
from ptqtp.workflows.token import RtlDecoder, token_params


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact")
    ap.add_argument("--context", type=int, default=512, help="the first RTL token's context (default 512)")
    ap.add_argument("--tokens", type=int, default=1)
    ap.add_argument("--capacity", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the record here")
    args = ap.parse_args(argv)
    w = decoder_weights(args.artifact)
    p = token_params(w.arch, capacity=max(args.capacity, args.context + args.tokens - 1))
    rtl = RtlDecoder(w, p)
    golden = GoldenDecoder(w, capacity=p.capacity)
    ids = np.random.default_rng(args.seed).integers(0, w.arch.vocab, args.context + args.tokens - 1)
    t0 = time.perf_counter()
    golden.step(ids[: args.context - 1])
    prefill = time.perf_counter() - t0
    rtl.core.continue_from(golden.cache, args.context - 1)
    rtl.length = args.context - 1

    rows, records = [], []
    for k in range(args.tokens):
        t = int(ids[args.context - 1 + k])
        t0 = time.perf_counter()
        got = rtl.step([t])
        sim_s = time.perf_counter() - t0
        li, _ = golden.step([t])
        want = (int(np.argmax(li[-1])), int(li[-1].max()))
        c = rtl.cycles[-1]
        model = token_cycles(rtl.image.program, p, args.context + k)
        rec = {
            "context": args.context + k,
            "bit_exact": list(got) == list(want),
            "next_id": got[0],
            "rtl_cycles": c["cycles"],
            "model_cycles": round(model["total"]),
            "model_error": model["total"] / c["cycles"] - 1,
            "rtl_parts": {k2: c[k2] for k2 in ("vop", "load", "linear", "kv", "attn", "lmhead")},
            "model_parts": {k2: round(v) for k2, v in model.items()},
            "sim_seconds": round(sim_s, 1),
            "sim_cycles_per_s": round(c["cycles"] / sim_s),
        }
        records.append(rec)
        rows += [
            ["RTL", rec["context"], rec["bit_exact"], f"{c['cycles']:,}"]
            + [f"{c[k2]:,}" for k2 in ("vop", "load", "linear", "kv", "attn", "lmhead")]
        ]
        rows += [
            ["model", rec["context"], "", f"{round(model['total']):,}"]
            + [f"{round(model[k2]):,}" for k2 in ("vop", "load", "linear", "kv", "attn", "lmhead")]
        ]
        print(
            f"context {rec['context']}: RTL {c['cycles']:,} cycles, model {model['total']:,.0f} "
            f"({rec['model_error']:+.2%}); next {got} golden {want}; {sim_s:.1f} s",
            flush=True,
        )
    print(markdown_table(["", "context", "bit-exact", "cycles", "vop", "load", "linear", "kv", "attn", "lmhead"], rows))
    out = {
        "artifact": args.artifact,
        "golden_prefill_seconds": round(prefill, 1),
        "setup_seconds": round(rtl.setup_seconds, 1),
        "tokens": records,
        "all_bit_exact": all(r["bit_exact"] for r in records),
        "max_model_error": max(abs(r["model_error"]) for r in records),
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0 if out["all_bit_exact"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
