"""GGUF checkpoints as a tensor source for streaming quantization (``ptqtp quantize x.gguf``).

Tensors are read one at a time with the ``gguf`` package (memory-mapped), dequantized to
float32 (``gguf.quants.dequantize``) and named as transformers names them. The mapping
covers the Llama family that GGUF files use most (``llama``, ``mistral``, ``qwen2``,
``qwen3``); llama.cpp stores Llama/Mistral q and k rows permuted for its rotary layout,
which is undone here (as transformers does when it loads a GGUF). The model's config
comes from transformers' own GGUF reader (``AutoConfig.from_pretrained(gguf_file=...)``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

__all__ = ["GGUFSource", "hf_name"]

_NAMES = [
    (r"token_embd\.weight", "model.embed_tokens.weight"),
    (r"output_norm\.weight", "model.norm.weight"),
    (r"output\.weight", "lm_head.weight"),
    (r"blk\.(\d+)\.attn_q\.(weight|bias)", r"model.layers.\1.self_attn.q_proj.\2"),
    (r"blk\.(\d+)\.attn_k\.(weight|bias)", r"model.layers.\1.self_attn.k_proj.\2"),
    (r"blk\.(\d+)\.attn_v\.(weight|bias)", r"model.layers.\1.self_attn.v_proj.\2"),
    (r"blk\.(\d+)\.attn_output\.(weight|bias)", r"model.layers.\1.self_attn.o_proj.\2"),
    (r"blk\.(\d+)\.attn_q_norm\.weight", r"model.layers.\1.self_attn.q_norm.weight"),
    (r"blk\.(\d+)\.attn_k_norm\.weight", r"model.layers.\1.self_attn.k_norm.weight"),
    (r"blk\.(\d+)\.attn_norm\.weight", r"model.layers.\1.input_layernorm.weight"),
    (r"blk\.(\d+)\.ffn_norm\.weight", r"model.layers.\1.post_attention_layernorm.weight"),
    (r"blk\.(\d+)\.ffn_gate\.weight", r"model.layers.\1.mlp.gate_proj.weight"),
    (r"blk\.(\d+)\.ffn_up\.weight", r"model.layers.\1.mlp.up_proj.weight"),
    (r"blk\.(\d+)\.ffn_down\.weight", r"model.layers.\1.mlp.down_proj.weight"),
]
_ARCHS = ("llama", "mistral", "qwen2", "qwen3")
_PERMUTED = ("llama", "mistral")  # q/k rows interleaved by llama.cpp's converter


def hf_name(name: str) -> str | None:
    """The transformers name of a GGUF tensor name (None if unknown)."""
    for pattern, repl in _NAMES:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, repl, name)
    return None


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's rotary row order of a q or k weight (rows = heads x head_dim)."""
    half = w.shape[0] // heads // 2
    return w.reshape(heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class GGUFSource:
    """The tensors of one GGUF file under transformers names, read one at a time."""

    def __init__(self, path: str | os.PathLike):
        from gguf import GGUFReader

        self.path = Path(path)
        try:
            self._reader = GGUFReader(str(self.path))
        except Exception as e:  # noqa: BLE001 - gguf raises several kinds for a bad file
            raise ValueError(f"{self.path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
        field = self._reader.fields.get("general.architecture")
        self.arch = bytes(field.parts[field.data[0]]).decode() if field else "?"
        if self.arch not in _ARCHS:
            raise ValueError(
                f"{self.path}: GGUF architecture {self.arch!r} is not supported (supported: {', '.join(_ARCHS)})"
            )
        self.heads = self._int(f"{self.arch}.attention.head_count")
        self.kv_heads = self._int(f"{self.arch}.attention.head_count_kv", self.heads)
        self._tensors = {}
        unknown = []
        for t in self._reader.tensors:
            name = hf_name(t.name)
            if name is None:
                unknown.append(t.name)
            else:
                self._tensors[name] = t
        if unknown:
            raise ValueError(f"{self.path}: GGUF tensors without a transformers name: {unknown[:5]}")

    def _int(self, key: str, default: int | None = None) -> int:
        field = self._reader.fields.get(key)
        if field is None:
            if default is None:
                raise ValueError(f"{self.path}: GGUF metadata {key!r} is missing")
            return default
        return int(field.parts[field.data[0]][0])

    def hf_config(self) -> dict:
        """The transformers config of the model, from transformers' GGUF reader."""
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(str(self.path.parent), gguf_file=self.path.name).to_dict()

    def entries(self) -> list[tuple[str, tuple, str]]:
        """(name, shape in torch order, dtype) of every tensor; quantized types read as F32."""
        out = []
        for name, t in self._tensors.items():
            shape = tuple(int(s) for s in reversed(t.shape))
            kind = t.tensor_type.name
            out.append((name, shape, kind if kind in ("F16", "BF16", "F32", "F64") else "F32"))
        return out

    def read(self, name: str) -> torch.Tensor:
        from gguf.quants import dequantize

        t = self._tensors[name]
        shape = tuple(int(s) for s in reversed(t.shape))
        kind = t.tensor_type.name
        if kind in ("F32", "F16", "F64"):
            w = np.array(t.data).reshape(shape)
        else:
            w = dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
        if self.arch in _PERMUTED and re.search(r"self_attn\.(q|k)_proj\.weight$", name):
            w = _unpermute(w, self.heads if ".q_proj." in name else self.kv_heads)
        return torch.from_numpy(np.ascontiguousarray(w))
