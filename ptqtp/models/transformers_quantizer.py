"""A quantized model as a normal transformers folder (``from_pretrained`` / ``save_pretrained``).

``config.json`` carries ``quantization_config`` = {quant_method: "ptqtp", method, group_size,
planes, packing, format_version, layers: the artifact's layer records}; the weights are the
artifact itself (``model.safetensors``: NAME.tp_codes, NAME.tp_scales, ...; docs/SPEC.md
section 2). ``import ptqtp`` registers the config and quantizer with transformers' public
API (``register_quantization_config``, ``register_quantizer``) as soon as transformers'
quantizer registry is imported: before the weights load, every listed linear becomes a
``TritPlaneLinear`` whose buffers have the artifact's names, so the checkpoint fills them
directly; ``save_pretrained`` writes a valid ptqtp artifact again (header and hashes).
Without ``import ptqtp``, transformers skips an unknown ``quant_method`` with a warning and
would load random weights; so each quantized layer in a folder also stores an empty
``NAME.weight`` (the guard, shape [0]) that plain transformers refuses as a size mismatch.
"""

from __future__ import annotations

import json

import torch
from transformers.quantizers.auto import register_quantization_config, register_quantizer
from transformers.quantizers.base import HfQuantizer
from transformers.utils.quantization_config import QuantizationConfigMixin

from ptqtp.formats.artifact import FORMAT_VERSION
from ptqtp.formats.packing import PACKINGS, invalid_bytes, packed_width
from ptqtp.kernels import TritPlaneLinear

__all__ = ["PTQTPQuantConfig", "PTQTPHfQuantizer", "QUANT_METHOD"]

QUANT_METHOD = "ptqtp"


class PTQTPQuantConfig(QuantizationConfigMixin):
    """transformers' view of a ptqtp artifact: the method and every quantized module's shape."""

    def __init__(
        self,
        method: str = "ptqtp",
        group_size: int = 128,
        planes: int = 2,
        packing: str = "2bit",
        format_version: str = FORMAT_VERSION,
        layers: list | None = None,
        **kwargs,
    ):
        self.quant_method = QUANT_METHOD
        self.method, self.group_size, self.planes, self.packing = method, group_size, planes, packing
        self.format_version = format_version
        self.layers = list(layers or [])
        self.post_init()

    @classmethod
    def from_records(cls, records: list[dict]) -> PTQTPQuantConfig:
        """The config of an artifact's layer records."""
        if not records:
            raise ValueError("an artifact without quantized layers has no quantization_config")
        first = records[0]
        packings = {r.get("packing", "2bit") for r in records}
        return cls(
            method=first["method"],
            group_size=int(first["group_size"]),
            planes=max(int(r.get("planes", 2)) for r in records),
            packing=packings.pop() if len(packings) == 1 else "mixed",
            layers=records,
        )

    def post_init(self):
        if self.format_version != FORMAT_VERSION:
            raise ValueError(f"ptqtp format_version {self.format_version!r}, this ptqtp reads {FORMAT_VERSION!r}")
        if self.packing not in (*PACKINGS, "mixed"):
            raise ValueError(f"ptqtp packing {self.packing!r} is not supported by this ptqtp")
        for r in self.layers:
            if not isinstance(r, dict) or not {"name", "out_features", "in_features", "group_size"} <= set(r):
                raise ValueError(f"ptqtp quantization_config: layer record {str(r)[:100]} lacks its shape")
            if r.get("packing", "2bit") not in PACKINGS:
                raise ValueError(
                    f"ptqtp quantization_config: layer {r['name']!r} has packing {r['packing']!r}, "
                    f"not one of {PACKINGS}"
                )

    @property
    def modules(self) -> dict[str, tuple]:
        """name -> (out_features, in_features, planes, offset, perm, group_size, packing)."""
        return {
            r["name"]: (
                int(r["out_features"]),
                int(r["in_features"]),
                int(r.get("planes", 2)),
                bool(r.get("offset", r.get("method") in ("pt2", "pt2-itf"))),
                bool(r.get("perm", False)),
                int(r["group_size"]),
                r.get("packing", "2bit"),
            )
            for r in self.layers
        }

    def to_dict(self) -> dict:
        return {
            "quant_method": QUANT_METHOD,
            "method": self.method,
            "group_size": self.group_size,
            "planes": self.planes,
            "packing": self.packing,
            "format_version": self.format_version,
            "layers": self.layers,
        }


class FolderTritPlaneLinear(TritPlaneLinear):
    """A ``TritPlaneLinear`` that also holds the folder's empty guard ``weight`` (shape [0];
    ``ptqtp.formats.artifact.GUARD``), so it loads and saves like the checkpoint."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("weight", torch.zeros(0, dtype=torch.float16))


def _placeholder(
    out_features: int, in_features: int, planes: int, offset: bool, perm: bool, G: int, packing: str, bias: bool
) -> TritPlaneLinear:
    """A TritPlaneLinear of the right shapes, to be filled by the checkpoint's tensors."""
    ng = -(-in_features // G)
    return FolderTritPlaneLinear(
        torch.zeros(planes, out_features, packed_width(ng * G, packing), dtype=torch.uint8),
        torch.ones(planes, out_features, ng, dtype=torch.float16),
        in_features,
        G,
        torch.zeros(out_features) if bias else None,
        offsets=torch.zeros(out_features, ng, dtype=torch.float16) if offset else None,
        perm=torch.arange(in_features, dtype=torch.int32) if perm else None,
        packing=packing,
    )


class PTQTPHfQuantizer(HfQuantizer):
    """Loads pre-quantized ptqtp folders; quantizing on the fly is ``ptqtp quantize``'s job."""

    requires_calibration = True  # only pre-quantized checkpoints

    def validate_environment(self, *args, **kwargs):
        pass

    def _process_model_before_weight_loading(self, model, **kwargs):
        for name, (n, d, planes, offset, perm, G, packing) in self.quantization_config.modules.items():
            try:
                old = model.get_submodule(name)
            except AttributeError:
                raise ValueError(f"quantization_config lists {name!r}, which the model does not have") from None
            parent, _, child = name.rpartition(".")
            new = _placeholder(n, d, planes, offset, perm, G, packing, getattr(old, "bias", None) is not None)
            setattr(model.get_submodule(parent) if parent else model, child, new)
        return model

    def _process_model_after_weight_loading(self, model, **kwargs):
        for name in self.quantization_config.modules:
            m = model.get_submodule(name)
            if len(invalid_bytes(m.tp_codes, m.packing)) or not bool(torch.isfinite(m.tp_scales).all()):
                raise ValueError(f"{name}: the loaded codes or scales are invalid (corrupt checkpoint?)")
            m._dense = None
        return model

    def update_dtype(self, dtype):
        return dtype

    def get_state_dict_and_metadata(self, model):
        """The artifact's tensors and header (format, layer records, config, hashes), so a
        ``save_pretrained`` folder is a valid ptqtp artifact again."""
        from ptqtp.formats.artifact import FORMAT_VERSION as version
        from ptqtp.formats.artifact import tensor_sha256, with_hashes

        from ._tensors import artifact_tensors

        tensors = artifact_tensors(model)
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        header = {
            "ptqtp.format": version,
            "ptqtp.layers": json.dumps(self.quantization_config.layers),
            "ptqtp.hf_config": json.dumps(config),
        }
        return tensors, with_hashes(header, {k: tensor_sha256(v) for k, v in tensors.items()})

    def is_serializable(self, **kwargs):
        return True

    @property
    def is_trainable(self):
        return False


def register() -> None:
    """Register the config and quantizer with transformers (idempotent)."""
    from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING

    if QUANT_METHOD not in AUTO_QUANTIZATION_CONFIG_MAPPING:
        register_quantization_config(QUANT_METHOD)(PTQTPQuantConfig)
    if QUANT_METHOD not in AUTO_QUANTIZER_MAPPING:
        register_quantizer(QUANT_METHOD)(PTQTPHfQuantizer)


register()
