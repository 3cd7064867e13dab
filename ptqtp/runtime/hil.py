"""Hardware in the loop: chosen layers of a quantized model run on a backend.

A :class:`HilLinear` replaces a ``TritPlaneLinear``: the host quantizes each activation row
(the golden model's activation quantizer), the backend returns the integer accumulators,
and the host rebuilds y = acc s_x 2^-F + bias (the golden model's output rule). Every
other layer stays in torch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from pathlib import Path

import torch
from tqdm import tqdm

from ptqtp.formats.atomic import atomic_write
from ptqtp.golden import GoldenLayer, IntConfig
from ptqtp.kernels import TritPlaneLinear
from ptqtp.models.evaluate import perplexity
from ptqtp.models.hf import set_module

from .backends import Backend, GoldenBackend

__all__ = [
    "HilLinear",
    "attach_backend",
    "compare_logits",
    "windows",
    "evaluate_window",
    "hil_evaluate",
    "summarize",
    "cycles_per_token",
]


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


def windows(n_ids: int, context: int) -> list[tuple[int, int]]:
    """(start, end) of the non-overlapping evaluation windows over ``n_ids`` tokens, as
    :func:`ptqtp.models.evaluate.perplexity` takes them (a last window of one token is dropped)."""
    return [(s, min(s + context, n_ids)) for s in range(0, n_ids - 1, context) if min(s + context, n_ids) - s >= 2]


def evaluation_key(torch_model, ids: torch.Tensor, layers: list[str], context: int, backend) -> str:
    """What a window's stored result depends on: the model's tensors, the token ids, the layers
    on the backend, the window length and the backend (its kind and, for a device, its
    registers)."""
    h = hashlib.sha256()
    for name, t in sorted(torch_model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    h.update(ids.numpy().astype("<i8").tobytes())
    info = backend.device_info() if hasattr(backend, "device_info") else {}
    h.update(json.dumps([layers, context, getattr(backend, "name", type(backend).__name__), info]).encode())
    return h.hexdigest()


@torch.inference_mode()
def evaluate_window(hil_model, reference, torch_model, window: torch.Tensor, backend, layers: list[str]) -> dict:
    """One window's record: the negative log-likelihood (float64 sum over its predictions) of
    the backend model, the golden reference and the all-torch model; whether the backend's
    logits equal the golden reference's bit for bit; |logits - all-torch| and argmax
    agreement; the engine cycles it took per layer kind (when the backend counts them)."""
    before = dict(getattr(backend, "cycles", {}) or {})

    def nll(logits: torch.Tensor) -> float:
        return float(torch.nn.functional.cross_entropy(logits[0, :-1].double(), window[0, 1:], reduction="sum"))

    hil = hil_model(window).logits.float()
    ref = reference(window).logits.float() if reference is not None else None
    plain = torch_model(window).logits.float()
    diff = (hil.double() - plain.double()).abs()
    out = {
        "predictions": window.shape[1] - 1,
        "nll_hil": nll(hil),
        "nll_torch": nll(plain),
        "max_abs_vs_torch": float(diff.max()),
        "sum_abs_vs_torch": float(diff.sum()),
        "logits": diff.numel(),
        "argmax_agree": int((hil.argmax(-1) == plain.argmax(-1)).sum()),
    }
    if ref is not None:
        out["nll_golden"] = nll(ref)
        out["bit_exact_vs_golden"] = bool(torch.equal(hil, ref))
    after = getattr(backend, "cycles", None)
    if after:
        kinds: dict[str, int] = {}
        for i, name in enumerate(layers):
            kind = name.rsplit(".", 1)[-1]
            kinds[kind] = kinds.get(kind, 0) + after.get(i, 0) - before.get(i, 0)
        out["cycles"] = kinds
    return out


def hil_evaluate(
    torch_model,
    backend,
    pattern: str,
    tokenizer,
    text: str,
    tokens: int,
    context: int,
    config: IntConfig | None = None,
    generate: int = 0,
    fp_model=None,
    reference: bool = True,
    parts: Path | None = None,
    rank: int = 0,
    world: int = 1,
    barrier=None,
    progress: bool = True,
) -> dict | None:
    """Perplexity of a copy of ``torch_model`` with the ``pattern`` layers on ``backend``,
    window by window (:func:`evaluate_window`), against ``torch_model`` itself and (with
    ``reference``) the same layers on the golden model: the backend's logits must equal the
    golden model's bit for bit.

    Sharded: this process is ``rank`` of ``world``; it takes windows rank, rank + world, ...
    and writes each one's record to ``parts``/window-NNNNN.json (atomic; a record of the same
    evaluation is reused, so a rerun redoes only what is missing). After ``barrier()`` rank 0
    reads every record and returns the report; the others return None. The perplexities are
    summed in window order, so any sharding gives the same bytes as one process.
    """
    if world > 1 and parts is None:
        raise ValueError("a sharded evaluation needs a parts folder shared by its ranks")
    hil_model = copy.deepcopy(torch_model)
    layers = attach_backend(hil_model, backend, pattern, config)
    ref_model = None
    if reference and getattr(backend, "name", "") != "golden":
        ref_model = copy.deepcopy(torch_model)
        attach_backend(ref_model, GoldenBackend(), pattern, config)
    ids = tokenizer(text, return_tensors="pt").input_ids[0][:tokens]
    spans = windows(len(ids), context)
    if not spans:
        raise ValueError("the text has fewer than 2 tokens")
    key = evaluation_key(torch_model, ids, layers, context, backend) if parts is not None else ""
    records: dict[int, dict] = {}
    mine = range(rank, len(spans), world)
    for i in tqdm(mine, desc=f"windows (rank {rank})" if world > 1 else "windows", disable=not progress):
        path = None if parts is None else Path(parts) / f"window-{i:05d}.json"
        if path is not None and path.exists():
            old = json.loads(path.read_text())
            if old.get("key") == key:
                records[i] = old
                continue
        start, end = spans[i]
        rec = {"key": key, "window": i, "start": start, "end": end}
        rec |= evaluate_window(hil_model, ref_model, torch_model, ids[start:end].unsqueeze(0), backend, layers)
        records[i] = rec
        if path is not None:
            atomic_write(path, lambda tmp, rec=rec: tmp.write_text(json.dumps(rec)))
    if barrier is not None:
        barrier()
    if rank != 0:
        return None
    if parts is not None:
        for i in range(len(spans)):
            if i not in records:
                path = Path(parts) / f"window-{i:05d}.json"
                rec = json.loads(path.read_text()) if path.exists() else {}
                if rec.get("key") != key:
                    raise RuntimeError(f"{path}: window {i} was not evaluated (a rank died?); run again to redo it")
                records[i] = rec
    out = summarize(records, layers, tokens, context)
    if fp_model is not None:
        out["ppl_fp"] = perplexity(fp_model, tokenizer, text, context, tokens)
        out["logits_vs_fp"] = compare_logits(hil_model, fp_model, ids[:context].unsqueeze(0))
    if generate:
        prompt = tokenizer("The economy", return_tensors="pt").input_ids
        gen = hil_model.generate(prompt, max_new_tokens=generate, min_new_tokens=generate, do_sample=False)
        out["generation"] = tokenizer.decode(gen[0], skip_special_tokens=True)
    return out


def summarize(records: dict[int, dict], layers: list[str], tokens: int, context: int) -> dict:
    """The report from every window's record, summed in window order."""
    recs = [records[i] for i in sorted(records)]
    count = sum(r["predictions"] for r in recs)

    def ppl(field: str) -> float:
        return math.exp(sum(r[field] for r in recs) / count)

    out = {
        "layers": layers,
        "tokens": count + len(recs),  # evaluated (at most the ``tokens`` asked for)
        "context": context,
        "windows": len(recs),
        "ppl_torch": ppl("nll_torch"),
        "ppl_hil": ppl("nll_hil"),
        "logits_vs_torch": {
            "max_abs": max(r["max_abs_vs_torch"] for r in recs),
            "mean_abs": sum(r["sum_abs_vs_torch"] for r in recs) / sum(r["logits"] for r in recs),
            "argmax_agree": sum(r["argmax_agree"] for r in recs) / (count + len(recs)),
        },
        "window_nll": [r["nll_hil"] for r in recs],
    }
    if all("nll_golden" in r for r in recs):
        out["ppl_golden"] = ppl("nll_golden")
        out["bit_exact_vs_golden"] = all(r["bit_exact_vs_golden"] for r in recs)
    if all("cycles" in r for r in recs):
        per: dict[str, float] = {}
        for r in recs:
            for kind, c in r["cycles"].items():
                per[kind] = per.get(kind, 0) + c
        positions = count + len(recs)  # every position of every window ran through the layers
        out["cycles_per_token"] = {k: v / positions for k, v in per.items()}
        out["cycles_per_token"]["total"] = sum(out["cycles_per_token"].values())
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
