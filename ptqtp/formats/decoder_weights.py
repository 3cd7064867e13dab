"""An artifact's model as the integer decoder's weights (docs/SPEC.md section 7): the block
linears as golden trit-plane layers, norms and the embedding / lm_head tables in fixed point."""

from __future__ import annotations

import json
import os

import numpy as np

from ptqtp.golden import GoldenLayer, IntConfig
from ptqtp.golden_decoder import FV, DecoderArch, DecoderBlock, DecoderFormat, DecoderWeights, IntRows, Norm

from .artifact import Artifact, ArtifactError, load_artifact

__all__ = ["decoder_weights", "BLOCK_LINEARS"]

BLOCK_LINEARS = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}


def _host(t) -> np.ndarray:
    t = t.detach().cpu()
    return (t.double() if t.is_floating_point() else t).numpy()


def decoder_weights(source: str | os.PathLike | Artifact, fmt: DecoderFormat | None = None) -> DecoderWeights:
    """The integer decoder's weights from an artifact written by ``ptqtp quantize``.

    Raises ``ArtifactError`` naming the file and tensor when a block linear is not stored as
    trit planes or a tensor is missing, and ``ValueError`` for a model family the decoder
    does not support."""
    fmt = fmt or DecoderFormat()
    art = source if isinstance(source, Artifact) else load_artifact(source)
    path = art.path
    raw = art.metadata.get("ptqtp.hf_config")
    if raw is None:
        raise ArtifactError(f"{path}: no ptqtp.hf_config in the header; the decoder needs the model's config")
    cfg = json.loads(raw)
    arch = DecoderArch.from_hf(cfg)
    config = IntConfig(fmt.act_bits, fmt.scale_bits)

    def tensor(name: str) -> np.ndarray:
        if name not in art.tensors:
            raise ArtifactError(f"{path}: tensor {name} is missing (needed by the integer decoder)")
        return _host(art.tensors[name])

    def norm(name: str) -> Norm:
        return Norm.quantize(tensor(name), fmt.scale_bits)

    blocks = []
    for i in range(arch.layers):
        pre = f"model.layers.{i}."
        linears, biases = {}, {}
        for key, sub in BLOCK_LINEARS.items():
            name = pre + sub
            layer = art.layers.get(name)
            if layer is None:
                raise ArtifactError(
                    f"{path}: {name} is not stored as trit planes; the integer decoder runs every block "
                    f"linear on the engine (quantize it, e.g. without --exclude)"
                )
            linears[key] = GoldenLayer.from_packed(layer, config)
            if layer.bias is not None:
                biases[key] = np.floor(_host(layer.bias) * 2**FV + 0.5).astype(np.int64)
        blocks.append(
            DecoderBlock(
                norm(pre + "input_layernorm.weight"),
                norm(pre + "post_attention_layernorm.weight"),
                linears,
                biases,
                norm(pre + "self_attn.q_norm.weight") if arch.qk_norm else None,
                norm(pre + "self_attn.k_norm.weight") if arch.qk_norm else None,
            )
        )
    embed = IntRows.quantize(tensor("model.embed_tokens.weight"), fmt.lm_bits, fmt.scale_bits, fmt.lm_group)
    if "lm_head" in art.layers:
        raise ArtifactError(f"{path}: lm_head is stored as trit planes; the integer decoder takes an int8 lm_head")
    tied = cfg.get("tie_word_embeddings", False) or "lm_head.weight" not in art.tensors
    lm_head = embed if tied else IntRows.quantize(tensor("lm_head.weight"), fmt.lm_bits, fmt.scale_bits, fmt.lm_group)
    if embed.q.shape != (arch.vocab, arch.hidden):
        raise ArtifactError(
            f"{path}: model.embed_tokens.weight is {embed.q.shape}, the config says {(arch.vocab, arch.hidden)}"
        )
    return DecoderWeights(arch, embed, blocks, norm("model.norm.weight"), lm_head)
