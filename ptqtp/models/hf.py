"""Model-level quantization of Hugging Face ``transformers`` causal LMs.

Every ``nn.Linear`` (and GPT-2 ``Conv1D``) inside the decoder blocks becomes a
:class:`ptqtp.kernels.TritPlaneLinear`; embeddings, norms and ``lm_head`` keep their
precision unless asked. The artifact stores the model's config in its header
(``ptqtp.hf_config``), so :func:`load_quantized` needs nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ptqtp.formats.artifact import (
    GUARD,
    ArtifactError,
    artifact_metadata,
    guard_tensors,
    load_artifact,
    pack_layer,
    save_artifact,
)
from ptqtp.formats.checkpoint import BLOCK_PATTERN
from ptqtp.kernels import TritPlaneLinear
from ptqtp.methods import MethodConfig, PTQTPConfig, method_of, quantize, resolve_config

from ._tensors import artifact_tensors

__all__ = [
    "quantizable_linears",
    "quantize_model",
    "layer_config",
    "save_quantized",
    "load_quantized",
    "QuantReport",
    "BLOCK_PATTERN",
    "artifact_tensors",
    "write_model_folder",
    "set_module",
    "trit_module",
    "is_conv1d",
    "weight_of",
]


def is_conv1d(module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def weight_of(module) -> torch.Tensor:
    """(out, in) weight of a Linear, or of a GPT-2 Conv1D (stored as (in, out))."""
    return module.weight.t() if is_conv1d(module) else module.weight


def quantizable_linears(model: torch.nn.Module, include_lm_head: bool = False, exclude: str | None = None):
    """(name, module) of every linear to quantize, in model order."""
    skip = re.compile(exclude) if exclude else None
    out = []
    for name, module in model.named_modules():
        if not (isinstance(module, torch.nn.Linear) or is_conv1d(module)):
            continue
        in_block = BLOCK_PATTERN.search(name) is not None
        if not (in_block or (include_lm_head and name.endswith("lm_head"))):
            continue
        if skip and skip.search(name):
            continue
        out.append((name, module))
    return out


@dataclass
class QuantReport:
    """Per-layer results of :func:`quantize_model`."""

    layers: dict = field(default_factory=dict)  # name -> TritPlaneResult
    seconds: float = 0.0

    @property
    def weights(self) -> int:
        return sum(r.out_features * r.in_features for r in self.layers.values())

    @property
    def mean_rel_error(self) -> float:
        errs = [r.rel_error for r in self.layers.values()]
        return sum(errs) / len(errs) if errs else float("nan")


def set_module(model: torch.nn.Module, name: str, new: torch.nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def trit_module(packed: dict, in_features, group_size, bias, device, packing: str = "2bit"):
    """A ``TritPlaneLinear`` from a layer's stored tensors by suffix (``pack_layer``'s dict)."""
    b = None if bias is None else bias.detach().clone()
    return TritPlaneLinear(
        packed["tp_codes"],
        packed["tp_scales"],
        in_features,
        group_size,
        b,
        offsets=packed.get("tp_offsets"),
        perm=packed.get("tp_perm"),
        packing=packing,
    ).to(device)


def layer_config(config: MethodConfig, planes: dict[str, int] | None, name: str) -> MethodConfig:
    """``config`` with the plane count ``planes`` gives layer ``name`` (if any)."""
    if not planes or name not in planes:
        return config
    if not hasattr(config, "planes"):
        raise ValueError(f"{config.method} has no plane count to set per layer ({name})")
    return dataclasses.replace(config, planes=planes[name])


def quantize_model(
    model: torch.nn.Module,
    method: str | MethodConfig = "ptqtp",
    config: MethodConfig | None = None,
    include_lm_head: bool = False,
    exclude: str | None = None,
    progress: bool = True,
    packing: str = "2bit",
    planes: dict[str, int] | None = None,
) -> QuantReport:
    """Replace the model's block linears by ``TritPlaneLinear`` modules, in place.

    The modules hold exactly what the artifact stores (packed codes, float16 scales), so a
    saved and reloaded model computes the same logits bit for bit. ``method``: a config or a
    name (as in ``quantize``) of a data-free trit-plane method (calibrated methods:
    ``ptqtp.models.calibrate.calibrate_model``). ``packing``: the modules' code packing.
    ``planes``: a plane count per layer name (mixed precision, ``ptqtp.models.allocate``)
    overriding the config's.
    """
    config = resolve_config(method, config or PTQTPConfig())
    spec = method_of(config)
    if spec.calibrated or not spec.packable:
        raise ValueError(
            f"quantize_model takes a data-free trit-plane method, not {spec.name!r} "
            f"(calibrated methods: ptqtp.models.calibrate.calibrate_model)"
        )
    report = QuantReport()
    t0 = time.perf_counter()
    targets = quantizable_linears(model, include_lm_head, exclude)
    if not targets:
        raise ValueError("no linear layer found inside decoder blocks")
    bar = tqdm(targets, desc=f"quantize ({spec.name})", unit="layer", disable=not progress)
    for name, module in bar:
        w = weight_of(module).detach()
        r = quantize(w, layer_config(config, planes, name), name=name)
        new = trit_module(pack_layer(r, name, packing), w.shape[1], config.group_size, module.bias, w.device, packing)
        set_module(model, name, new)
        report.layers[name] = r
        bar.set_postfix_str(f"{name}: {r.rel_error:.4f}")
    report.seconds = time.perf_counter() - t0
    return report


def save_quantized(
    model: torch.nn.Module,
    path: str | Path,
    report: QuantReport,
    config: MethodConfig,
    metadata: dict[str, str] | None = None,
    guards: bool = False,
    packing: str = "2bit",
) -> Path:
    """Write the quantized model as one artifact: trit-plane layers plus every other tensor;
    ``config`` is the method config that was used (recorded in the header). ``guards``: add
    each layer's empty ``NAME.weight`` (for a transformers model folder, ``GUARD``); ``packing``
    packs the codes (``ptqtp.formats.packing``)."""
    quantized = {n for n, m in model.named_modules() if isinstance(m, TritPlaneLinear)}
    tensors = {
        k: v
        for k, v in artifact_tensors(model).items()
        if k.rpartition(".")[0] not in quantized or k.endswith((".bias", f".{GUARD}"))
    }
    hf = model.config.to_dict() if hasattr(model, "config") else None
    if hf is not None:
        hf.pop("quantization_config", None)
    meta = {"ptqtp.hf_config": json.dumps(hf)} if hf is not None else {}
    meta.update(metadata or {})
    if guards:
        tensors.update(guard_tensors(report.layers))
    return save_artifact(path, report.layers, tensors, config=config, metadata=meta, packing=packing)


def load_quantized(path: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """A ``transformers`` model with ``TritPlaneLinear`` layers from an artifact written by
    :func:`save_quantized` (the config comes from the artifact's header).

    Raises ``ArtifactError``/``ValueError`` when the artifact lacks a config, or its tensors
    do not fill the model exactly.
    """
    from transformers import AutoConfig, AutoModelForCausalLM  # heavy, optional

    art = load_artifact(path)
    raw = art.metadata.get("ptqtp.hf_config")
    if raw is None:
        raise ArtifactError(f"{path}: no ptqtp.hf_config in the header; not a model artifact")
    cfg_dict = json.loads(raw)
    cfg_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**cfg_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    for name, layer in art.layers.items():
        packed = {
            "tp_codes": layer.codes,
            "tp_scales": layer.scales,
            "tp_offsets": layer.offsets,
            "tp_perm": layer.perm,
        }
        set_module(
            model, name, trit_module(packed, layer.in_features, layer.group_size, layer.bias, "cpu", layer.packing)
        )
    plain = {k: v for k, v in art.tensors.items() if k.rpartition(".")[0] not in art.layers}
    missing, unexpected = model.load_state_dict(plain, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    tied |= {k for k in missing if k.endswith("lm_head.weight") and getattr(config, "tie_word_embeddings", False)}
    missing = [k for k in missing if k not in tied and k.rpartition(".")[0] not in art.layers]
    if missing or unexpected:
        raise ArtifactError(f"{path}: tensors do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    from .transformers_quantizer import PTQTPHfQuantizer, PTQTPQuantConfig

    records = json.loads(art.metadata["ptqtp.layers"])
    model.config.quantization_config = PTQTPQuantConfig.from_records(records)
    model.hf_quantizer = PTQTPHfQuantizer(model.config.quantization_config)  # save_pretrained writes an artifact
    model.is_quantized = True
    return model.to(device).eval()


def write_model_folder(folder: str | Path, tokenizer=None, tokenizer_dir: str | Path | None = None) -> Path:
    """Make ``folder`` (holding a verified artifact as ``model.safetensors``) a transformers model
    folder: ``config.json`` with the model's config and ``quantization_config``, and the
    tokenizer (an object, or the tokenizer files of ``tokenizer_dir``), so that after
    ``import ptqtp`` ``AutoModelForCausalLM.from_pretrained(folder)`` loads it."""
    import shutil

    from ptqtp.formats.atomic import atomic_write

    from .data import TOKENIZER_FILES
    from .transformers_quantizer import PTQTPQuantConfig

    folder = Path(folder)
    metadata = artifact_metadata(folder / "model.safetensors")  # written and verified by the caller
    raw = metadata.get("ptqtp.hf_config")
    if raw is None:
        raise ArtifactError(
            f"{folder / 'model.safetensors'}: no model config in the header (ptqtp.hf_config); "
            f"a transformers folder needs one"
        )
    config = json.loads(raw)
    config["quantization_config"] = PTQTPQuantConfig.from_records(json.loads(metadata["ptqtp.layers"])).to_dict()
    if not config.get("architectures"):
        arch = _architecture(config)
        if arch:
            config["architectures"] = [arch]
    atomic_write(folder / "config.json", lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n"))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    elif tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            if (Path(tokenizer_dir) / name).is_file():
                shutil.copy(Path(tokenizer_dir) / name, folder / name)
    return folder


def _architecture(config: dict) -> str | None:
    """The causal-LM class name transformers maps the config to (None if it knows none)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        cfg = AutoConfig.for_model(**{k: v for k, v in config.items() if k != "quantization_config"})
        return AutoModelForCausalLM._model_mapping[type(cfg)].__name__
    except (KeyError, ValueError, AttributeError):
        return None
