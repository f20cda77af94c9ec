"""Status fold (pure): never writes the listener's demand; conditions keep transition times."""

from __future__ import annotations

from runnerfleet.planning.runners import Limits, Memory, plan
from runnerfleet.planning.status import Problem, RoundOutcome, build_status

LIMITS = Limits(min_runners=2, max_runners=5)


def _conditions(status: dict[str, object]) -> dict[str, dict[str, str]]:
    return {c["type"]: c for c in status["conditions"]}  # type: ignore[attr-defined,index]


def test_status_never_contains_demand() -> None:
    previous = {"demand": {"assignedJobs": 3, "sequence": 9, "observedAt": "x"}}
    status = build_status(RoundOutcome(plan([], LIMITS, None, Memory(), 0.0)), previous, 1, 0.0)
    assert "demand" not in status
    none = build_status(RoundOutcome(None, [Problem("ConfigValid", "Bad", "m")]), previous, 1, 0.0)
    assert "demand" not in none


def test_condition_transition_time_only_moves_on_change() -> None:
    settled = Limits(min_runners=0, max_runners=5)  # nothing desired, so Ready is True
    ok = build_status(RoundOutcome(plan([], settled, None, Memory(), 0.0)), {}, 1, 100.0)
    again = build_status(RoundOutcome(plan([], settled, None, Memory(), 0.0)), ok, 1, 200.0)
    assert _conditions(again)["Ready"]["status"] == "True"
    assert _conditions(again)["Ready"]["lastTransitionTime"] == "1970-01-01T00:01:40Z"
    broken = build_status(
        RoundOutcome(None, [Problem("GitHubReachable", "RateLimited", "until later")]),
        again,
        2,
        300.0,
    )
    ready = _conditions(broken)["Ready"]
    assert ready["status"] == "False"
    assert ready["reason"] == "RateLimited"
    assert ready["lastTransitionTime"] == "1970-01-01T00:05:00Z"
    assert _conditions(broken)["GitHubReachable"]["message"] == "until later"
    assert broken["observedGeneration"] == 2


def test_counts_come_from_the_plan() -> None:
    decided = plan([], LIMITS, None, Memory(), 0.0)
    status = build_status(RoundOutcome(decided, scaled=True), {}, 1, 0.0)
    assert (status["desired"], status["idle"], status["busy"], status["pending"]) == (2, 0, 0, 0)
    assert status["lastScaleTime"] == "1970-01-01T00:00:00Z"


def test_every_status_key_written_is_in_the_crd_schema() -> None:
    """The apiserver prunes unknown status fields: anything the fold writes must be declared."""
    from runnerfleet.builders.crds import RUNNER_SCALE_SET, build_crd
    from runnerfleet.planning.runners import ObservedRunner

    schema = build_crd(RUNNER_SCALE_SET)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    declared = set(schema["properties"]["status"]["properties"])
    failed = ObservedRunner("r", 0.0, has_secret=True, pod_phase="Failed", pod_reason="OOMKilled")
    decided = plan([failed], LIMITS, None, Memory(scale_down_pending_since=1.0), 10.0)
    status = build_status(RoundOutcome(decided, scaled=True), {}, 1, 10.0)
    assert set(status) <= declared, set(status) - declared
