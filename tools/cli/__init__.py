"""The ``ptqtp`` command line: thin argparse wrappers over library functions, one module
per command group (``demo``; ``quantize``: quantize/eval/inspect; ``hardware``:
export/plan/dse/budget/hdl/sim; ``runtime``: compare/hil/serve; ``soc``; ``report``). Only the group of the
command that runs is imported, so ``--help``, ``--version``, ``hdl`` and ``sim`` start
without torch."""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

__all__ = ["main", "build_parser", "COMMANDS"]

#: command -> (its module in this package, one-line help)
COMMANDS = {
    "demo": ("demo", "the main job on the embedded default (no arguments needed)"),
    "quantize": ("quantize", "quantize a safetensors checkpoint (file, folder or sharded) into an artifact"),
    "eval": ("quantize", "perplexity table: FP vs PTQTP vs baselines, or one artifact"),
    "inspect": ("quantize", "validate an artifact and list its layers"),
    "export": ("hardware", "write an artifact's model image for the engine (weights.bin + manifest.json)"),
    "plan": ("hardware", "tokens/s of a model's linears on the streaming engine, per board"),
    "dse": ("hardware", "sweep engine configurations through synthesis and the cycle model; best per board"),
    "budget": ("hardware", "error budget of one layer over a grid of A and S"),
    "hdl": ("hardware", "generate the engine's Verilog and an ECP5 synthesis report (Fmax per placement seed)"),
    "sim": ("hardware", "run layers on the engine in Verilator (cocotb + cocotbext-axi) against the golden model"),
    "compare": ("runtime", "one layer through every backend: bit-exact agreement and float errors"),
    "hil": ("runtime", "perplexity with chosen layers on a backend (hardware in the loop)"),
    "generate": ("decoder", "greedy text with every op of a token on the golden integer decoder; planned tok/s"),
    "report": ("report", "a Markdown report with figures: layer errors, the A x S error budget, the DSE sweep"),
    "serve": ("runtime", "answer the ptqtp TCP protocol (docs/PROTOCOL.md) from a local backend"),
    "soc": ("soc", "LiteX system-on-chip: Verilog, ECP5 bitstreams, whole-SoC simulation with LiteDRAM"),
}


class _Commands:
    """``add_subparsers`` with each command's help taken from :data:`COMMANDS`."""

    def __init__(self, sub):
        self._sub = sub

    def add_parser(self, name: str, **kwargs):
        return self._sub.add_parser(name, help=COMMANDS[name][1], **kwargs)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("ptqtp")
    except PackageNotFoundError:
        return "unknown (not installed; pip install -e .)"


def build_parser(command: str | None = None, full: bool = True) -> argparse.ArgumentParser:
    """The parser of every command (``full``), or with ``command`` only that command's group
    imported and fully defined; the other commands are listed with their help."""
    p = argparse.ArgumentParser(
        prog="ptqtp", description="PTQTP trit-plane quantization and hardware co-design toolkit."
    )
    p.add_argument("--version", action="version", version=f"ptqtp {version()}")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups = [COMMANDS[command][0]] if command else sorted({m for m, _ in COMMANDS.values()}) if full else []
    for group in groups:
        importlib.import_module(f"{__name__}.{group}").register(_Commands(sub))
    defined = set(sub.choices)
    for name, (_, text) in COMMANDS.items():
        if name not in defined:
            sub.add_parser(name, help=text, add_help=False)
    return p


def _command(argv: list[str]) -> str | None:
    """The command word of ``argv`` (the first argument naming one), if any."""
    return next((a for a in argv if a in COMMANDS), None)


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
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command(argv), full=False).parse_args(argv)
    if args.command not in ("hdl", "sim"):  # these two never touch torch or Triton
        from ptqtp.kernels import use_interpreter_without_cuda

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
