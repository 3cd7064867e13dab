"""Model-level quantization on six architectures, built offline from their config classes."""

import pytest
import torch
import transformers as tf

from ptqtp import ArtifactError, PTQTPConfig, load_artifact
from ptqtp.kernels import TritPlaneLinear
from ptqtp.models.hf import load_quantized, quantizable_linears, quantize_model, save_quantized

SMALL = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)
ARCHS = {
    "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, SMALL, 14),
    "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM, SMALL, 14),
    "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM, SMALL | {"head_dim": 16}, 14),
    "mistral": (tf.MistralConfig, tf.MistralForCausalLM, SMALL, 14),
    "gpt2": (
        tf.GPT2Config,
        tf.GPT2LMHeadModel,
        dict(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0),
        8,
    ),
    "opt": (
        tf.OPTConfig,
        tf.OPTForCausalLM,
        dict(
            vocab_size=128,
            hidden_size=64,
            ffn_dim=160,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
            word_embed_proj_dim=64,
        ),
        12,
    ),
}
CFG = PTQTPConfig(group_size=32)


def build(arch, seed=0):
    config_cls, model_cls, kwargs, _ = ARCHS[arch]
    torch.manual_seed(seed)
    return model_cls(config_cls(**kwargs)).eval()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_quantize_save_load_forward_bit_exact(tmp_path, arch):
    model = build(arch)
    ref = build(arch)
    n_layers = ARCHS[arch][3]
    report = quantize_model(model, config=CFG, progress=False)
    assert len(report.layers) == n_layers
    assert sum(isinstance(m, TritPlaneLinear) for m in model.modules()) == n_layers
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(ids).logits
        # the quantized layers compute x W_hat^T + b with W_hat from the float16-scaled planes
        fp = ref(ids).logits
    assert not torch.equal(logits, fp)
    path = save_quantized(model, tmp_path / f"{arch}.safetensors", report, CFG)
    loaded = load_quantized(path)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, logits)
    out = loaded.generate(ids[:1, :4], max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape == (1, 7)
    # embeddings and norms stay in full precision, unchanged
    emb = next(k for k in load_artifact(path).tensors if "emb" in k or "wte" in k)
    assert torch.equal(load_artifact(path).tensors[emb], ref.state_dict()[emb])


def test_gpt2_conv1d_weights_are_transposed():
    model = build("gpt2")
    conv = model.transformer.h[0].mlp.c_fc
    w = conv.weight.detach().t().clone()  # Conv1D stores (in, out)
    quantize_model(model, config=CFG, progress=False)
    layer = model.transformer.h[0].mlp.c_fc
    assert (layer.out_features, layer.in_features) == tuple(w.shape)
    rel = float(torch.linalg.norm(layer.dequantize() - w) / torch.linalg.norm(w))
    assert rel < 0.35


def test_dequantized_and_packed_forward_agree():
    model = build("llama")
    quantize_model(model, config=CFG, progress=False)
    layer = model.model.layers[0].mlp.up_proj
    x = torch.randn(3, 64)
    packed = TritPlaneLinear(layer.codes, layer.scales, 64, 32, backend="triton")(x)
    dense = torch.nn.functional.linear(x.double(), layer.dequantize(torch.float64)).float()
    torch.testing.assert_close(layer(x), dense, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(packed, dense, rtol=1e-5, atol=1e-6)


def test_lm_head_and_exclude_options():
    model = build("llama")
    names = [n for n, _ in quantizable_linears(model)]
    assert "lm_head" not in names and all(".layers." in n for n in names)
    assert "lm_head" in [n for n, _ in quantizable_linears(model, include_lm_head=True)]
    kept = [n for n, _ in quantizable_linears(model, exclude=r"mlp\.down_proj")]
    assert len(kept) == 12 and not any("down_proj" in n for n in kept)


def test_load_rejects_plain_artifact(tmp_path):
    from ptqtp import quantize, save_artifact

    path = save_artifact(tmp_path / "x.safetensors", {"l": quantize(torch.randn(4, 32), config=CFG)})
    with pytest.raises(ArtifactError, match="no ptqtp.hf_config"):
        load_quantized(path)


def test_checkpoint_folder_to_artifact_to_model(tmp_path):
    """save_pretrained folder -> `ptqtp quantize` (streaming) -> load_quantized == in-memory quantization."""
    from ptqtp.tools.cli import main

    model = build("llama")
    model.save_pretrained(tmp_path / "hf")
    art = tmp_path / "llama.safetensors"
    assert main(["quantize", str(tmp_path / "hf"), "-o", str(art), "--group-size", "32"]) == 0
    loaded = load_quantized(art)
    quantize_model(model, config=CFG, progress=False)
    ids = torch.randint(0, 128, (1, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def sliding_window_model(seed=0):
    """Gemma-3-style: sliding-window and full-attention blocks mixed, each with its own mask."""
    torch.manual_seed(seed)
    config = tf.Gemma3TextConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=128,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    )
    return tf.Gemma3ForCausalLM(config).eval()


CALIBRATED = {**{a: (lambda a=a: build(a)) for a in ARCHS}, "gemma3-sliding": sliding_window_model}


@pytest.mark.parametrize("arch", list(CALIBRATED))
@pytest.mark.parametrize("method", ["ptqtp-gptq", "pt2"])
def test_calibrated_methods_on_every_architecture(arch, method):
    """The block-by-block driver runs on every listed architecture and a sliding-window one:
    every block linear quantized, a working model."""
    from ptqtp.methods import get_method
    from ptqtp.models.calibrate import calibrate_model

    model, ref = CALIBRATED[arch](), CALIBRATED[arch]()
    ids = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(2))
    report = calibrate_model(model, ids, get_method(method).config(32), progress=False)
    n_linears = sum(
        1
        for n, m in ref.named_modules()
        if (isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D")
        and ".lm_head" not in f".{n}"
        and n != "lm_head"
    )
    assert len(report.layers) == n_linears
    assert sum(isinstance(m, TritPlaneLinear) for m in model.modules()) == n_linears
    with torch.no_grad():
        out = model(ids).logits
        assert torch.isfinite(out).all() and out.shape == ref(ids).logits.shape


def test_each_block_is_replayed_with_its_own_arguments():
    """Sliding-window blocks 0 and 2 see the same banded mask, full-attention block 1 another:
    the captured arguments are per block, as the model passes them."""
    from ptqtp.models.calibrate import _capture_block_inputs, decoder_blocks

    model = sliding_window_model()
    _, blocks = decoder_blocks(model)
    ids = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(3))
    states, inputs = _capture_block_inputs(model, blocks, ids)
    assert len(states) == 2 and states[0].shape == (1, 24, 64)
    mask = [inputs[b][0][1]["attention_mask"] for b in range(3)]
    assert mask[0] is not None and torch.equal(mask[0], mask[2])
    assert mask[1] is None or not torch.equal(mask[0], mask[1])  # full attention: no band (None = causal)
    # and the replay reproduces the model: block by block on the captured arguments = the forward
    with torch.no_grad():
        h = states[0]
        for b, blk in enumerate(blocks):
            rest, kw = inputs[b][0]
            out = blk(h, *rest, **kw)
            h = out[0] if isinstance(out, tuple) else out
        ref = model(ids[:1], use_cache=False, output_hidden_states=True).hidden_states[-1]
        assert torch.allclose(model.model.norm(h), ref, atol=1e-5)
