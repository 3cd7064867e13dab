"""``ptqtp generate``: whole tokens on the integer decoder (docs/SPEC.md section 7)."""

from __future__ import annotations

from pathlib import Path

from ._common import engine_args, engine_params, json_arg, positive, write_json

DEFAULT_PROMPT = "The BBC reported on Monday that"
_BACKENDS = ("golden-int", "rtl", "torch")


def register(sub) -> None:
    g = sub.add_parser(
        "generate",
        description="Greedy generation with every op of a token on the golden integer decoder (token id to "
        "logits: embedding, norms, the trit-plane linears, RoPE, attention over an int8 KV cache, SwiGLU, "
        "lm_head), on the token core's RTL in Verilator (rtl: every token also on golden-int, compared bit "
        "for bit), or on the float model with the same trit planes (torch). Prints the text, the cycles per "
        "token and the projected tok/s on --board.",
    )
    g.add_argument("artifact", type=Path, help="model artifact (from ptqtp quantize)")
    g.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"prompt text (default {DEFAULT_PROMPT!r})")
    g.add_argument("--max-new-tokens", type=positive, default=16, help="tokens to generate (default 16)")
    g.add_argument("--backend", default="golden-int", choices=_BACKENDS, help="(default golden-int)")
    g.add_argument(
        "--compare-torch", action="store_true", help="also generate on the float model and count agreeing tokens"
    )
    g.add_argument("--top-k", type=int, default=0, help="record the top-k integer logits of each step")
    g.add_argument("--kv-bits", type=positive, default=8, help="KV-cache bits (default 8)")
    g.add_argument(
        "--capacity",
        type=positive,
        help="KV-cache capacity in tokens (default: the model's maximum, at most 4096; rtl: 512, the core's build)",
    )
    g.add_argument("--board", default="arty-a7-100t", help="board for the projected tok/s (default arty-a7-100t)")
    g.add_argument("--tokenizer", type=Path, help="tokenizer folder (default: the artifact's, or the shipped model's)")
    engine_args(g)
    g.set_defaults(act_bits=None)  # the decoder's own default A (docs/DECODER.md), not the engine's
    for action in g._actions:
        if action.dest == "act_bits":
            action.help = "activation bits A into the engine (default: the decoder format's, 10)"
    json_arg(g, "the generation")
    g.set_defaults(func=cmd_generate)


def cmd_generate(args) -> int:
    import json

    from ptqtp.formats.artifact import load_artifact
    from ptqtp.formats.decoder_weights import decoder_weights
    from ptqtp.golden_decoder import DecoderFormat, GoldenDecoder
    from ptqtp.models.data import load_tokenizer
    from ptqtp.workflows.generate import generate_int, generate_torch
    from ptqtp.workflows.plan import LayerShape, load_boards, whole_token_plan

    boards = load_boards()
    if args.board not in boards:
        raise ValueError(f"unknown board {args.board!r}; known: {', '.join(boards)}")
    art = load_artifact(args.artifact)
    cfg = json.loads(art.metadata.get("ptqtp.hf_config") or "{}")
    tok = load_tokenizer(args.tokenizer, args.artifact, cfg)
    prompt = tok(args.prompt).input_ids
    if not prompt:
        raise ValueError("the prompt has no tokens")
    if args.act_bits is None:
        args.act_bits = DecoderFormat().act_bits
    fmt = DecoderFormat(act_bits=args.act_bits, scale_bits=args.scale_bits, kv_bits=args.kv_bits)
    weights = decoder_weights(art, fmt)
    capacity = args.capacity or min(weights.arch.max_positions, 4096 if args.backend != "rtl" else 512)
    if len(prompt) + args.max_new_tokens > capacity:
        raise ValueError(
            f"prompt ({len(prompt)} tokens) + --max-new-tokens {args.max_new_tokens} exceeds the KV cache's "
            f"capacity of {capacity} tokens"
        )
    eos = tok.eos_token_id
    rec: dict = {"artifact": str(args.artifact), "prompt": args.prompt, "prompt_tokens": len(prompt)}
    runs = {}
    if args.backend == "golden-int":
        runs["golden-int"] = generate_int(
            GoldenDecoder(weights, fmt, capacity), prompt, args.max_new_tokens, eos, args.top_k
        )
    if args.backend == "rtl":
        from ptqtp.workflows.token import RtlDecoder, generate_rtl, token_params

        group = next(iter(art.layers.values())).group_size
        core = token_params(weights.arch, capacity, args.packing, group, fmt)
        rtl = generate_rtl(
            RtlDecoder(weights, core), GoldenDecoder(weights, fmt, capacity), prompt, args.max_new_tokens, eos
        )
        runs["rtl"] = rtl
        print(
            f"rtl: every step's next token and integer logit equal golden-int's: {rtl['bit_exact']} "
            f"({len(rtl['steps'])} steps, prompt included)"
        )
        if not rtl["bit_exact"]:
            raise RuntimeError(f"the RTL differs from golden-int at step {rtl['first_difference']}")
    if args.backend == "torch" or args.compare_torch:
        from ptqtp.models.hf import load_quantized

        runs["torch"] = generate_torch(load_quantized(args.artifact), prompt, args.max_new_tokens, eos)
    for name, r in runs.items():
        r["text"] = tok.decode(r["ids"])
        print(f"[{name}] {args.prompt}{r['text']}")
        print(f"[{name}] {len(r['ids'])} tokens in {r['seconds']:.1f} s on this host")
    if "torch" in runs and len(runs) == 2:
        a, b = runs[next(k for k in runs if k != "torch")]["ids"], runs["torch"]["ids"]
        same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        rec["agree_prefix"] = same
        print(f"{args.backend} and torch agree on the first {same} of {min(len(a), len(b))} tokens")
    rec["runs"] = runs
    from dataclasses import replace

    group = next(iter(art.layers.values())).group_size
    params = replace(engine_params(args), group_size=group)  # the engine built for this model's G
    layers = [LayerShape(n, l.out_features, l.d_pad, l.planes, l.offsets is not None) for n, l in art.layers.items()]
    context = len(prompt) + args.max_new_tokens
    p = whole_token_plan(layers, params, boards[args.board], weights.arch, fmt, context)
    rec["plan"] = {k: p[k] for k in ("board", "context", "parts", "token_bytes", "token_cycles", "token_tokens_per_s")}
    print(
        f"planned per token at context {context} on {args.board} ({p['bandwidth_gbs']:g} GB/s, {p['fmax_mhz']:g} MHz, "
        f"engine P={params.lanes} R={params.rows} {params.packing}, a 16-lane decoder): {p['token_cycles']:,.0f} "
        f"cycles, {p['token_bytes'] / 1e6:.1f} MB, {p['token_tokens_per_s']:.1f} tok/s"
    )
    from ptqtp.workflows.plan import token_core_plan

    tc = token_core_plan(weights.arch, layers, boards[args.board], context, args.packing, group)
    rec["token_core_plan"] = tc
    print(
        f"the token core as built, on {args.board} at context {context}: {tc['cycles']:,.0f} cycles, "
        f"{tc['tokens_per_s']:.2f} tok/s ({tc['tokens_per_s_per_gbs']:.2f} per GB/s)"
    )
    if "rtl" in runs:
        cyc = runs["rtl"]["cycles_per_token"]
        print(
            f"rtl: {cyc:,.0f} simulated cycles per token (mean over the steps; memory answering a 16-byte word a "
            f"cycle), {boards[args.board].fmax_mhz * 1e6 / cyc:.2f} tok/s at {args.board}'s "
            f"{boards[args.board].fmax_mhz:g} MHz if its memory kept up"
        )
    write_json(args.json, rec)
    return 0
