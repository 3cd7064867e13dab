"""Quantizer configuration, validated up front and serialised into artifacts."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

__all__ = ["PTQTPConfig", "METHODS"]

#: Methods the quantizer API knows. Only trit-plane methods (not rtn*) can be packed into an
#: artifact. ``pt2`` needs calibration statistics (``hessian=``); ``pt2-itf`` is its data-free part.
METHODS = ("ptqtp", "ternary", "pt2", "pt2-itf", "rtn2", "rtn3", "rtn4")


@dataclass(frozen=True)
class PTQTPConfig:
    """Parameters of the PTQTP trit-plane quantizer (SPEC section 1).

    Parameters
    ----------
    group_size:
        Input columns per group G; a positive multiple of 4 (four trits per byte).
    max_iters:
        Tmax, the most refinement iterations.
    eps:
        Stop when the largest scale change of any group is below this.
    lambda_init, kappa_max, lambda_max:
        Adaptive ridge: start lambda, condition-number limit, lambda cap.
    search_dtype:
        ``"float32"`` (fast) or ``"float64"`` (matches the float64 reference exactly)
        for the per-element trit search. Scales are always solved in float64.
    chunk_groups:
        Groups processed at once; bounds temporaries to about
        ``chunk_groups * group_size * 13`` bytes.
    """

    version: int = 1
    group_size: int = 128
    max_iters: int = 50
    eps: float = 1e-4
    lambda_init: float = 1e-8
    kappa_max: float = 1e12
    lambda_max: float = 1.0
    search_dtype: str = "float32"
    chunk_groups: int = 4096

    def __post_init__(self) -> None:
        if self.version != 1:
            raise ValueError(f"version must be 1, not {self.version!r}")
        if not isinstance(self.group_size, int) or self.group_size <= 0 or self.group_size % 4:
            raise ValueError(f"group_size must be a positive multiple of 4, not {self.group_size!r}")
        if not isinstance(self.max_iters, int) or self.max_iters < 1:
            raise ValueError(f"max_iters must be an integer >= 1, not {self.max_iters!r}")
        for name in ("eps", "lambda_init", "kappa_max", "lambda_max"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
                raise ValueError(f"{name} must be a positive finite number, not {value!r}")
        if self.search_dtype not in ("float32", "float64"):
            raise ValueError(f"search_dtype must be 'float32' or 'float64', not {self.search_dtype!r}")
        if not isinstance(self.chunk_groups, int) or self.chunk_groups < 1:
            raise ValueError(f"chunk_groups must be an integer >= 1, not {self.chunk_groups!r}")

    def to_metadata(self) -> dict[str, str]:
        """The config as ``ptqtp.config.*`` string entries for a safetensors header."""
        return {"ptqtp.config": json.dumps(asdict(self), sort_keys=True)}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> PTQTPConfig:
        """Inverse of :meth:`to_metadata`; unknown keys are an error."""
        raw = json.loads(metadata["ptqtp.config"])
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown config keys in artifact: {sorted(unknown)}")
        return cls(**raw)
