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

__all__ = [
    "random_orthogonal",
    "hadamard",
    "random_hadamard",
    "rotation",
    "fold_norms",
    "rotate_residual",
    "online_hadamard",
    "RotatedInput",
]


def random_orthogonal(dim: int, seed: int = 0) -> torch.Tensor:
    """A float64 orthogonal [dim, dim] matrix from a seeded Gaussian (QR, signs fixed so the
    distribution is Haar)."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def _is_prime(q: int) -> bool:
    return q > 1 and all(q % f for f in range(2, int(q**0.5) + 1))


def _paley(order: int) -> torch.Tensor | None:
    """A Hadamard matrix of ``order`` by Paley's constructions over a prime field: I for
    order = q + 1 with q = 3 mod 4, II for order = 2 (q + 1) with q = 1 mod 4; else None."""
    for q, kind in ((order - 1, 1), (order // 2 - 1, 2)):
        if kind == 2 and order % 2:
            continue
        if not _is_prime(q) or q % 4 != (3 if kind == 1 else 1):
            continue
        squares = {(i * i) % q for i in range(1, q)}
        chi = torch.tensor([0] + [1 if i in squares else -1 for i in range(1, q)], dtype=torch.float64)
        Qm = torch.stack([torch.roll(chi, j) for j in range(q)])  # Q[i, j] = chi(j - i)
        if kind == 1:  # S = [[0, 1^T], [-1, Q]] is skew; H = I + S
            S = torch.zeros(q + 1, q + 1, dtype=torch.float64)
            S[0, 1:], S[1:, 0], S[1:, 1:] = 1, -1, Qm
            return S + torch.eye(q + 1, dtype=torch.float64)
        C = torch.zeros(q + 1, q + 1, dtype=torch.float64)  # symmetric conference matrix
        C[0, 1:], C[1:, 0], C[1:, 1:] = 1, 1, Qm
        plus = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
        minus = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
        eye = torch.eye(q + 1, dtype=torch.float64)
        return torch.kron(C, plus) + torch.kron(eye, minus)
    return None


def hadamard(order: int, fast: bool = False) -> torch.Tensor:
    """A ±1 float64 Hadamard matrix H (H H^T = order I): Sylvester doubling times a Paley core.
    Every power of two and, e.g., 576 = 72 x 8 and 1536 = 384 x 4 are covered; an order with no
    such factorisation is a ``ValueError`` naming it. The core is the largest Paley order
    dividing ``order`` by a power of two; ``fast``: the smallest (576 = 36 x 16, 1536 = 12 x
    128), so x H is a small dense transform and log2 of the rest in butterflies, the form an
    online transform in hardware takes."""
    if not isinstance(order, int) or order < 1:
        raise ValueError(f"a Hadamard order must be a positive integer, not {order!r}")
    cores = []  # (core matrix, doublings left): 1 stands for pure Sylvester
    core, two = order, 1
    while True:
        base = torch.ones(1, 1, dtype=torch.float64) if core == 1 else _paley(core)
        if base is not None:
            cores.append((base, two))
            if not fast:  # the largest core: the first found
                break
        if core % 2:
            break
        core, two = core // 2, two * 2
    if not cores:
        raise ValueError(f"no Hadamard matrix of order {order} from Sylvester and Paley (core {core})")
    base, two = cores[-1]
    h2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    while two > 1:
        base, two = torch.kron(base, h2), two // 2
    return base


def random_hadamard(dim: int, seed: int = 0, fast: bool = False) -> torch.Tensor:
    """An orthogonal float64 [dim, dim]: diag(random signs) H / sqrt(dim) (QuaRot's randomised
    Hadamard); entries are ±1/sqrt(dim), so every weight column mixes all input columns evenly."""
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (dim,), generator=g).to(torch.float64) * 2 - 1
    return signs.unsqueeze(1) * hadamard(dim, fast) / dim**0.5


def rotation(spec: str, dim: int) -> torch.Tensor:
    """The rotation a command line names: ``random:SEED`` (or a bare SEED), ``hadamard:SEED``
    (or ``hadamard``, seed 0)."""
    kind, _, seed = str(spec).partition(":")
    if kind.isdigit() and not seed:
        kind, seed = "random", kind
    seed = seed or "0"
    if kind not in ("random", "hadamard") or not seed.isdigit():
        raise ValueError(f"a rotation is random:SEED or hadamard[:SEED], not {spec!r}")
    return (random_orthogonal if kind == "random" else random_hadamard)(dim, int(seed))


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
def rotate_residual(model, seed: int | str = 0, Q: torch.Tensor | None = None) -> torch.Tensor:
    """Fold the norms, then rotate the residual stream by ``Q`` (default: :func:`rotation`
    of ``seed``, a seeded random orthogonal matrix for an int); in place; returns Q. The
    model's outputs stay the same."""
    inner = _layers(model)
    fold_norms(model)
    hidden = inner.embed_tokens.weight.shape[1]
    Q = rotation(str(seed), hidden) if Q is None else Q.to(torch.float64)
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


class RotatedInput(torch.nn.Module):
    """``linear`` applied to x Q: the online transform in front of a linear whose weight holds
    W Q. The linear stays a child (``.linear``), so quantizers find and replace it."""

    def __init__(self, Q: torch.Tensor, linear: torch.nn.Module):
        super().__init__()
        self.register_buffer("Q", Q)
        self.linear = linear

    def forward(self, x):
        return self.linear(x @ self.Q.to(x.dtype))


@torch.no_grad()
def online_hadamard(model, seed: int = 0) -> int:
    """QuaRot's online rotation of each down_proj's input: W <- W Q and x <- x Q with Q a
    randomised Hadamard matrix of the intermediate size (the same function in exact
    arithmetic; ``mlp.down_proj`` becomes a :class:`RotatedInput`). On hardware this is a fast
    Walsh-Hadamard transform, additions and subtractions only, before down_proj; here it
    measures whether the quantized model gains enough to pay for it. Returns the number of
    layers rotated."""
    inner = _layers(model)
    for layer in inner.layers:
        lin = layer.mlp.down_proj
        Q = random_hadamard(lin.weight.shape[1], seed, fast=True)  # the form a butterfly network computes
        lin.weight.data = (lin.weight.data.double() @ Q).to(lin.weight.dtype)
        layer.mlp.down_proj = RotatedInput(Q.to(lin.weight.dtype), lin)
    return len(inner.layers)
