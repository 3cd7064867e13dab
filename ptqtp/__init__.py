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

from importlib import import_module

from . import _transformers_hook

_transformers_hook.install()  # quantized folders load with transformers' from_pretrained after `import ptqtp`

#: public name -> the module defining it; imported on first use, so that ``import ptqtp``
#: (and the command line's --help, hdl and sim) does not import torch.
_EXPORTS = {
    **dict.fromkeys(
        ("Artifact", "ArtifactError", "PackedLayer", "load_artifact", "save_artifact"), "ptqtp.formats.artifact"
    ),
    **dict.fromkeys(
        (
            "METHODS",
            "PT2Config",
            "PT2ITFConfig",
            "PTQTPConfig",
            "PTQTPGPTQConfig",
            "RTNConfig",
            "RTNResult",
            "TernaryConfig",
            "TritPlaneResult",
            "quantize",
            "quantize_ptqtp",
            "quantize_rtn",
            "quantize_ternary_absmean",
        ),
        "ptqtp.methods",
    ),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ptqtp' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
