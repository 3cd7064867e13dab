"""The method registry: a config's type selects the method (torchao's ``quantize_`` style).

Each :class:`Method` declares what the rest of the toolkit needs to know without asking
for a method by name: whether it needs calibration data, whether its result packs into an
artifact (trit planes), its planes and its bits per weight. ``quantize(weight, config)`` is
the one entry point; a name (``"ptqtp"``, ``"rtn3"``, ...) gives the default config of
that method.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ._config import MethodConfig
from .gptq import PTQTPGPTQConfig, gptq_trit_planes
from .gptq_uniform import GPTQConfig, gptq_uniform
from .pt2 import PT2Config, PT2ITFConfig, pt2_calibrated, pt2_itf
from .ptqtp import PTQTPConfig, quantize_ptqtp
from .rtn import RTNConfig, quantize_rtn
from .ternary import TernaryConfig, quantize_ternary_absmean

__all__ = [
    "Method",
    "METHODS",
    "REGISTRY",
    "register_method",
    "method_of",
    "get_method",
    "resolve_config",
    "quantize",
    "artifact_config",
]

_FP16 = 16  # bits of one stored scale or offset


@dataclass(frozen=True)
class Method:
    """One quantization method.

    Attributes
    ----------
    name: the method's name (artifact records, CLI choices).
    config_type: its config class; ``config_type()`` gives the defaults.
    run: ``run(weight, config, name, progress, hessian) -> result``.
    calibrated: needs ``hessian`` (d x d sum of x x^T of the layer's calibration inputs).
    packable: gives trit planes that pack into an artifact (else evaluation only).
    planes: trit planes stored per weight (0: not a trit format).
    zero_planes: stored planes that are always zero at scale 0 (not counted in bits).
    offsets: stores a float16 offset per group (PT^2-LLM).
    calibration: default calibration set {"segments", "length"} of a calibrated method.
    default_config: the config this name stands for, when the type alone does not say it (RTN bits).
    """

    name: str
    config_type: type[MethodConfig]
    run: Callable
    calibrated: bool = False
    packable: bool = True
    planes: int = 2
    zero_planes: int = 0
    offsets: bool = False
    calibration: dict | None = None
    default_config: Callable | None = None

    def config(self, group_size: int = 128) -> MethodConfig:
        """The method's default config with group size ``group_size``."""
        make = self.default_config or self.config_type
        return make(group_size=group_size)

    def bits_per_weight(self, group_size: int = 128) -> tuple[float, float]:
        """(storage bits per weight, information bound) including float16 scales per group.

        Trit planes pack 2 bits per trit (base-3 bound log2 3 = 1.585) plus a float16 scale
        per plane and group (and an offset with PT^2-LLM, whose SSR permutation, 32 bits per
        input column shared by all rows, is left out); RTN k-bit stores k bits plus a float16
        scale and a k-bit zero point per group.
        """
        if not self.planes:
            config: Any = self.config(group_size)  # a round-to-nearest config: it has `bits`
            k = config.bits
            return k + (_FP16 + k) / group_size, k + (_FP16 + k) / group_size
        used = self.planes - self.zero_planes
        side = (used + self.offsets) * _FP16 / group_size
        return 2 * used + side, used * math.log2(3) + side


REGISTRY: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add ``method`` (its name must be new)."""
    if method.name in REGISTRY:
        raise ValueError(f"method {method.name!r} is already registered")
    REGISTRY[method.name] = method
    return method


def _ptqtp(weight, config, name, progress, hessian):
    return quantize_ptqtp(weight, config, name=name, progress=progress)


def _ternary(weight, config, name, progress, hessian):
    return quantize_ternary_absmean(weight, config.group_size, name=name)


def _rtn(weight, config, name, progress, hessian):
    return quantize_rtn(weight, config.bits, config.group_size, name=name)


def _gptq_uniform(weight, config, name, progress, hessian):
    return gptq_uniform(weight, hessian, config, name=name)


def _pt2_itf(weight, config, name, progress, hessian):
    return pt2_itf(weight, config, name=name)


def _pt2(weight, config, name, progress, hessian):
    return pt2_calibrated(weight, hessian, config, name=name)


def _gptq(weight, config, name, progress, hessian):
    return gptq_trit_planes(weight, hessian, config, name=name)


register_method(Method("ptqtp", PTQTPConfig, _ptqtp))
for _k in (1, 3, 4):  # PTQTP with K planes (ptqtp.methods.kplanes)
    register_method(
        Method(
            f"ptqtp-k{_k}",
            PTQTPConfig,
            _ptqtp,
            planes=_k,
            default_config=lambda group_size=128, k=_k: PTQTPConfig(group_size=group_size, planes=k),
        )
    )
# ptqtp-gptq's calibration set (16 x 512 tokens) was chosen with issue 10; pt2 takes the
# authors' 128 random segments, 128 tokens long to fit a 2-core machine's budget.
register_method(
    Method("ptqtp-gptq", PTQTPGPTQConfig, _gptq, calibrated=True, calibration={"segments": 16, "length": 512})
)
for _k in (1, 3, 4):  # ptqtp-gptq with K planes
    register_method(
        Method(
            f"ptqtp-gptq-k{_k}",
            PTQTPGPTQConfig,
            _gptq,
            calibrated=True,
            planes=_k,
            calibration={"segments": 16, "length": 512},
            default_config=lambda group_size=128, k=_k: PTQTPGPTQConfig(group_size=group_size, planes=k),
        )
    )
register_method(
    Method(
        "pt2", PT2Config, _pt2, calibrated=True, planes=1, offsets=True, calibration={"segments": 128, "length": 128}
    )
)
register_method(Method("pt2-itf", PT2ITFConfig, _pt2_itf, planes=1, offsets=True))
register_method(Method("ternary", TernaryConfig, _ternary, zero_planes=1))  # plane 2 is zero at scale 0
for _bits in (3, 4):  # the calibrated uniform baselines, with ptqtp-gptq's calibration set
    register_method(
        Method(
            f"gptq{_bits}",
            GPTQConfig,
            _gptq_uniform,
            calibrated=True,
            packable=False,
            planes=0,
            calibration={"segments": 16, "length": 512},
            default_config=lambda group_size=128, bits=_bits: GPTQConfig(group_size, bits),
        )
    )
for _bits in (2, 3, 4):
    register_method(
        Method(
            f"rtn{_bits}",
            RTNConfig,
            _rtn,
            packable=False,
            planes=0,
            default_config=lambda group_size=128, bits=_bits: RTNConfig(group_size, bits),
        )
    )

#: Every registered method's name, in registration order.
METHODS = tuple(REGISTRY)


def get_method(name: str) -> Method:
    """The method called ``name``; ``ValueError`` listing the known ones otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"method must be one of {', '.join(REGISTRY)}, not {name!r}") from None


def method_of(config: MethodConfig) -> Method:
    """The method a config selects (by its type; RTN by its bits)."""
    if not isinstance(config, MethodConfig):
        raise TypeError(f"config must be a method config (e.g. PTQTPConfig), not {type(config).__name__}")
    method = get_method(config.method)
    if type(config) is not method.config_type:
        raise TypeError(f"{type(config).__name__} is not the config type of method {method.name!r}")
    return method


def resolve_config(method: str | MethodConfig, config: MethodConfig | None = None) -> MethodConfig:
    """The config to run: ``method`` itself if it is a config; else ``config`` when it is the
    named method's, else that method's defaults with ``config``'s group size (if any)."""
    if isinstance(method, MethodConfig):
        return method
    spec = get_method(method)
    if config is not None and config.method == spec.name:
        return config
    return spec.config(128 if config is None else config.group_size)


def quantize(
    weight: torch.Tensor,
    method: str | MethodConfig = "ptqtp",
    config: MethodConfig | None = None,
    name: str = "weight",
    progress=None,
    hessian: torch.Tensor | None = None,
):
    """Quantize one (out x in) weight.

    ``method`` is a config (its type selects the method) or a method name; with a name,
    ``config`` is used when it is that method's config, else only its group size is taken
    (so one ``PTQTPConfig`` can set G for a comparison of every method). Trit-plane methods
    give a :class:`TritPlaneResult` (packable), ``rtn*`` an ``RTNResult`` (evaluation only);
    all share ``dequantize()``, ``rel_error``, ``iterations`` and ``seconds``.

    Raises
    ------
    ValueError: an unknown method, a calibrated method without ``hessian``, or a bad weight.
    """
    config = resolve_config(method, config)
    spec = method_of(config)
    if spec.calibrated and hessian is None:
        raise ValueError(
            f"{name}: method {spec.name!r} needs calibration statistics (hessian=)"
            + ("; 'pt2-itf' is the data-free variant" if spec.name == "pt2" else "")
        )
    return spec.run(weight, config, name, progress, hessian)


def artifact_config(metadata: dict[str, str]) -> MethodConfig | None:
    """The config an artifact header records (``ptqtp.method`` + ``ptqtp.config``); artifacts
    written before ``ptqtp.method`` existed recorded a :class:`PTQTPConfig`. None if absent."""
    if "ptqtp.config" not in metadata:
        return None
    name = metadata.get("ptqtp.method", "ptqtp")
    return get_method(name).config_type.from_metadata(metadata)
