"""Golden files for the pure builders' tests, and the minimal RunnerScaleSet spec they start
from (tests/unit/golden/; `UPDATE_GOLDEN=1` accepts a new rendering)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from runnerfleet.models.runner_scale_set import RunnerScaleSetSpec

GOLDEN = Path(__file__).parents[1] / "unit" / "golden"


def golden(name: str, value: Any) -> None:
    """Assert `value` renders as golden file `name` (or write it with UPDATE_GOLDEN=1)."""
    path = GOLDEN / name
    text = json.dumps(value, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.read_text() == text, f"{path} differs; UPDATE_GOLDEN=1 to accept"


def runner_spec(**overrides: Any) -> RunnerScaleSetSpec:
    """A RunnerScaleSet spec with only the required fields, plus `overrides` (camelCase)."""
    body = {
        "github": {"configUrl": "https://github.com/acme", "secretRef": {"name": "gh"}},
        "labels": ["self-hosted", "linux"],
        **overrides,
    }
    return RunnerScaleSetSpec.model_validate(body)
