"""The ``ptqtp`` command line: thin argparse wrappers over library functions, one module
per command group (``demo``, ``quantize``: quantize/eval/inspect, ``hardware``:
export/budget/hdl/sim, ``runtime``: compare/hil/serve)."""

from __future__ import annotations

import argparse
import sys

from ptqtp.formats.artifact import ArtifactError
from ptqtp.kernels import use_interpreter_without_cuda

from . import demo, hardware, quantize, runtime

__all__ = ["main", "build_parser"]

_GROUPS = (demo, quantize, hardware, runtime)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ptqtp", description="PTQTP trit-plane quantization and hardware co-design toolkit.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in _GROUPS:
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ptqtp`` command."""
    args = build_parser().parse_args(argv)
    use_interpreter_without_cuda()  # before transformers can import Triton
    try:
        return args.func(args)
    except (ArtifactError, ValueError, TypeError, OverflowError, FileNotFoundError, RuntimeError) as e:
        print(f"ptqtp {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
