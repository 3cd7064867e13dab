"""The ``ptqtp`` command line: thin argparse wrappers over library functions, one module
per command group (``demo``, ``quantize``: quantize/eval/inspect, ``hardware``:
export/budget/hdl/sim, ``runtime``: compare/hil/serve)."""

from __future__ import annotations

import argparse
import os
import re
import sys

from ptqtp.kernels import use_interpreter_without_cuda

from . import demo, hardware, quantize, runtime

__all__ = ["main", "build_parser"]

_GROUPS = (demo, quantize, hardware, runtime)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ptqtp", description="PTQTP trit-plane quantization and hardware co-design toolkit.")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in _GROUPS:
        group.register(sub)
    return p


def describe(e: BaseException) -> str:
    """One line for an error a user can act on: file names first, no traceback."""
    if isinstance(e, re.error):
        return f"bad regular expression {e.pattern!r}: {e}"
    if isinstance(e, OSError) and e.strerror:
        where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f)
        return f"{where}: {e.strerror}" if where else e.strerror
    text = str(e) or type(e).__name__
    return text if len(text) < 2000 else text[:2000] + " ..."


# What a user's input can cause; anything else is reported the same way but flagged as unexpected.
_EXPECTED = (ValueError, TypeError, OverflowError, OSError, RuntimeError, KeyError, re.error, TimeoutError)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ptqtp`` command: exit 0 on success, 1 when a comparison finds a
    mismatch, 2 with one line on stderr for an error (``--debug``: the traceback)."""
    args = build_parser().parse_args(argv)
    use_interpreter_without_cuda()  # before transformers can import Triton
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"ptqtp {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `ptqtp inspect --json | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # noqa: BLE001 - one clear line instead of a traceback
        if args.debug:
            raise
        hint = "" if isinstance(e, _EXPECTED) else f" ({type(e).__name__}; --debug shows the traceback)"
        print(f"ptqtp {args.command}: error: {describe(e)}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
