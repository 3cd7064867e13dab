"""Whole tokens on the token core's RTL (``generate --backend rtl``, the main job's last step):
the core's parameters for a model, and a decoder with ``GoldenDecoder``'s ``step`` whose
tokens run in Verilator."""

from __future__ import annotations

import time

import numpy as np

from ptqtp.golden_decoder import DecoderArch, DecoderFormat, DecoderWeights
from ptqtp.hdl.engine_model import EngineParams
from ptqtp.hdl.token_core import TokenParams
from ptqtp.hdl.token_program import compile_token, program_length, scratch_map

__all__ = [
    "token_params",
    "RtlDecoder",
    "generate_rtl",
    "continue_on_rtl",
    "smollm2_token_params",
    "SMOLLM2_CONFIG",
]

#: SmolLM2-135M's shape (its config.json), for benches that need no weights.
SMOLLM2_CONFIG = {
    "model_type": "llama",
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "intermediate_size": 1536,
    "vocab_size": 49152,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-05,
    "max_position_embeddings": 8192,
}


def token_params(
    arch: DecoderArch,
    capacity: int = 512,
    packing: str = "2bit",
    group_size: int = 128,
    fmt: DecoderFormat | None = None,
) -> TokenParams:
    """The core for ``arch``: an engine of 16 lanes, 4 rows, one vector, DW 128 and the
    decoder's A, sized for the widest linear; scratch and program memories just big enough."""
    fmt = fmt or DecoderFormat()
    widest = max(arch.hidden, arch.intermediate, arch.heads * arch.head_dim)
    engine = EngineParams(
        act_bits=fmt.act_bits,
        data_width=128,
        max_d=widest,
        group_size=group_size,
        burst=16,
        vectors=1,
        lanes=16,
        rows=4,
        packing=packing,
    )
    return TokenParams(
        arch,
        engine,
        fmt,
        capacity=capacity,
        scratch_words=scratch_map(arch)["end"],
        program_instrs=program_length(arch),
    )


def smollm2_token_params(capacity: int = 512, packing: str = "2bit") -> TokenParams:
    return token_params(DecoderArch.from_hf(SMOLLM2_CONFIG), capacity, packing)


class RtlDecoder:
    """``GoldenDecoder.step`` on the token core in Verilator: ``step(ids)`` runs the ids one
    token at a time and returns the last token's (next id, integer logit); ``cycles`` keeps
    every token's cycles and cycles by opcode."""

    def __init__(self, weights: DecoderWeights, params: TokenParams, stall: float = 0.0):
        from ptqtp.sim.token_compiled import CompiledTokenCore

        self.weights, self.params = weights, params
        t0 = time.perf_counter()
        self.image = compile_token(weights, params)
        self.core = CompiledTokenCore(params, self.image, stall=stall)
        self.setup_seconds = time.perf_counter() - t0
        self.length = 0
        self.cycles: list[dict] = []

    def reset(self) -> None:
        self.core.reset_context()
        self.length = 0
        self.cycles = []

    def step(self, ids) -> tuple[int, int]:
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        vocab, cap = self.params.arch.vocab, self.params.capacity
        for t in ids:
            if not 0 <= t < vocab:
                raise ValueError(f"token id {t} is out of range 0..{vocab - 1}")
            if self.length >= cap:
                raise ValueError(f"context {self.length + 1} tokens exceeds the KV cache's capacity of {cap} tokens")
            r = self.core.step(t)
            self.length += 1
            self.cycles.append({"position": self.length - 1, "cycles": r.cycles, **r.op_cycles})
        return r.next_id, r.logit


def generate_rtl(rtl: RtlDecoder, golden, prompt: list[int], max_new_tokens: int, eos: int | None = None) -> dict:
    """Greedy generation on the token core, token by token (the prompt too), with the golden
    decoder stepped beside it: every step's next id and integer logit are compared.
    {ids, steps: [{position, rtl, golden, cycles, ...}], bit_exact, first_difference,
    cycles_per_token, seconds}."""
    rtl.reset()
    golden.reset()
    t0 = time.perf_counter()
    steps, new = [], []
    feed = list(prompt)
    while True:
        for t in feed:
            got = rtl.step([t])
            li, _ = golden.step([t])
            want = (int(np.argmax(li[-1])), int(li[-1].max()))
            steps.append({"token": t, "rtl": list(got), "golden": list(want), **rtl.cycles[-1]})
        nxt = steps[-1]["rtl"][0]
        new.append(nxt)
        if nxt == eos or len(new) == max_new_tokens:
            break
        feed = [nxt]
    diff = next((i for i, s in enumerate(steps) if s["rtl"] != s["golden"]), None)
    return {
        "ids": new,
        "steps": steps,
        "bit_exact": diff is None,
        "first_difference": diff,
        "cycles_per_token": float(np.mean([s["cycles"] for s in steps[len(prompt) - 1 :]])),
        "seconds": time.perf_counter() - t0,
        "setup_seconds": rtl.setup_seconds,
    }


def continue_on_rtl(rtl: RtlDecoder, golden, prompt: list[int], new_tokens: int) -> dict:
    """The prompt but its last token prefilled on the golden decoder, its KV cache handed to the
    core's memory (``continue_from``), then the last prompt token and ``new_tokens`` - 1 more
    decoded on the RTL, each checked against the golden decoder's step: what the main job
    shows in the time of a few RTL tokens. {ids, bit_exact, steps, cycles_per_token}."""
    golden.reset()
    rtl.reset()
    golden.step(prompt[:-1])
    rtl.core.continue_from(golden.cache, len(prompt) - 1)
    rtl.length = len(prompt) - 1
    t, ids, steps = prompt[-1], [], []
    t0 = time.perf_counter()
    for _ in range(new_tokens):
        got = rtl.step([t])
        li, _ = golden.step([t])
        want = (int(np.argmax(li[-1])), int(li[-1].max()))
        steps.append({"token": t, "rtl": list(got), "golden": list(want), **rtl.cycles[-1]})
        t = got[0]
        ids.append(t)
    return {
        "ids": ids,
        "bit_exact": all(s["rtl"] == s["golden"] for s in steps),
        "steps": steps,
        "cycles_per_token": float(np.mean([s["cycles"] for s in steps])),
        "seconds": time.perf_counter() - t0,
    }
