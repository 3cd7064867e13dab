"""ptqtp: PTQTP trit-plane quantization and hardware co-design toolkit.

Quantize one weight with ``quantize(weight, config)`` (the config's type selects the
method, ``ptqtp.methods``); pack results into artifacts with ``save_artifact`` /
``load_artifact`` (``ptqtp.formats``). The layers of the package, bottom up::

    golden      the integer arithmetic, the one definition every other path matches
    methods     quantization methods and their registry
    formats     packing, artifacts, checkpoint streaming, hardware and model images, wire frames
    kernels     Triton kernels and TritPlaneLinear        hdl   the Amaranth accelerator
    models      transformers integration                   sim   Verilator / cocotb benches
    runtime     backends, TCP server and client, hardware in the loop, comparisons
    workflows   the main job, exports, reports
    tools       the command line and benchmark scripts

``ptqtp.hdl``, ``ptqtp.sim``, ``ptqtp.kernels`` and ``ptqtp.tools`` are the repository's
``hdl/``, ``sim/``, ``kernels/`` and ``tools/`` folders. Importing the package has no side
effects on the environment.
"""

from .formats.artifact import Artifact, ArtifactError, PackedLayer, load_artifact, save_artifact
from .methods import (METHODS, PT2Config, PT2ITFConfig, PTQTPConfig, PTQTPGPTQConfig, RTNConfig, RTNResult,
                      TernaryConfig, TritPlaneResult, quantize, quantize_ptqtp, quantize_rtn, quantize_ternary_absmean)

__all__ = [
    "Artifact",
    "ArtifactError",
    "METHODS",
    "PT2Config",
    "PT2ITFConfig",
    "PTQTPConfig",
    "PTQTPGPTQConfig",
    "PackedLayer",
    "RTNConfig",
    "RTNResult",
    "TernaryConfig",
    "TritPlaneResult",
    "load_artifact",
    "quantize",
    "quantize_ptqtp",
    "quantize_rtn",
    "quantize_ternary_absmean",
    "save_artifact",
]
