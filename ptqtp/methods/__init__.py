"""Quantization methods: one module per method, each with its own frozen config.

    ptqtp       PTQTP, two trit planes per group (``PTQTPConfig``); ptqtp-k1/k3/k4: K planes
    ternary     BitNet b1.58 absmean, one plane (``TernaryConfig``)
    pt2-itf     PT^2-LLM's data-free fit, one plane + offsets (``PT2ITFConfig``)
    pt2         PT^2-LLM with calibration (``PT2Config``)
    ptqtp-gptq  PTQTP's grid with GPTQ error feedback (``PTQTPGPTQConfig``)
    rtn2/3/4    round-to-nearest baselines, evaluation only (``RTNConfig``)
    gptq3/4     GPTQ onto a uniform grid, calibrated baselines, evaluation only (``GPTQConfig``)

``quantize(weight, config)`` dispatches on the config's type (``registry``).
"""

from ._common import TritPlaneResult, check_weight, dequantize_planes, relative_error
from ._config import MethodConfig
from .gptq import PTQTPGPTQConfig, gptq_trit_planes
from .gptq_uniform import GPTQConfig, gptq_uniform
from .pt2 import PT2Config, PT2ITFConfig, pt2_calibrated, pt2_itf
from .ptqtp import PTQTPConfig, quantize_ptqtp
from .registry import (
    METHODS,
    REGISTRY,
    Method,
    artifact_config,
    get_method,
    method_of,
    quantize,
    register_method,
    resolve_config,
)
from .rtn import RTNConfig, RTNResult, quantize_rtn
from .ternary import TernaryConfig, quantize_ternary_absmean

__all__ = [
    "METHODS",
    "REGISTRY",
    "GPTQConfig",
    "gptq_uniform",
    "Method",
    "MethodConfig",
    "PT2Config",
    "PT2ITFConfig",
    "PTQTPConfig",
    "PTQTPGPTQConfig",
    "RTNConfig",
    "RTNResult",
    "TernaryConfig",
    "TritPlaneResult",
    "artifact_config",
    "check_weight",
    "dequantize_planes",
    "get_method",
    "gptq_trit_planes",
    "method_of",
    "pt2_calibrated",
    "pt2_itf",
    "quantize",
    "quantize_ptqtp",
    "quantize_rtn",
    "quantize_ternary_absmean",
    "register_method",
    "relative_error",
    "resolve_config",
]
