"""The golden integer decoder: each op against a float64 reference, whole models against the
float model with the same trit planes, and prefill == token by token, bit for bit."""

import json
import math

import numpy as np
import pytest
import torch
import transformers as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from ptqtp import ArtifactError, PTQTPConfig, load_artifact
from ptqtp.formats.decoder_weights import decoder_weights
from ptqtp.golden_decoder import (
    FV,
    DecoderArch,
    DecoderFormat,
    GoldenDecoder,
    Scalar,
    exp2_table,
    normalize_rows,
    quantize_vector,
    rsqrt_scalar,
    shift_round,
)
from ptqtp.models.hf import load_quantized, quantize_model, save_quantized

SMALL = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)
ARCHS = {
    "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, SMALL),
    "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM, SMALL),  # q/k/v biases
    "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM, SMALL | {"head_dim": 16}),  # q/k norms
    "mistral": (tf.MistralConfig, tf.MistralForCausalLM, SMALL | {"num_key_value_heads": 1}),
}


def small_artifact(tmp_path, arch, seed=0):
    config_cls, model_cls, kwargs = ARCHS[arch]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**kwargs)).eval()
    # random init leaves norms at 1, biases at 0 and attention nearly uniform: give norms and
    # biases values to carry, and q/k weights the scale that makes positions (RoPE) matter
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(torch.rand_like(p) * (1.5 if "norm" in name else 0.2))
            elif "q_proj" in name or "k_proj" in name:
                p.mul_(8)
    cfg = PTQTPConfig(group_size=32)
    report = quantize_model(model, config=cfg, progress=False)
    return save_quantized(model, tmp_path / f"{arch}.safetensors", report, cfg)


# -- ops against float64 --------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(-(2**40), 2**40), st.integers(-20, 40))
def test_shift_round_is_round_half_up(v, s):
    got = int(shift_round(np.array([v]), s)[0])
    want = math.floor(v / 2**s + 0.5) if s > 0 else v * 2**-s
    assert got == want


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-(2**45), 2**45), min_size=1, max_size=40),
    st.sampled_from([4, 8, 10, 12]),
)
def test_quantize_vector_against_float(values, bits):
    v = np.array([values], dtype=np.int64)
    q, s = quantize_vector(v, bits, FV)
    Q = 2 ** (bits - 1) - 1
    real = v[0] * 2.0**-FV
    amax = np.abs(real).max()
    if amax == 0:
        assert not q.any() and s.m[0] == 0
        return
    assert np.abs(q).max() <= Q and np.abs(q).max() >= Q - 1
    assert abs(s.value()[0] / (amax / Q) - 1) < 2**-14  # 16-bit scale, 24-bit normalized input
    assert np.abs(q[0] * s.value()[0] - real).max() <= amax / Q * (0.5 + 2**-10)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5000, 5000), min_size=4, max_size=64), st.floats(1e-8, 1e-3))
def test_rsqrt_against_float(values, eps):
    h = np.floor(np.array([values]) * 2**FV + 0.5).astype(np.int64)
    hn, sh = normalize_rows(h, up=False)
    r = rsqrt_scalar(hn, sh, eps).value()[0]
    if not h.any():
        return  # the output h w r is 0 whatever r is; v is then only eps, rounded to an integer
    want = 1 / math.sqrt(float(np.mean((h[0] * 2.0**-FV) ** 2)) + eps)
    assert abs(r / want - 1) < 2**-13


def test_scalar_products_and_apply():
    a, b = (
        Scalar.normalize(np.array([3 << 40, 5]), np.array([-50, 3])),
        Scalar.normalize(np.array([7, 1 << 20]), np.array([0, -30])),
    )
    assert np.allclose((a * b).value(), a.value() * b.value(), rtol=2**-15)
    v = np.array([[1000, -77], [3, 0]])
    assert np.allclose(a.apply(v, 0), v * a.value()[:, None], rtol=2**-15, atol=0.5)


def test_exp2_table_and_softmax_weights():
    t = exp2_table(10)
    assert t[0] == 2**16 and np.all(np.diff(t) <= 0)
    assert np.allclose(t, 2**16 * np.exp2(-np.arange(1024) / 1024), atol=0.5)


def attention_float(q, k_q, k_s, v_q, v_s, head_dim):
    """float64 causal attention on the decoder's int8 keys and values."""
    scores = (q @ (k_q * k_s[:, None]).T) / math.sqrt(head_dim)
    scores = np.where(np.tril(np.ones_like(scores)) > 0, scores, -np.inf)
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return p @ (v_q * v_s[:, None])


def test_attention_against_float64_on_the_same_cache():
    arch = DecoderArch(64, 1, 2, 1, 32, 64, 16, 10000.0, 1e-5, max_positions=40)
    dec = GoldenDecoder.__new__(GoldenDecoder)
    GoldenDecoder.__init__(dec, _weights_stub(arch), DecoderFormat(), capacity=40)
    rng = np.random.default_rng(0)
    rows = 24
    real_q = rng.normal(0, 3, (rows, 2, 32))
    real_k, real_v = rng.normal(0, 3, (rows, 1, 32)), rng.normal(0, 1, (rows, 1, 32))
    to_v = lambda x: np.floor(x * 2**FV + 0.5).astype(np.int64)  # noqa: E731
    out = dec.attention(to_v(real_q), to_v(real_k), to_v(real_v), 0, 0) * 2.0**-FV
    c = dec.cache
    k_s = np.ldexp(c.k_m[0, 0, :rows].astype(float), c.k_e[0, 0, :rows])
    v_s = np.ldexp(c.v_m[0, 0, :rows].astype(float), c.v_e[0, 0, :rows])
    for h in range(2):
        q_q, q_s = quantize_vector(to_v(real_q[:, h]), 8, FV)  # the int8 query the decoder uses
        want = attention_float(q_q * q_s.value()[:, None], c.k[0, 0, :rows], k_s, c.v[0, 0, :rows], v_s, 32)
        got = out.reshape(rows, 2, 32)[:, h]
        # 10-bit log2 scores and 16-bit probabilities: about 1e-3 of the value range
        assert np.abs(got - want).max() < 2e-3 * np.abs(real_v).max()


def _weights_stub(arch):
    from ptqtp.golden_decoder import DecoderWeights, IntRows, Norm

    rows = IntRows.quantize(np.ones((arch.vocab, arch.hidden)))
    return DecoderWeights(arch, rows, [], Norm.quantize(np.ones(arch.hidden)), rows)


def test_silu_mul_against_float():
    arch = DecoderArch(64, 1, 2, 1, 32, 64, 16, 10000.0, 1e-5)
    dec = GoldenDecoder(_weights_stub(arch))
    g = np.linspace(-20, 20, 4001)
    u = np.linspace(3, -3, 4001)
    to_v = lambda x: np.floor(x * 2**FV + 0.5).astype(np.int64)  # noqa: E731
    got = dec.silu_mul(to_v(g)[None], to_v(u)[None])[0] * 2.0**-FV
    want = g / (1 + np.exp(-g)) * u
    assert np.abs(got - want).max() < 1e-3  # measured 1.4e-4 per unit of |u|; |u| <= 3 here


# -- whole models ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", list(ARCHS))
def test_decoder_tracks_the_float_model_with_the_same_planes(tmp_path, arch):
    path = small_artifact(tmp_path, arch)
    model = load_quantized(path)
    ids = torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(ids[None]).logits[0].double().numpy()
    dec = GoldenDecoder(decoder_weights(path))
    got = dec.logits(ids.numpy())
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref - ref.mean(axis=1, keepdims=True))
    assert rel < 0.03, rel  # measured 0.008-0.011; a sign flip in RoPE gives 0.2-0.4
    # prefill == token by token, bit for bit (every op is per row or causal)
    dec.reset()
    whole, scale = dec.step(ids[:12].numpy())
    dec.reset()
    parts = [dec.step(ids[:5].numpy()), dec.step(ids[5:6].numpy()), dec.step(ids[6:12].numpy())]
    assert np.array_equal(whole, np.concatenate([p[0] for p in parts]))
    assert np.array_equal(scale, np.concatenate([p[1] for p in parts]))


def test_a_flipped_trit_changes_the_logits(tmp_path):
    path = small_artifact(tmp_path, "llama")
    w = decoder_weights(path)
    ids = np.arange(10)
    base = GoldenDecoder(w).step(ids)[0]
    layer = w.blocks[1].linears["down"]
    layer.trits[0, 0, 0] = -layer.trits[0, 0, 0] if layer.trits[0, 0, 0] else 1
    assert not np.array_equal(GoldenDecoder(w).step(ids)[0], base)


# -- bad input --------------------------------------------------------------------------------


def test_bad_input_is_named(tmp_path):
    path = small_artifact(tmp_path, "llama")
    dec = GoldenDecoder(decoder_weights(path), capacity=16)
    with pytest.raises(ValueError, match="token id 256 is out of range 0..255"):
        dec.step([3, 256])
    dec.step(np.arange(10))
    with pytest.raises(ValueError, match="context 17 tokens exceeds the KV cache's capacity of 16"):
        dec.step(np.arange(7))
    with pytest.raises(ValueError, match=r"not 'gpt2' \(GPT2LMHeadModel\)"):
        DecoderArch.from_hf({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    cfg = json.loads(load_artifact(path).metadata["ptqtp.hf_config"])
    with pytest.raises(ValueError, match="rope_type 'llama3'"):
        DecoderArch.from_hf(cfg | {"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4}})


def test_a_float_block_linear_is_refused(tmp_path):
    path = small_artifact(tmp_path, "llama")
    art = load_artifact(path)
    del art.layers["model.layers.1.mlp.up_proj"]
    with pytest.raises(ArtifactError, match="model.layers.1.mlp.up_proj is not stored as trit planes"):
        decoder_weights(art)


def test_pt2_layers_with_column_orders_and_offsets(tmp_path):
    """PT^2-LLM planes: each of q, k, v has its own column order over one shared quantized
    input, and offsets; the decoder still tracks the float model."""
    from test_hil import small_pt2_model

    model, report = small_pt2_model()
    perms = [report.layers[f"model.layers.0.self_attn.{k}_proj"].perm for k in "qkv"]
    assert all(p is not None for p in perms) and not torch.equal(perms[0], perms[1])
    path = save_quantized(model, tmp_path / "pt2.safetensors", report, PTQTPConfig(group_size=32))
    ids = torch.randint(0, 128, (24,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = load_quantized(path)(ids[None]).logits[0].double().numpy()
    got = GoldenDecoder(decoder_weights(path)).logits(ids.numpy())
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref - ref.mean(axis=1, keepdims=True))
    assert rel < 0.03, rel


@pytest.mark.parametrize("group", [0, 24, 32])
def test_int_rows_logits_and_rows_against_float(group):
    """Grouped row tables (a short last group when the width is not a multiple): the integer
    logits and embedding rows equal float64 products of the same integers."""
    from ptqtp.golden_decoder import IntRows

    rng = np.random.default_rng(3)
    w = rng.normal(0, 1, (50, 80))
    t = IntRows.quantize(w, 4, 16, group)
    assert t.a_q.shape == (50, 1 if not group else -(-80 // group)) and np.abs(t.q).max() == 7
    deq = t.q * t.expanded_scales() * 2.0**-t.F
    assert np.abs(deq - w).max() <= np.abs(w).max() / 7 * 0.5 + 1e-3
    x_q = rng.integers(-511, 512, (3, 80))
    want = x_q.astype(np.float64) @ (t.q * t.expanded_scales()).T.astype(np.float64)
    assert np.array_equal(t.logits(x_q), want.astype(np.int64))
