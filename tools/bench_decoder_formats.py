"""Benchmark: which number formats the integer decoder can afford, one at a time, on the float
model with the same trit planes (torch, fake quantization; the golden decoder itself is
measured by ``ptqtp eval --decoder golden-int``).

    .venv/bin/python -m ptqtp.tools.bench_decoder_formats ART [--tokens 4096] [--context 512] [--json F]

Rows: the float model; the engine's activations at A = 8, 10, 12 bits (per token, every
linear input); the lm_head / embedding table (tied in SmolLM2) as int8 or int6 per row,
int5 and int4 in groups, with its bytes per token. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ptqtp.golden_decoder import IntRows
from ptqtp.models.data import bbc_text, default_tokenizer
from ptqtp.models.evaluate import perplexity
from ptqtp.models.hf import load_quantized
from ptqtp.workflows.report import markdown_table

LM_FORMATS = [(8, 0), (6, 0), (5, 64), (4, 128), (4, 64)]
ACT_BITS = [8, 10, 12]


def _act_hooks(model, state: dict) -> None:
    """Per-token symmetric A-bit fake quantization of every block linear's input (the golden
    quantizer's rule in float: scale max|x| / Q, round to nearest)."""

    def pre(mod, args):
        bits = state.get("bits")
        if bits is None:
            return None
        x = args[0]
        Q = 2 ** (bits - 1) - 1
        s = x.abs().amax(-1, keepdim=True).clamp_min(1e-30) / Q
        return (torch.round(x / s).clamp(-Q, Q) * s,)

    for name, mod in model.named_modules():
        if name.rsplit(".", 1)[-1].endswith("_proj"):
            mod.register_forward_pre_hook(pre)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact", help="model artifact (from ptqtp quantize)")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)
    tok, text = default_tokenizer(), bbc_text("eval")
    model = load_quantized(args.artifact)
    state: dict = {}
    _act_hooks(model, state)
    table = model.model.embed_tokens.weight
    if model.lm_head.weight.data_ptr() != table.data_ptr():
        raise ValueError(f"{args.artifact}: the lm_head is not tied to the embedding table; this bench assumes it is")
    W = table.detach().double().numpy().copy()
    rows = []

    def run(what: str, fmt: str, mb: float | None) -> None:
        t0 = time.perf_counter()
        ppl = perplexity(model, tok, text, args.context, args.tokens)
        base = rows[0]["perplexity"] if rows else ppl
        rows.append(
            {
                "what": what,
                "format": fmt,
                "lm_head_mb_per_token": mb,
                "perplexity": ppl,
                "vs_float": ppl / base,
                "seconds": time.perf_counter() - t0,
            }
        )
        print(f"{what} {fmt}: {ppl:.3f}", flush=True)

    run("float model (same trit planes)", "-", None)
    for bits in ACT_BITS:
        state["bits"] = bits
        run("engine activations", f"A={bits}", None)
    state["bits"] = None
    for bits, group in LM_FORMATS:
        t = IntRows.quantize(W, bits, 16, group)
        with torch.no_grad():
            table.copy_(torch.from_numpy(t.q * t.expanded_scales() * 2.0**-t.F).to(table.dtype))
        run("lm_head / embedding", f"int{bits} {'per row' if not group else f'groups of {group}'}", t.nbytes / 1e6)
    with torch.no_grad():
        table.copy_(torch.from_numpy(W).to(table.dtype))
    print(f"{args.artifact}, BBC evaluation split, {args.tokens} tokens, context {args.context}")
    print(
        markdown_table(
            ["part", "format", "lm_head MB/token", "perplexity", "x float"],
            [
                [
                    r["what"],
                    r["format"],
                    "-" if r["lm_head_mb_per_token"] is None else round(r["lm_head_mb_per_token"], 2),
                    round(r["perplexity"], 3),
                    round(r["vs_float"], 4),
                ]
                for r in rows
            ],
        )
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=lambda o: o.item() if isinstance(o, np.generic) else str(o))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
