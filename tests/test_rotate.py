"""Residual rotation fused offline: the float model computes the same logits (float64),
tied embeddings stay consistent, the norms end at unit weight, and bad models are refused."""

import pytest
import torch
import transformers as tf

from ptqtp.models.rotate import fold_norms, random_orthogonal, rotate_residual


def llama(tied: bool, seed: int = 0):
    torch.manual_seed(seed)
    cfg = tf.LlamaConfig(
        vocab_size=96,
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
    )
    model = tf.LlamaForCausalLM(cfg).double().eval()
    with torch.no_grad():  # norms that are not all ones, as in a trained model
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(torch.rand_like(p) + 0.5)
    return model


@pytest.mark.parametrize("tied", [True, False])
def test_rotation_keeps_the_logits(tied):
    model = llama(tied)
    ids = torch.randint(0, 96, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(ids).logits
        Q = rotate_residual(model, seed=3)
        got = model(ids).logits
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6)  # LlamaRMSNorm computes in float32
    assert torch.allclose(Q @ Q.t(), torch.eye(48, dtype=torch.float64), atol=1e-12)
    assert all(torch.all(p == 1) for n, p in model.named_parameters() if n.endswith("norm.weight"))
    # the weights really moved: the first q_proj is not the folded original
    assert not torch.allclose(
        model.model.layers[0].self_attn.q_proj.weight, llama(tied).model.layers[0].self_attn.q_proj.weight
    )


def test_fold_alone_keeps_the_logits_and_unties_only_when_needed():
    model = llama(True)
    ids = torch.randint(0, 96, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(ids).logits
        fold_norms(model)
        assert torch.allclose(model(ids).logits, ref, rtol=1e-5, atol=1e-6)  # LlamaRMSNorm computes in float32
    assert model.lm_head.weight is not model.model.embed_tokens.weight  # the final norm was not ones
    unit = llama(True)
    with torch.no_grad():
        unit.model.norm.weight.fill_(1.0)
        fold_norms(unit)
    assert unit.lm_head.weight is unit.model.embed_tokens.weight


def test_random_orthogonal_is_seeded_and_shapes_are_checked():
    assert torch.equal(random_orthogonal(8, 1), random_orthogonal(8, 1))
    assert not torch.equal(random_orthogonal(8, 1), random_orthogonal(8, 2))
    with pytest.raises(ValueError, match="Q must be"):
        rotate_residual(llama(False), Q=torch.eye(5))
    with pytest.raises(ValueError, match="not a Llama-family decoder"):
        rotate_residual(torch.nn.Linear(2, 2))
