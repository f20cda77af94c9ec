"""Shared pieces of the CRD mirrors: camelCase config, Secret references, conditions, durations.

Layer: models. Pure.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

DURATION_PATTERN: Final = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Duration = Annotated[
    str,
    Field(
        pattern=DURATION_PATTERN,
        max_length=32,  # bounds the CEL rules' cost (the apiserver estimates it per rule)
        json_schema_extra={"x-runnerfleet-duration": True},
    ),
]


def invalid_field(err: ValidationError, root: str = "spec") -> str:
    """The first error of a model's validation as `spec.extraEgress[0].cidr: <why>`: the
    field by its wire name, as `kubectl explain` and the apiserver's own errors name it."""
    first = err.errors()[0]
    path = root
    for part in first["loc"]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return f"{path}: {first['msg'].removeprefix('Value error, ')}"


def epoch(timestamp: str | None) -> float | None:
    """Epoch seconds of an RFC 3339 timestamp (None for None or "")."""
    if not timestamp:
        return None
    return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def parse_duration(text: str) -> float:
    """`1h30m`, `90s`, `250ms` -> seconds. Raises ValueError naming the text."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration like 30s, 5m or 1h30m")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


class CrdModel(BaseModel):
    """Base for CRD mirrors: camelCase on the wire, snake_case in Python, unknown keys kept out."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The camelCase dict the apiserver stores (unset optional fields omitted)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class SecretKeyRef(CrdModel):
    """A reference to a Secret in the same namespace as the referring object."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Secret.")


class Condition(CrdModel):
    """A Kubernetes-style status condition."""

    type: str = Field(description="Condition type, e.g. Ready, ScalingBlocked, GitHubReachable.")
    status: str = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable explanation.")
    last_transition_time: str | None = Field(
        default=None, description="When the status last changed (RFC 3339)."
    )
    observed_generation: int | None = Field(
        default=None, description="The spec generation this condition was computed for."
    )
