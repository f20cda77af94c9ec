"""A new leader's first rounds: scale sets with work to do go first (pure)."""

from __future__ import annotations

from typing import Any

from runnerfleet.services.scale_set import STARTUP_SPREAD_SECONDS, first_round_delay


def _body(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"generation": 3},
        "spec": {"minRunners": 1, "maxRunners": 5},
        "status": {"observedGeneration": 3, "desired": 3, "idle": 1, "busy": 2,
                   "demand": {"assignedJobs": 2}, **status},
    }  # fmt: skip


def test_a_settled_scale_set_starts_somewhere_in_the_spread() -> None:
    assert first_round_delay(_body(), 0.5) == STARTUP_SPREAD_SECONDS / 2
    assert first_round_delay(_body(), 0.0) == 0.0


def test_a_scale_set_with_work_to_do_starts_at_once() -> None:
    assert first_round_delay(_body(observedGeneration=2), 0.9) == 0.0, "spec changed"
    assert first_round_delay(_body(demand={"assignedJobs": 4}), 0.9) == 0.0, "more demand"
    assert first_round_delay(_body(pending=1), 0.9) == 0.0, "runners on their way"
    assert first_round_delay(_body(busy=1), 0.9) == 0.0, "a runner short"
    assert first_round_delay({"metadata": {"generation": 1}, "spec": {}}, 0.9) == 0.0, "new"
