"""``ptqtp compare``, ``hil``, ``serve``: running layers on backends."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ptqtp.golden import GoldenLayer
from ptqtp.models.data import bbc_text, default_model, load_tokenizer, read_text_file
from ptqtp.models.hf import load_quantized
from ptqtp.runtime.compare import compare_layer
from ptqtp.runtime.hil import hil_evaluate
from ptqtp.runtime.registry import BACKENDS, make_backend
from ptqtp.runtime.server import serve
from ptqtp.workflows.budget import random_activations
from ptqtp.workflows.report import markdown_table

from ._common import (
    backend_kwargs,
    bench_arg,
    engine_args,
    host_port,
    int_config,
    join_ranks,
    json_arg,
    layer_args,
    non_negative,
    pick_layer,
    port,
    positive,
    regex,
    soc_args,
    token_arg,
    write_json,
)

_LOCAL = tuple(b for b in BACKENDS if b != "remote")


def register(sub) -> None:
    c = sub.add_parser(
        "compare",
        description="Run the same activations through the golden model, the Triton integer kernel, "
        "the RTL in Verilator (and a remote server), plus the float paths.",
    )
    layer_args(c, 8)
    c.add_argument(
        "--backends",
        default="golden,triton,rtl",
        help=f"comma-separated, of {', '.join(BACKENDS)} (default golden,triton,rtl)",
    )
    c.add_argument(
        "--remote",
        type=host_port,
        metavar="HOST:PORT",
        help="host:port of a ptqtp server to include as backend 'remote'",
    )
    token_arg(c, "the remote server's shared secret")
    engine_args(c)
    bench_arg(c)
    soc_args(c)
    json_arg(c, "the rows")
    hl = sub.add_parser(
        "hil",
        description="Load a model artifact, run the layers matching --layers on --backend (the rest "
        "in torch), report perplexity and logit differences against the all-torch model.",
    )
    hl.add_argument("artifact", type=Path, help="model artifact (from ptqtp quantize)")
    hl.add_argument(
        "--layers",
        type=regex,
        default=r"layers\.0\.self_attn\.q_proj",
        help="regex of the layers on the backend (default: block 0's q_proj alone; '.*' for every linear)",
    )
    hl.add_argument(
        "--backend",
        default="golden",
        choices=BACKENDS,
        help="backend for the chosen layers (default golden); rtl: every chosen layer on ONE "
        "engine simulation, weights from a model image in the simulated DRAM ('engine' "
        "is its alias)",
    )
    hl.add_argument("--remote", type=host_port, metavar="HOST:PORT", help="host:port for --backend remote")
    token_arg(hl, "the remote server's shared secret")
    hl.add_argument("--tokens", type=positive, default=256, help="evaluation tokens (default 256)")
    hl.add_argument(
        "--text-file",
        type=Path,
        help="evaluate on this text (plain text, or JSONL with a 'text' field; default: the BBC evaluation split)",
    )
    hl.add_argument(
        "--tokenizer",
        type=Path,
        help="tokenizer folder (default: the artifact's folder, or the shipped model's for its artifacts)",
    )
    hl.add_argument("--context", type=positive, default=128, help="window length (default 128)")
    hl.add_argument("--generate", type=non_negative, default=0, help="also greedily generate this many tokens")
    hl.add_argument("--fp", action="store_true", help="also compare with the shipped model in full precision")
    hl.add_argument(
        "--parts",
        type=Path,
        help="keep each window's result in this folder (one JSON a window, written atomically); a rerun "
        "redoes only the missing windows. Required with --distributed (a folder every rank sees)",
    )
    hl.add_argument(
        "--distributed",
        action="store_true",
        help="run as one rank of torch.distributed: launch with torchrun --nproc_per_node N [--nnodes ...] "
        "-m ptqtp.tools.cli hil ... --distributed --parts DIR; windows are shared out round robin, rank 0 "
        "reports (the same bytes as one process)",
    )
    engine_args(hl)
    bench_arg(hl)
    soc_args(hl)
    json_arg(hl, "the report")
    sv = sub.add_parser("serve")
    sv.add_argument("--backend", default="golden", choices=_LOCAL, help="(default golden)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=port, default=7878, help="port (default 7878)")
    token_arg(sv, "shared secret clients must send first; required to listen beyond loopback")
    engine_args(sv)
    bench_arg(sv)
    soc_args(sv)
    json_arg(sv, "where it listens (host, port, backend) once it does")
    c.set_defaults(func=cmd_compare)
    hl.set_defaults(func=cmd_hil)
    sv.set_defaults(func=cmd_serve)


def cmd_compare(args) -> int:
    name, layer = pick_layer(args.artifact, args.layer)
    golden = GoldenLayer.from_packed(layer, int_config(args))
    backends = list(
        dict.fromkeys([b.strip() for b in args.backends.split(",") if b.strip()] + (["remote"] if args.remote else []))
    )  # each once, in order
    if not backends:
        raise ValueError(f"--backends names no backend; give some of {', '.join(BACKENDS)}")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backends {unknown}; known: {', '.join(BACKENDS)}")
    if "remote" in backends and not args.remote:
        raise ValueError("backend 'remote' needs --remote HOST:PORT")
    rows = compare_layer(
        layer, random_activations(args.samples, layer.in_features), golden, backends, backend_kwargs(args)
    )
    print(f"{name}: {layer.out_features}x{layer.in_features}, {args.samples} vectors")
    print(
        markdown_table(
            ["path", "bit-exact vs golden", "first mismatch", "rel. error vs float64", "seconds"],
            [[r["path"], r["bit_exact"], r["first_mismatch"], r["rel_error"], round(r["seconds"], 2)] for r in rows],
        )
    )
    bad = [r for r in rows if r["first_mismatch"] != "-"]
    write_json(args.json, {"layer": name, "samples": args.samples, "rows": rows})
    return 1 if bad else 0


def cmd_hil(args) -> int:
    torch_model = load_quantized(args.artifact)
    tok = load_tokenizer(args.tokenizer, args.artifact, torch_model.config.to_dict())
    fp_model = default_model()[0] if args.fp else None
    text = bbc_text("eval") if args.text_file is None else read_text_file(args.text_file)
    kw = backend_kwargs(args).get(args.backend, {})
    t0 = time.perf_counter()
    rank, world, barrier, done = 0, 1, None, None
    if args.parts is not None:
        import torch

        torch.set_num_threads(1)  # as every rank does: the float parts reduce in one fixed order
    if args.distributed:
        if args.parts is None:
            raise ValueError("--distributed needs --parts DIR, a folder every rank can read and write")
        rank, world, barrier, done = join_ranks()
    try:
        with make_backend(args.backend, **kw) as backend:
            rep = hil_evaluate(
                torch_model,
                backend,
                args.layers,
                tok,
                text,
                args.tokens,
                args.context,
                int_config(args),
                generate=args.generate,
                fp_model=fp_model,
                parts=args.parts,
                rank=rank,
                world=world,
                barrier=barrier,
            )
    finally:
        if done is not None:
            done()
    if rep is None:  # not rank 0: its windows are in --parts
        return 0
    rep["seconds"] = time.perf_counter() - t0
    rep["tokens_per_s"] = rep["tokens"] / rep["seconds"]
    d = rep["logits_vs_torch"]
    print(
        f"{len(rep['layers'])} layers on {args.backend}: {', '.join(rep['layers'][:4])}"
        f"{' ...' if len(rep['layers']) > 4 else ''}"
    )
    print(
        f"perplexity ({rep['tokens']} tokens, context {rep['context']}): all-torch {rep['ppl_torch']:.3f}, "
        f"HIL {rep['ppl_hil']:.3f}"
    )
    print(
        f"logits vs all-torch: max |diff| {d['max_abs']:.4g}, mean {d['mean_abs']:.4g}, "
        f"argmax agreement {d['argmax_agree']:.3f}"
    )
    if "ppl_golden" in rep:
        print(
            f"same layers on the golden model: perplexity {rep['ppl_golden']:.3f}; logits bit-exact "
            f"with the golden model in every window: {rep['bit_exact_vs_golden']}"
        )
    if args.fp:
        f = rep["logits_vs_fp"]
        print(
            f"FP (shipped model) perplexity {rep['ppl_fp']:.3f}; logits vs FP: max |diff| {f['max_abs']:.4g}, "
            f"mean {f['mean_abs']:.4g}, argmax agreement {f['argmax_agree']:.3f}"
        )
    if "cycles_per_token" in rep:
        c = rep["cycles_per_token"]
        print("simulated engine cycles per token: " + ", ".join(f"{k} {v:,.0f}" for k, v in c.items()))
    print(
        f"wall time {rep['seconds']:.0f} s = {rep['tokens_per_s']:.2f} tokens/s ({rep['windows']} windows, "
        f"{world} process{'es' * (world > 1)})"
    )
    if "generation" in rep:
        print(f"greedy: {rep['generation']!r}")
    write_json(args.json, rep)
    return 0


def cmd_serve(args) -> int:
    kw = backend_kwargs(args).get(args.backend, {})
    backend = make_backend(args.backend, **kw)
    try:
        srv = serve(backend, args.host, args.port, background=True, token=args.token)
    except OSError as e:
        backend.close()
        raise ConnectionError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    except ValueError:  # beyond loopback without a token
        backend.close()
        raise
    try:
        write_json(args.json, {"host": args.host, "port": srv.server_address[1], "backend": args.backend})
        print(
            f"serving ptqtp protocol v1 from the {args.backend} backend on {args.host}:{srv.server_address[1]} "
            f"(Ctrl-C stops)",
            flush=True,
        )
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        srv.shutdown()
        srv.server_close()
        backend.close()
    return 0
