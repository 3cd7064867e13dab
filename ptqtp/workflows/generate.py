"""Whole tokens on the integer decoder: greedy generation (``ptqtp generate``) and perplexity
(``ptqtp eval --decoder golden-int``), beside the float model with the same trit planes."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from tqdm import tqdm

from ptqtp.golden_decoder import GoldenDecoder

__all__ = ["generate_int", "generate_torch", "decoder_perplexity", "window_ids"]


def window_ids(tokenizer, text: str, context: int, max_tokens: int) -> list[torch.Tensor]:
    """The evaluation windows of :func:`ptqtp.models.evaluate.perplexity`: non-overlapping
    ``context``-token windows of the first ``max_tokens`` tokens (each of at least 2)."""
    ids = tokenizer(text, return_tensors="pt").input_ids[0][:max_tokens]
    if len(ids) < 2:
        raise ValueError("the text has fewer than 2 tokens")
    return [w for s in range(0, len(ids) - 1, context) if len(w := ids[s : s + context]) >= 2]


def decoder_perplexity(decoder: GoldenDecoder, windows: list[torch.Tensor], progress: bool = False) -> dict:
    """exp(mean NLL) of the integer decoder's logits over ``windows`` (each from an empty
    cache, run as one prefill: bit-identical to token by token)."""
    nll, count, per_window = 0.0, 0, []
    for w in tqdm(windows, desc="golden-int perplexity", unit="window", disable=not progress):
        decoder.reset()
        logits = torch.from_numpy(decoder.logits(w.numpy()))
        loss = float(torch.nn.functional.cross_entropy(logits[:-1], w[1:], reduction="sum"))
        per_window.append(loss)
        nll += loss
        count += len(w) - 1
    return {"perplexity": math.exp(nll / count), "tokens": count, "window_nll": per_window}


def generate_int(
    decoder: GoldenDecoder, prompt: list[int], max_new_tokens: int, eos: int | None = None, top_k: int = 0
) -> dict:
    """Greedy generation on the integer decoder: the prompt as one prefill, then one token a
    step; the next token is the argmax of the integer logits (lowest id on a tie). Stops at
    ``eos``. Returns the new ids, the top-k (id, integer logit) per step, and the wall time."""
    decoder.reset()
    t0 = time.perf_counter()
    logits, _ = decoder.step(prompt)
    last = logits[-1]
    new, tops = [], []
    for _ in range(max_new_tokens):
        nxt = int(np.argmax(last))
        if top_k:
            order = np.lexsort((np.arange(len(last)), -last))[:top_k]
            tops.append([[int(i), int(last[i])] for i in order])
        new.append(nxt)
        if nxt == eos or len(new) == max_new_tokens:
            break
        last = decoder.step([nxt])[0][-1]
    return {"ids": new, "top_k": tops, "seconds": time.perf_counter() - t0}


@torch.inference_mode()
def generate_torch(model, prompt: list[int], max_new_tokens: int, eos: int | None = None) -> dict:
    """Greedy generation on the float model (the same trit planes, float activations)."""
    t0 = time.perf_counter()
    ids = torch.tensor([prompt])
    new: list[int] = []
    past = None
    step = ids
    for _ in range(max_new_tokens):
        out = model(step, past_key_values=past, use_cache=True)
        past = out.past_key_values
        nxt = int(out.logits[0, -1].argmax())
        new.append(nxt)
        if nxt == eos:
            break
        step = torch.tensor([[nxt]])
    return {"ids": new, "seconds": time.perf_counter() - t0}
