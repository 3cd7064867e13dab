"""Hardware in the loop on a small quantized Llama."""

import copy

import pytest
import torch
import transformers as tf

from ptqtp import PTQTPConfig
from ptqtp.formats.packing import unpack_trits
from ptqtp.kernels import TritPlaneLinear
from ptqtp.models.hf import quantize_model
from ptqtp.runtime.backends import GoldenBackend
from ptqtp.runtime.hil import HilLinear, attach_backend, compare_logits

CFG = PTQTPConfig(group_size=32)


def small_model():
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    model = tf.LlamaForCausalLM(cfg).eval()
    quantize_model(model, config=CFG, progress=False)
    return model


class IntEmulation(torch.nn.Module):
    """docs/SPEC.md section 3 written directly in torch: per-row x_q, integer weights W_int[r, j] =
    sum_k T_k[r, j] a_q[k, r, g(j)], one int64 matmul (distributivity gives the same exact
    accumulator as per-group partial sums), y = acc s_x 2^-F (+ bias)."""

    def __init__(self, m: TritPlaneLinear, A=8, S=16):
        super().__init__()
        a = m.scales.double()
        F = int(torch.floor(torch.log2((2 ** (S - 1) - 1) / a.abs().max())))
        while a.abs().max() * 2.0 ** (F + 1) <= 2 ** (S - 1) - 1:
            F += 1
        while a.abs().max() * 2.0**F > 2 ** (S - 1) - 1:
            F -= 1
        a_q = torch.round(a * 2.0**F).long()  # round half to even
        t = unpack_trits(m.codes).long()
        self.w_int = (t * a_q.repeat_interleave(m.group_size, dim=2)).sum(0)[:, : m.in_features]
        self.F, self.Q, self.bias = F, 2 ** (A - 1) - 1, m.bias

    def forward(self, x):
        xd = x.double()
        amax = xd.abs().amax(-1, keepdim=True)
        s_x = torch.where(amax > 0, amax / self.Q, torch.ones_like(amax))
        x_q = torch.clamp(torch.round(xd / s_x), -self.Q, self.Q).long()
        acc = x_q @ self.w_int.T
        y = torch.ldexp(acc.double() * s_x, torch.tensor(-self.F))
        if self.bias is not None:
            y = y + self.bias.double()
        return y.to(x.dtype)


def test_golden_hil_equals_integer_emulation():
    model = small_model()
    emulated = copy.deepcopy(model)
    for name, m in list(emulated.named_modules()):
        if isinstance(m, TritPlaneLinear):
            parent, _, child = name.rpartition(".")
            setattr(emulated.get_submodule(parent), child, IntEmulation(m))
    names = attach_backend(model, GoldenBackend())
    assert len(names) == 14 and all(isinstance(model.get_submodule(n), HilLinear) for n in names)
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, emulated(ids).logits)


def small_pt2_model():
    from ptqtp.methods.pt2 import PT2Config
    from ptqtp.models.calibrate import calibrate_model

    torch.manual_seed(0)
    cfg = tf.LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    model = tf.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 128, (8, 32), generator=torch.Generator().manual_seed(1))
    report = calibrate_model(model, ids, PT2Config(group_size=32), progress=False)
    return model, report


def test_pt2_model_save_load_and_hil(tmp_path):
    """A PT^2-LLM Llama: SSR skipped on down projections, the artifact reloads bit-exact, and the
    golden HIL path (x permuted, offsets) tracks the torch model."""
    from ptqtp.models.hf import load_quantized, save_quantized

    model, report = small_pt2_model()
    assert len(report.layers) == 14 and all(r.method == "pt2" for r in report.layers.values())
    assert all((r.perm is None) == n.endswith("down_proj") for n, r in report.layers.items())
    path = save_quantized(model, tmp_path / "pt2.safetensors", report, PTQTPConfig(group_size=32))
    loaded = load_quantized(path)
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    hil = copy.deepcopy(model)
    attach_backend(hil, GoldenBackend())
    diff = compare_logits(hil, model, ids)
    assert diff["max_abs"] < 0.1 and diff["argmax_agree"] > 0.9


@pytest.mark.rtl
def test_every_layer_on_one_engine_build_equals_golden():
    """All 14 linears of the model on ONE streaming-engine simulation (weights from a model
    image in the simulated DRAM): logits bit-exact with the golden backend; cycles counted."""
    from ptqtp.hdl.engine_model import EngineParams
    from ptqtp.runtime.engine import EngineBackend

    golden_model, engine_model = small_model(), small_model()
    attach_backend(golden_model, GoldenBackend())
    params = EngineParams(lanes=8, rows=2, group_size=32, max_d=160, vectors=2, data_width=64, burst=8)
    ids = torch.randint(0, 128, (1, 5), generator=torch.Generator().manual_seed(6))
    with EngineBackend(params) as engine:
        names = attach_backend(engine_model, engine)
        with torch.no_grad():
            assert torch.equal(engine_model(ids).logits, golden_model(ids).logits)
        assert len(names) == 14 and set(engine.vectors.values()) == {5}  # 5 tokens through every layer
        issue = {i: params.run(g.n, g.d_pad, 1).issue_cycles for i, g in engine.layers.items()}
        assert all(engine.cycles[i] >= 5 * issue[i] for i in issue)  # 5 vectors in batches of 2 and 1
