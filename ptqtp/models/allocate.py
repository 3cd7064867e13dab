"""Mixed precision under a byte budget: each linear's plane count K from a measured sensitivity.

Sensitivity (``layer_statistics`` + ``sensitivities``). For a linear y = W x with its
weights replaced by W_hat = W - E, the loss grows to second order by

    dL ~ 1/2 sum_i F_i E[(E x)_i^2] = 1/2 sum_i F_i [E H E^T]_ii / T,

with F_i = E[(dL/dy_i)^2] the diagonal Fisher of the layer's outputs and H = sum_t x_t x_t^T
over T calibration tokens. Both come from one forward and backward pass of the float model
per calibration segment. The output error alone (F = 1) ranks layers by how far their own
outputs move, which says nothing about how much the loss cares; the Fisher weight does
(QUANTIZATION.md, "Mixed precision", has the measured comparison).

Each layer is fitted at every candidate K with the data-free PTQTP: it is fast, and the
allocation needs the ranking of the layers' costs more than their exact values.

Allocation (``allocate``): minimise sum_l dL_l(K_l) subject to sum_l bytes_l(K_l) <= budget,
a multiple-choice knapsack, by Lagrangian relaxation (each layer takes the K minimising
dL + lambda bytes; lambda bisected to the smallest that fits), then the budget left is
spent greedily on the upgrades with the best loss saved per byte.

Bytes (``layer_bytes``): K planes of packed trits (2 bits a trit, or 5 trits a byte in
base-3) per row of d columns, unpadded, plus a float16 scale per plane, row and group of G.
The artifact today stores rows padded to a multiple of G; ``layer_bytes(..., padded=True)``
counts that too, and the report shows both.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from tqdm import tqdm

from ptqtp.formats.packing import TRITS_PER_BYTE, check_packing
from ptqtp.methods import MethodConfig, dequantize_planes, quantize

from .hf import quantizable_linears, weight_of

__all__ = [
    "layer_bytes",
    "layer_statistics",
    "sensitivities",
    "allocate",
    "Allocation",
    "Sensitivity",
    "mixed_planes",
    "data_free_fit",
]

PLANE_CHOICES = (1, 2, 3)


def layer_bytes(n: int, d: int, planes: int, group_size: int, packing: str = "base3", padded: bool = False) -> int:
    """Bytes of one K-plane linear: packed trits plus float16 scales (module doc)."""
    groups = -(-d // group_size)
    cols = groups * group_size if padded else d
    row = -(-cols // TRITS_PER_BYTE[check_packing(packing)])  # unpadded: not packed_width's multiple of 4
    return planes * n * (row + 2 * groups)


def _check_budget(bits_per_weight: float) -> None:
    if not 0 < bits_per_weight < 64:
        raise ValueError(f"bits per weight must be in (0, 64), not {bits_per_weight!r}")


def data_free_fit(config: MethodConfig) -> MethodConfig:
    """The data-free PTQTP fit whose K-plane errors rank a method's layers: the config itself
    for ``ptqtp``, the per-group fit of ``ptqtp-gptq``; ``ValueError`` for a method without a
    plane count."""
    fit = config.ptqtp_config() if hasattr(config, "ptqtp_config") else config
    if not hasattr(fit, "planes"):
        raise ValueError(
            f"a plane count per layer is for the trit-plane methods: use ptqtp or ptqtp-gptq, not {config.method}"
        )
    return fit


@torch.no_grad()
def _accumulate(store: dict, key: str, value: torch.Tensor) -> None:
    store[key] = store.get(key, 0) + value


def layer_statistics(model, input_ids: torch.Tensor, names: list[str] | None = None, progress: bool = True):
    """Per linear: ``{"H": sum x x^T (float64, d x d), "fisher": mean (dL/dy)^2 (float64, n),
    "tokens": T}`` from a forward and backward pass of ``model`` (float, unchanged) over each
    calibration segment of ``input_ids`` [segments, length] (next-token loss)."""
    targets = dict(quantizable_linears(model))
    names = list(targets) if names is None else names
    H: dict[str, torch.Tensor] = {}
    F: dict[str, torch.Tensor] = {}
    handles = []

    def fwd(name):
        def fn(module, args, out):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float32)
            _accumulate(H, name, (x.t() @ x).to(torch.float64))

        return fn

    def bwd(name):
        def fn(module, grad_in, grad_out):
            g = grad_out[0].detach().reshape(-1, grad_out[0].shape[-1]).to(torch.float64)
            _accumulate(F, name, g.square().sum(0))

        return fn

    for n in names:
        handles.append(targets[n].register_forward_hook(fwd(n)))
        handles.append(targets[n].register_full_backward_hook(bwd(n)))
    tokens = 0
    was_training = model.training
    model.eval()
    try:
        for seq in tqdm(input_ids, desc="sensitivity statistics", unit="segment", disable=not progress):
            model.zero_grad(set_to_none=True)
            out = model(seq.unsqueeze(0), labels=seq.unsqueeze(0), use_cache=False)
            out.loss.backward()
            tokens += seq.numel()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    # the loss is a mean over the segment's predictions: scale gradients back to per token
    per_seq = input_ids.shape[1] - 1
    return {n: {"H": H[n], "fisher": F[n] * per_seq**2 / tokens, "tokens": tokens} for n in names if n in H and n in F}


def _output_loss(weight: torch.Tensor, w_hat: torch.Tensor, stats: dict, fisher: bool) -> float:
    E = weight.to(torch.float64) - w_hat.to(torch.float64)
    per_row = ((E @ stats["H"]) * E).sum(1) / stats["tokens"]
    weight_ = stats["fisher"] if fisher else torch.ones_like(per_row)
    return float(0.5 * (weight_ * per_row).sum())


def sensitivities(
    model,
    stats: dict,
    config: MethodConfig,
    choices=PLANE_CHOICES,
    fisher: bool = True,
    progress: bool = True,
) -> dict[str, dict[int, float]]:
    """Per linear and plane count K: the predicted loss increase dL (module doc) of the data-free
    PTQTP fit with K planes (``config`` with ``planes=K``); ``fisher=False``: the plain output error."""
    out: dict[str, dict[int, float]] = {}
    layers = dict(quantizable_linears(model))
    for name in tqdm(list(stats), desc="sensitivity", unit="layer", disable=not progress):
        w = weight_of(layers[name]).detach()
        out[name] = {}
        for k in choices:
            r = quantize(w, dataclasses.replace(config, planes=k), name=name)
            w_hat = dequantize_planes(r.codes, r.scales, r.group_size, r.in_features, torch.float64)
            out[name][k] = _output_loss(w, w_hat, stats[name], fisher)
    return out


@dataclasses.dataclass
class Allocation:
    """Each layer's plane count, the bytes it costs, and the predicted loss increase."""

    planes: dict[str, int]
    bytes: int
    budget: int
    weights: int
    predicted: float

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.bytes / self.weights


def allocate(
    costs: dict[str, dict[int, float]],
    sizes: dict[str, dict[int, int]],
    budget: int,
    weights: int,
) -> Allocation:
    """The plane count per layer minimising the summed ``costs`` with summed ``sizes`` (bytes) at
    most ``budget`` (module doc); ``ValueError`` when even the smallest choice of every layer
    does not fit."""
    names = list(costs)
    floor = sum(min(sizes[n].values()) for n in names)
    if floor > budget:
        raise ValueError(
            f"a budget of {budget} bytes ({8 * budget / weights:.3f} bits/weight) is below the smallest "
            f"allocation, {floor} bytes ({8 * floor / weights:.3f} bits/weight: every layer at "
            f"{min(min(sizes[n], key=sizes[n].get) for n in names)} plane(s))"
        )

    def pick(lam: float) -> dict[str, int]:
        return {n: min(costs[n], key=lambda k: (costs[n][k] + lam * sizes[n][k], sizes[n][k])) for n in names}

    def total(choice: dict[str, int]) -> int:
        return sum(sizes[n][choice[n]] for n in names)

    lo, hi = 0.0, 1.0
    while total(pick(hi)) > budget:
        hi *= 2
        if hi > 1e30:
            break
    if total(pick(lo)) <= budget:
        hi = lo
    for _ in range(200):  # bisect lambda to the smallest that fits
        if hi - lo <= 1e-12 * hi:
            break
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if total(pick(mid)) <= budget else (mid, hi)
    choice = pick(hi)
    used = total(choice)
    while True:  # spend what is left on the best loss saved per byte
        best = None
        for n in names:
            for k, c in costs[n].items():
                extra = sizes[n][k] - sizes[n][choice[n]]
                gain = costs[n][choice[n]] - c
                if extra > 0 and gain > 0 and used + extra <= budget:
                    ratio = gain / extra
                    if best is None or ratio > best[0]:
                        best = (ratio, n, k, extra)
        if best is None:
            break
        _, n, k, extra = best
        choice[n], used = k, used + extra
    predicted = sum(costs[n][choice[n]] for n in names)
    if not math.isfinite(predicted):
        raise ValueError("a layer's sensitivity is not finite")
    return Allocation(choice, used, budget, weights, predicted)


@dataclasses.dataclass
class Sensitivity:
    """Every block linear's shape and predicted loss increase per plane count, and how they
    were measured: what an allocation at any budget needs."""

    costs: dict[str, dict[int, float]]
    shapes: dict[str, tuple[int, int]]
    group_size: int
    fisher: bool
    calibration: dict

    @classmethod
    def measure(
        cls,
        model,
        tokenizer,
        config: MethodConfig,
        choices=PLANE_CHOICES,
        fisher: bool = True,
        segments: int = 16,
        length: int = 512,
        seed: int = 0,
        progress: bool = True,
        ids: torch.Tensor | None = None,
        source: str | None = None,
    ) -> Sensitivity:
        """From ``segments`` x ``length`` tokens of the BBC calibration split, or the token ids
        ``ids`` [segments, length] that ``source`` describes (e.g. self-generated); ``config``:
        the method's, whose :func:`data_free_fit` each candidate K uses."""
        from .data import BBC_CALIB_TEXT, calibration_ids

        config = data_free_fit(config)
        if ids is None:
            ids = calibration_ids(tokenizer, segments, length, seed)
        else:
            segments, length = ids.shape
        stats = layer_statistics(model, ids, progress=progress)
        costs = sensitivities(model, stats, config, choices, fisher, progress)
        layers = dict(quantizable_linears(model))
        shapes = {n: tuple(weight_of(layers[n]).shape) for n in costs}
        calibration = {"text": source or BBC_CALIB_TEXT, "segments": segments, "length": length, "seed": seed}
        return cls(costs, shapes, config.group_size, fisher, calibration)  # type: ignore[arg-type]

    @property
    def weights(self) -> int:
        return sum(n * d for n, d in self.shapes.values())

    def allocate(self, bits_per_weight: float, packing: str = "base3") -> tuple[Allocation, dict]:
        """The allocation at ``bits_per_weight`` (bytes as ``layer_bytes`` counts them for
        ``packing``, unpadded) and its record (the ``ptqtp.allocation`` header entry)."""
        _check_budget(bits_per_weight)
        G, shapes = self.group_size, self.shapes
        sizes = {n: {k: layer_bytes(*shapes[n], k, G, packing) for k in c} for n, c in self.costs.items()}
        alloc = allocate(self.costs, sizes, int(bits_per_weight * self.weights / 8), self.weights)
        padded = sum(layer_bytes(*shapes[n], alloc.planes[n], G, packing, padded=True) for n in self.costs)
        record = {
            "bits_per_weight": bits_per_weight,
            "packing": packing,
            "choices": sorted({k for c in self.costs.values() for k in c}),
            "sensitivity": "fisher-weighted output error" if self.fisher else "output error",
            "calibration": self.calibration,
            "bytes": alloc.bytes,
            "bytes_padded": padded,
            "achieved_bits_per_weight": alloc.bits_per_weight,
            "predicted_loss_increase": alloc.predicted,
            "planes": alloc.planes,
            "costs": {n: {str(k): v for k, v in c.items()} for n, c in self.costs.items()},
        }
        return alloc, record


def mixed_planes(
    model,
    tokenizer,
    config: MethodConfig,
    bits_per_weight: float,
    packing: str = "base3",
    choices=PLANE_CHOICES,
    fisher: bool = True,
    progress: bool = True,
    ids: torch.Tensor | None = None,
    source: str | None = None,
) -> tuple[Allocation, dict]:
    """:meth:`Sensitivity.measure` (on ``ids`` from ``source`` where given) then :meth:`Sensitivity.allocate`
    at one budget (a budget below every layer's smallest choice is refused before anything
    is measured)."""
    _check_budget(bits_per_weight)
    data_free_fit(config)  # a method without a plane count is refused before anything runs
    shapes = [tuple(weight_of(m).shape) for _, m in quantizable_linears(model)]
    weights = sum(n * d for n, d in shapes)
    floor = sum(layer_bytes(n, d, min(choices), config.group_size, packing) for n, d in shapes)
    if floor > bits_per_weight * weights / 8:
        raise ValueError(
            f"a budget of {bits_per_weight} bits/weight is below the smallest allocation, "
            f"{8 * floor / weights:.3f} bits/weight (every layer at {min(choices)} plane(s), {packing})"
        )
    sens = Sensitivity.measure(model, tokenizer, config, choices, fisher, progress=progress, ids=ids, source=source)
    return sens.allocate(bits_per_weight, packing)
