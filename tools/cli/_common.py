"""Argument groups and helpers shared by the command modules; defaults and choices come
from the configs and registries, never copied here."""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from pathlib import Path

from ptqtp.golden import IntConfig
from ptqtp.hdl.engine_model import EngineParams

__all__ = [
    "json_arg",
    "write_json",
    "config_args",
    "config_from_args",
    "method_config",
    "layer_args",
    "engine_args",
    "engine_params",
    "int_args",
    "int_config",
    "pick_layer",
    "choose_layer",
    "backend_kwargs",
    "soc_args",
    "positive",
    "non_negative",
    "port",
    "positive_rate",
    "share",
    "host_port",
    "regex",
    "samples_arg",
    "token_arg",
]

_INT = IntConfig()


def _bounded(lo: int, hi: int | None, what: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}")
        return v

    parse.__name__ = what  # argparse names the type in its message
    return parse


positive = _bounded(1, None, "a positive integer")
non_negative = _bounded(0, None, "a non-negative integer")
port = _bounded(0, 65535, "a TCP port (0..65535)")


def _typed(what: str, check):
    """An argparse type: ``check(text)`` gives the value or raises ValueError; the message says ``what``."""

    def parse(text: str):
        try:
            return check(text)
        except (ValueError, re.error):
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}") from None

    parse.__name__ = what
    return parse


def _rate(text: str) -> float:
    v = float(text)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(text)
    return v


def _share(text: str) -> float:
    v = float(text)
    if not 0 <= v < 1:
        raise ValueError(text)
    return v


def _host_port(text: str) -> tuple[str, int]:
    host, sep, p = text.rpartition(":")
    if not sep or not host or not p.isdigit() or not 1 <= int(p) <= 65535:
        raise ValueError(text)
    return host, int(p)


def _regex(text: str) -> str:
    re.compile(text)
    return text


positive_rate = _typed("a positive finite number", _rate)
share = _typed("a share in [0, 1)", _share)
host_port = _typed("HOST:PORT with a port in 1..65535", _host_port)
regex = _typed("a regular expression", _regex)


def json_arg(p: argparse.ArgumentParser, what: str = "the results") -> None:
    p.add_argument("--json", type=Path, metavar="FILE", help=f"also write {what} as JSON to FILE ('-': stdout)")


def write_json(path: Path | None, record) -> None:
    """Write ``record`` as JSON to ``path`` atomically (numbers, strings, lists; other
    values as their str); nothing without a path."""
    if path is None:
        return
    import json

    from ptqtp.formats.atomic import atomic_write

    def plain(v):
        if hasattr(v, "tolist"):
            return v.tolist()
        if isinstance(v, (set, tuple)):
            return list(v)
        if dataclasses.is_dataclass(v):
            return dataclasses.asdict(v)
        return str(v)

    text = json.dumps(record, indent=2, default=plain)
    if str(path) == "-":
        print(text, flush=True)
        return
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def config_args(p: argparse.ArgumentParser) -> None:
    from ptqtp.methods import PTQTPConfig  # torch: only for the commands that quantize

    _PTQTP = PTQTPConfig()
    g = p.add_argument_group("quantizer (docs/SPEC.md section 1)")
    g.add_argument(
        "--group-size",
        type=positive,
        default=_PTQTP.group_size,
        help=f"input columns per group G (multiple of 4; default {_PTQTP.group_size})",
    )
    g.add_argument(
        "--max-iters",
        type=positive,
        default=_PTQTP.max_iters,
        help=f"Tmax, most refinement iterations (default {_PTQTP.max_iters})",
    )
    g.add_argument(
        "--eps", type=float, default=_PTQTP.eps, help=f"stop when no scale moves by this much (default {_PTQTP.eps:g})"
    )
    g.add_argument(
        "--search-dtype",
        choices=("float32", "float64"),
        default=_PTQTP.search_dtype,
        help="dtype of the per-element trit search; float64 reproduces the reference exactly",
    )
    g.add_argument(
        "--block-refit",
        action="store_true",
        help="ptqtp-gptq: after each linear, refit all its scales to the float model's outputs from the "
        "quantized path's inputs (block reconstruction; docs/QUANTIZATION.md)",
    )


def config_from_args(args):
    """The PTQTP config of the command line; other methods take its group size."""
    from ptqtp.methods import PTQTPConfig

    return PTQTPConfig(
        group_size=args.group_size, max_iters=args.max_iters, eps=args.eps, search_dtype=args.search_dtype
    )


def method_config(args, method: str):
    """``method``'s default config with every quantizer option of the command line it has."""
    from ptqtp.methods import get_method

    default = get_method(method).config(args.group_size)
    given = {"max_iters": args.max_iters, "eps": args.eps, "search_dtype": args.search_dtype, **method_overrides(args)}
    names = {f.name for f in dataclasses.fields(default)}
    return dataclasses.replace(default, **{k: v for k, v in given.items() if k in names})


def method_overrides(args) -> dict:
    """Options of the command line that only some methods' configs have (applied where they exist)."""
    return {"block_refit": True} if getattr(args, "block_refit", False) else {}


def int_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("integer datapath (docs/SPEC.md section 3)")
    g.add_argument(
        "--act-bits", type=positive, default=_INT.act_bits, help=f"activation bits A (default {_INT.act_bits})"
    )
    g.add_argument(
        "--scale-bits", type=positive, default=_INT.scale_bits, help=f"scale bits S (default {_INT.scale_bits})"
    )


def int_config(args) -> IntConfig:
    return IntConfig(args.act_bits, args.scale_bits)


def samples_arg(p: argparse.ArgumentParser, default: int, purpose: str = "") -> None:
    """``--samples N``: how many random LLM-like input vectors (one meaning everywhere)."""
    p.add_argument(
        "--samples",
        type=positive,
        default=default,
        help=f"random LLM-like input vectors{', ' + purpose if purpose else ''} (default {default})",
    )


def layer_args(p: argparse.ArgumentParser, samples: int, what: str = "") -> None:
    """The artifact, one of its layers, and how many random input vectors (``--samples``)."""
    p.add_argument("artifact", type=Path, help="packed artifact (.safetensors)")
    p.add_argument("--layer", help="layer name (default: the first)")
    samples_arg(p, samples, what)


def pick_layer(artifact: Path, name: str | None):
    """(name, PackedLayer): the named layer of an artifact, or its first."""
    from ptqtp.formats.artifact import load_artifact

    return choose_layer(load_artifact(artifact).layers, name)


def choose_layer(layers: dict, name: str | None):
    """(name, layer): the named one of ``layers``, or the first."""
    name = name or next(iter(layers), None)
    if name not in layers:
        raise ValueError(f"layer {name!r} is not in the artifact")
    return name, layers[name]


def backend_kwargs(args) -> dict:
    """Per-backend keyword arguments: the engine's parameters for ``rtl`` (and its alias
    ``engine``), --remote HOST:PORT for ``remote``."""
    engine = {"params": engine_params(args)}
    if getattr(args, "bench", None):
        engine["bench"] = args.bench
    kw = {
        "rtl": engine,
        "engine": engine,
        "soc-sim": {"board": getattr(args, "soc_board", None) or "sim-sdr", "params": engine["params"]},
    }
    if getattr(args, "url", None) or getattr(args, "soc_config", None):
        kw["board"] = {"url": args.url, "config": args.soc_config}
    if getattr(args, "remote", None):
        host, port = args.remote
        kw["remote"] = {"host": host, "port": port, "token": getattr(args, "token", None)}
    return kw


def join_ranks(backend: str = "gloo"):
    """(rank, world, barrier, leave) of this process of a torchrun launch: every
    ``--distributed`` command (quantize, hil, dse) joins this way; gloo needs no GPU."""
    import os

    import torch.distributed as dist

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ValueError("--distributed expects to be launched by torchrun (RANK and WORLD_SIZE are not set)")
    dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), dist.barrier, dist.destroy_process_group


def soc_args(p: argparse.ArgumentParser) -> None:
    """``--soc-board`` (soc-sim), ``--url`` and ``--soc-config`` (board): the SoC backends."""
    g = p.add_argument_group("SoC backends (docs/SOC.md)")
    g.add_argument("--soc-board", choices=("sim-sdr", "sim-ddr3"), help="soc-sim's simulated board (default sim-sdr)")
    g.add_argument("--url", help="board: the host link, udp://IP[:PORT] (Etherbone) or a serial port (UARTBone)")
    g.add_argument(
        "--soc-config", type=Path, help="board: the soc.json that `ptqtp soc build` wrote with its bitstream"
    )


def bench_arg(p: argparse.ArgumentParser) -> None:
    """``--bench``: how the rtl backend simulates the engine."""
    p.add_argument(
        "--bench",
        choices=("compiled", "cocotb"),
        default="compiled",
        help="rtl backend's simulation: the compiled C++ harness (default, ~1 M cycles/s) or the cocotb "
        "bench with cocotbext-axi (the verification bench; same results and cycles, ~40x slower)",
    )


def token_arg(p: argparse.ArgumentParser, what: str) -> None:
    """``--token``: the server's shared secret (default: $PTQTP_TOKEN; kept out of argv that way)."""
    import os

    p.add_argument("--token", default=os.environ.get("PTQTP_TOKEN"), help=f"{what} (default: $PTQTP_TOKEN)")


def engine_args(p: argparse.ArgumentParser, both_packings: bool = False) -> None:
    """The engine's parameters (``ptqtp.hdl.engine_model.EngineParams``), one set of names and
    defaults for every command that builds, simulates or plans the engine; with A and S."""
    e = EngineParams()
    g = p.add_argument_group("engine (docs/SPEC.md section 6)")
    g.add_argument(
        "--lanes",
        type=positive,
        default=e.lanes,
        help=f"lanes P per row unit, a power of two dividing G (default {e.lanes})",
    )
    g.add_argument("--rows", type=positive, default=e.rows, help=f"row units R, a power of two (default {e.rows})")
    g.add_argument(
        "--vectors",
        type=positive,
        default=e.vectors,
        help=f"vectors M the engine holds at once, its batch (default {e.vectors})",
    )
    g.add_argument(
        "--data-width", type=positive, default=e.data_width, help=f"AXI data width DW in bits (default {e.data_width})"
    )
    g.add_argument(
        "--packing",
        choices=("2bit", "base3"),
        default=None if both_packings else e.packing,
        help="weight stream packing: 2bit, or base3 (5 trits a byte, a decoder in front of the core; "
        + ("default: both, side by side)" if both_packings else f"default {e.packing})"),
    )
    g.add_argument(
        "--planes",
        type=positive,
        choices=(1, 2),
        default=e.planes,
        help=f"trit planes the datapath carries (default {e.planes})",
    )
    g.add_argument(
        "--max-planes",
        type=positive,
        choices=(1, 2, 3, 4),
        default=e.max_planes,
        help=f"most planes a layer may have; more than --planes run in passes (default {e.max_planes})",
    )
    g.add_argument("--offset", action="store_true", help="include PT^2-LLM's offset term")
    g.add_argument("--max-d", type=positive, default=e.max_d, help=f"widest layer input d (default {e.max_d})")
    g.add_argument("--burst", type=positive, default=e.burst, help=f"DMA beats per burst (default {e.burst})")
    int_args(p)


def engine_params(args) -> EngineParams:
    return EngineParams(
        lanes=args.lanes,
        rows=args.rows,
        planes=args.planes,
        max_planes=max(args.max_planes, args.planes),
        offset=args.offset,
        act_bits=args.act_bits,
        scale_bits=args.scale_bits,
        max_d=args.max_d,
        vectors=args.vectors,
        data_width=args.data_width,
        burst=args.burst,
        packing=args.packing,
    )
