"""Hardware in the loop: chosen layers of a quantized model run on a backend.

A :class:`HilLinear` replaces a ``TritPlaneLinear``: the host quantizes each activation row
(the golden model's activation quantizer), the backend returns the integer accumulators,
and the host rebuilds y = acc s_x 2^-F + bias (the golden model's output rule). Every
other layer stays in torch.
"""

from __future__ import annotations

import copy
import re

import torch

from ptqtp.golden import GoldenLayer, IntConfig
from ptqtp.kernels import TritPlaneLinear
from ptqtp.models.evaluate import perplexity
from ptqtp.models.hf import set_module

from .backends import Backend

__all__ = ["HilLinear", "attach_backend", "compare_logits", "hil_evaluate", "cycles_per_token"]


class HilLinear(torch.nn.Module):
    """Forward through ``backend`` for one layer (loaded under ``layer_id``)."""

    def __init__(self, golden: GoldenLayer, backend: Backend, layer_id: int):
        super().__init__()
        self.golden, self.backend, self.layer_id = golden, backend, layer_id
        self.in_features, self.out_features = golden.d, golden.n
        backend.load(layer_id, golden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.detach().reshape(-1, x.shape[-1]).to(torch.float64).cpu().numpy()
        x_q, s_x = self.golden.quantize_input(rows)
        y = self.golden.output(self.backend.run(self.layer_id, x_q), s_x)
        return torch.from_numpy(y).to(x.dtype).to(x.device).reshape(*x.shape[:-1], self.out_features)


def attach_backend(
    model: torch.nn.Module, backend: Backend, pattern: str = ".*", config: IntConfig | None = None
) -> list[str]:
    """Swap every ``TritPlaneLinear`` whose name matches ``pattern`` for a :class:`HilLinear`."""
    chosen = [(n, m) for n, m in model.named_modules() if isinstance(m, TritPlaneLinear) and re.search(pattern, n)]
    if not chosen:
        raise ValueError(f"no quantized layer matches {pattern!r}")
    for i, (name, m) in enumerate(chosen):
        golden = GoldenLayer.from_packed(m, config)
        set_module(model, name, HilLinear(golden, backend, i))
    return [n for n, _ in chosen]


@torch.inference_mode()
def compare_logits(a: torch.nn.Module, b: torch.nn.Module, ids: torch.Tensor) -> dict:
    """Max and mean |logits_a - logits_b| on ``ids`` and the share of equal argmax tokens."""
    la, lb = a(ids).logits.double(), b(ids).logits.double()
    diff = (la - lb).abs()
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "argmax_agree": float((la.argmax(-1) == lb.argmax(-1)).double().mean()),
    }


def hil_evaluate(
    torch_model,
    backend,
    pattern: str,
    tokenizer,
    text: str,
    tokens: int,
    context: int,
    config: IntConfig | None = None,
    ids: torch.Tensor | None = None,
    generate: int = 0,
    fp_model=None,
) -> dict:
    """Perplexity of a copy of ``torch_model`` with the ``pattern`` layers on ``backend``, against
    ``torch_model`` itself (and ``fp_model`` if given); logit differences on ``ids`` (default: the
    first ``context`` tokens of ``text``)."""
    hil_model = copy.deepcopy(torch_model)
    layers = attach_backend(hil_model, backend, pattern, config)
    if ids is None:
        ids = tokenizer(text, return_tensors="pt").input_ids[:, :context]
    out = {
        "layers": layers,
        "tokens": tokens,
        "context": context,
        "ppl_torch": perplexity(torch_model, tokenizer, text, context, tokens),
        "ppl_hil": perplexity(hil_model, tokenizer, text, context, tokens, progress=True),
        "logits_vs_torch": compare_logits(hil_model, torch_model, ids),
    }
    if fp_model is not None:
        out["ppl_fp"] = perplexity(fp_model, tokenizer, text, context, tokens)
        out["logits_vs_fp"] = compare_logits(hil_model, fp_model, ids)
    if getattr(backend, "cycles", None):
        out["cycles_per_token"] = cycles_per_token(backend, layers)
    if generate:
        prompt = tokenizer("The economy", return_tensors="pt").input_ids
        gen = hil_model.generate(prompt, max_new_tokens=generate, min_new_tokens=generate, do_sample=False)
        out["generation"] = tokenizer.decode(gen[0], skip_special_tokens=True)
    return out


def cycles_per_token(backend, layers: list[str]) -> dict[str, float]:
    """Simulated core cycles per token by layer kind (the name's last part) and in ``total``,
    from a backend that counts them per layer id (``EngineBackend``; ids follow ``layers``)."""
    out: dict[str, float] = {}
    for i, name in enumerate(layers):
        if backend.vectors.get(i):
            kind = name.rsplit(".", 1)[-1]
            out[kind] = out.get(kind, 0.0) + backend.cycles[i] / backend.vectors[i]
    out["total"] = sum(out.values())
    return out
