"""The base of every method's config: frozen, validated, serialised into artifacts.

A config's type names its method (``METHOD``), so ``quantize(weight, config)`` needs no
string; ``ptqtp.methods.registry`` maps the type to the method's function and facts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

__all__ = ["MethodConfig", "check_group_size", "check_positive_int"]


def check_group_size(value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0 or value % 4:
        raise ValueError(f"group_size must be a positive multiple of 4, not {value!r}")


def check_positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, not {value!r}")


@dataclass(frozen=True)
class MethodConfig:
    """Common to every method config: the group size G (input columns per group)."""

    METHOD: ClassVar[str] = ""

    group_size: int = 128

    def __post_init__(self) -> None:
        check_group_size(self.group_size)

    @property
    def method(self) -> str:
        """The method this config selects (a name in ``ptqtp.methods.METHODS``)."""
        return self.METHOD

    def to_metadata(self) -> dict[str, str]:
        """``ptqtp.config`` (the parameters) and ``ptqtp.method`` entries for a safetensors header."""
        return {"ptqtp.config": json.dumps(asdict(self), sort_keys=True), "ptqtp.method": self.method}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> MethodConfig:
        """Inverse of :meth:`to_metadata` for this type; unknown keys are an error."""
        raw = json.loads(metadata["ptqtp.config"])
        if not isinstance(raw, dict):
            raise ValueError(f"ptqtp.config must be a JSON object, not {type(raw).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown {cls.METHOD} config keys in artifact: {sorted(unknown)}")
        kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        return cls(**kwargs)
