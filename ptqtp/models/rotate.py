"""Residual-stream rotation fused into the weights (QuaRot / SpinQuant style), offline.

For a Llama-family decoder (Llama, Mistral, Qwen2; SmolLM2 is one), every RMSNorm weight
is first folded into the linears that read the normalised stream (q, k, v; gate, up;
lm_head), leaving unit norms; an RMSNorm with unit weight commutes with an orthogonal Q
(rms(x Q) = rms(x)). Then the residual stream is rotated: the embedding rows and every
linear that reads the stream take x Q (W <- W Q), every linear that writes it gives Q^T
(W <- Q^T W), and the lm_head reads x Q. The float model computes the same function (up
to rounding); the weights the quantizer sees have their outliers spread over all columns.
Nothing changes at inference: no online transform, no hardware change.

A tied lm_head (SmolLM2) stays tied where the final norm has unit weight; otherwise the
fold unties it (the lm_head gets its own weight), since the embedding must not be scaled.
Qwen3's q/k norms act per head after the projections and are not touched.
"""

from __future__ import annotations

import torch

__all__ = ["random_orthogonal", "fold_norms", "rotate_residual"]


def random_orthogonal(dim: int, seed: int = 0) -> torch.Tensor:
    """A float64 orthogonal [dim, dim] matrix from a seeded Gaussian (QR, signs fixed so the
    distribution is Haar)."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def _layers(model):
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "embed_tokens"):
        raise ValueError(f"{type(model).__name__}: not a Llama-family decoder (model.model.layers, embed_tokens)")
    for layer in inner.layers:
        attn, mlp = layer.self_attn, layer.mlp
        if not all(hasattr(attn, k) for k in ("q_proj", "k_proj", "v_proj", "o_proj")) or not all(
            hasattr(mlp, k) for k in ("gate_proj", "up_proj", "down_proj")
        ):
            raise ValueError(f"{type(model).__name__}: a block without q/k/v/o and gate/up/down projections")
    return inner


def _scale_columns(linear: torch.nn.Linear, gamma: torch.Tensor) -> None:
    w = linear.weight.data
    linear.weight.data = (w.double() * gamma.double().unsqueeze(0)).to(w.dtype)


@torch.no_grad()
def fold_norms(model) -> None:
    """Fold every RMSNorm weight into the linears that read its output; the norms get unit
    weight. In place."""
    inner = _layers(model)
    for layer in inner.layers:
        g_in, g_post = layer.input_layernorm.weight.data, layer.post_attention_layernorm.weight.data
        for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
            _scale_columns(lin, g_in)
        for lin in (layer.mlp.gate_proj, layer.mlp.up_proj):
            _scale_columns(lin, g_post)
        g_in.fill_(1.0)
        g_post.fill_(1.0)
    g_final = inner.norm.weight.data
    head = model.lm_head
    if not torch.all(g_final == 1):
        if head.weight is inner.embed_tokens.weight:  # tied: give the head its own weight
            head.weight = torch.nn.Parameter(head.weight.data.clone())
            model.config.tie_word_embeddings = False
        _scale_columns(head, g_final)
        g_final.fill_(1.0)


def _rotate_in(linear: torch.nn.Linear, Q: torch.Tensor) -> None:
    w = linear.weight.data
    linear.weight.data = (w.double() @ Q).to(w.dtype)


def _rotate_out(linear: torch.nn.Linear, Q: torch.Tensor) -> None:
    w = linear.weight.data
    linear.weight.data = (Q.t() @ w.double()).to(w.dtype)
    if linear.bias is not None:
        linear.bias.data = (linear.bias.data.double() @ Q).to(linear.bias.dtype)


@torch.no_grad()
def rotate_residual(model, seed: int = 0, Q: torch.Tensor | None = None) -> torch.Tensor:
    """Fold the norms, then rotate the residual stream by ``Q`` (default: a seeded random
    orthogonal matrix); in place; returns Q. The model's outputs stay the same."""
    inner = _layers(model)
    fold_norms(model)
    hidden = inner.embed_tokens.weight.shape[1]
    Q = random_orthogonal(hidden, seed) if Q is None else Q.to(torch.float64)
    if Q.shape != (hidden, hidden):
        raise ValueError(f"Q must be [{hidden}, {hidden}], not {tuple(Q.shape)}")
    emb = inner.embed_tokens.weight
    tied = model.lm_head.weight is emb
    emb.data = (emb.data.double() @ Q).to(emb.dtype)
    for layer in inner.layers:
        for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
            _rotate_in(lin, Q)
        for lin in (layer.mlp.gate_proj, layer.mlp.up_proj):
            _rotate_in(lin, Q)
        _rotate_out(layer.self_attn.o_proj, Q)
        _rotate_out(layer.mlp.down_proj, Q)
    if not tied:
        _rotate_in(model.lm_head, Q)
    return Q
