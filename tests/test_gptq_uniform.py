"""GPTQ onto a uniform grid (the calibrated baseline): with H = I it is round-to-nearest
exactly; with correlated inputs its output error beats round-to-nearest's; the registry
counts its bits and the calibrated driver leaves dequantized linears."""

import pytest
import torch

from ptqtp.methods import GPTQConfig, get_method, gptq_uniform, quantize
from ptqtp.methods.rtn import quantize_rtn


def test_identity_hessian_and_no_damping_is_round_to_nearest():
    w = torch.randn(12, 200, generator=torch.Generator().manual_seed(0)) * 0.02
    for bits in (3, 4):
        g = gptq_uniform(w, torch.eye(200, dtype=torch.float64), GPTQConfig(group_size=64, bits=bits, damp=0.0))
        r = quantize_rtn(w, bits, 64)
        assert torch.equal(g.q[:, :, :], r.q) and torch.allclose(g.scale, r.scale) and g.method == f"gptq{bits}"


def test_beats_round_to_nearest_on_correlated_inputs():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(32, 256, generator=gen, dtype=torch.float64) * 0.02
    mix = torch.randn(256, 256, generator=gen, dtype=torch.float64) / 16 + torch.eye(256, dtype=torch.float64)
    x = torch.randn(2048, 256, generator=gen, dtype=torch.float64) @ mix
    H = x.t() @ x
    y = x @ w.t()
    for bits in (3, 4):
        g = quantize(w, GPTQConfig(bits=bits), hessian=H).dequantize(torch.float64)
        r = quantize_rtn(w, bits, 128).dequantize(torch.float64)
        err = [float(torch.linalg.norm(x @ q.t() - y) / torch.linalg.norm(y)) for q in (g, r)]
        assert err[0] < 0.9 * err[1], err


def test_registered_as_calibrated_evaluation_only_baselines():
    for bits in (3, 4):
        spec = get_method(f"gptq{bits}")
        assert spec.calibrated and not spec.packable
        assert spec.bits_per_weight(128) == (bits + (16 + bits) / 128,) * 2
    with pytest.raises(ValueError, match="needs calibration statistics"):
        quantize(torch.randn(4, 8), "gptq4")
    with pytest.raises(ValueError, match="bits must be"):
        GPTQConfig(bits=5)


def test_calibrated_driver_leaves_dequantized_linears():
    import transformers as tf

    from ptqtp.models.calibrate import calibrate_model

    torch.manual_seed(0)
    cfg = tf.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    model = tf.LlamaForCausalLM(cfg).eval()
    before = model.model.layers[0].mlp.up_proj.weight.clone()
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(3))
    rep = calibrate_model(model, ids, GPTQConfig(group_size=32, bits=4), progress=False)
    up = model.model.layers[0].mlp.up_proj
    assert isinstance(up, torch.nn.Linear) and len(rep.layers) == 7
    assert torch.equal(up.weight, rep.layers["model.layers.0.mlp.up_proj"].dequantize(up.weight.dtype))
    assert not torch.equal(up.weight, before)
