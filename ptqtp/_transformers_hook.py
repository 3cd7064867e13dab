"""Register ptqtp with transformers' quantizer registry when transformers imports it.

``import ptqtp`` must stay light (the command line starts without torch), yet after it
``AutoModelForCausalLM.from_pretrained(quantized_folder)`` must know ``quant_method:
"ptqtp"``. So registration runs right after ``transformers.quantizers.auto`` is imported
(now, if it already is).
"""

from __future__ import annotations

import importlib.abc
import sys

_TARGET = "transformers.quantizers.auto"


def _register() -> None:
    mod = sys.modules.get("ptqtp.models.transformers_quantizer")
    if mod is not None and not hasattr(mod, "register"):
        return  # that module is being imported (it imported transformers) and registers at its end
    from ptqtp.models.transformers_quantizer import register

    register()


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of ``_TARGET`` to register afterwards."""

    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None:
                run = spec.loader.exec_module

                def exec_module(module, run=run):
                    run(module)
                    _register()

                spec.loader.exec_module = exec_module
                return spec
        return None


def install() -> None:
    if _TARGET in sys.modules:
        _register()
    elif not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport())
