"""The audit planner (pure): a round's plan becomes a bounded handful of Events with counts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from runnerfleet.planning import audit
from runnerfleet.planning.audit import NAMED_PER_ROUND, AuditEvent, round_events
from runnerfleet.planning.runners import (
    CreateRunners,
    Limits,
    Memory,
    ObservedRegistration,
    Plan,
    RemoveRunner,
    State,
    plan,
)
from tests.unit.test_planner import NOW, demand, runner

pytestmark = pytest.mark.unit

LIMITS = Limits(min_runners=0, max_runners=50, scale_down_delay=0.0, registration_timeout=60.0)


def _plan(actions: list[object], failures: list[tuple[str, str]] | None = None) -> Plan:
    counts = dict.fromkeys(State, 0)
    counts[State.BUSY], counts[State.IDLE] = 2, 1
    return Plan(actions, 5, counts, Memory(), failures or [])  # type: ignore[arg-type]


def _remove(name: str, reason: str) -> RemoveRunner:
    return RemoveRunner(name, reason, 1, require_idle=False)


def test_scale_up_is_one_normal_event_with_the_counts() -> None:
    p = plan([runner("a", "busy"), runner("b", "busy")], LIMITS, demand(5), Memory(), NOW)
    assert p.actions[0] == CreateRunners(3)
    [event] = round_events(p)
    assert event == AuditEvent(
        "Normal", "ScaledUp", "creating 3 runners (desired 5, busy 2, idle 0, pending 0)"
    )


def test_scale_down_is_one_event_for_many_runners() -> None:
    idle = [runner(f"r{i}", "idle", reg_id=i) for i in range(8)]
    p = plan(idle, LIMITS, demand(1), Memory(scale_down_pending_since=NOW - 60), NOW)
    assert sum(isinstance(a, RemoveRunner) for a in p.actions) == 7
    [event] = round_events(p)
    assert event.type == "Normal"
    assert event.reason == "ScaledDown"
    assert event.message == "removing 7 runners (desired 1, busy 0, idle 8, pending 0)"


def test_replacing_finished_runners_is_routine_and_posts_nothing() -> None:
    """One-job runners: each finished one is removed and a new one made, every job."""
    runners = [runner("done1", "succeeded"), runner("done2", "succeeded"), runner("c", "idle")]
    p = plan(runners, replace(LIMITS, min_runners=3), None, Memory(), NOW)
    assert CreateRunners(2) in p.actions
    assert round_events(p) == []


def test_growth_beyond_replacements_says_how_many_replace() -> None:
    p = _plan([CreateRunners(4), _remove("old", "JobCompleted")])
    [event] = round_events(p)
    assert event.reason == "ScaledUp"
    assert event.message.endswith("; 1 of them replace removed runners")


def test_replaced_runner_is_named_with_why() -> None:
    p = _plan([CreateRunners(1), _remove("linux-abc", "MaxRunnerAge")])
    assert round_events(p) == [
        AuditEvent(
            "Normal",
            "RunnerReplaced",
            "runner linux-abc replaced: MaxRunnerAge: idle longer than spec.maxRunnerAge",
        )
    ]


@pytest.mark.parametrize("reason", ["Outdated", "MaxJobDuration", "JobFinished", "RunnerLost"])
def test_lifecycle_reasons_have_words(reason: str) -> None:
    [event] = round_events(_plan([_remove("x", reason)]))
    assert event.message == f"runner x replaced: {reason}: {audit.WHY[reason]}"


def test_unknown_reason_is_shown_as_it_is() -> None:
    [event] = round_events(_plan([_remove("x", "SomethingNew")]))
    assert event.message == "runner x replaced: SomethingNew"


def test_failed_runner_is_one_warning_not_also_a_replacement() -> None:
    p = _plan([_remove("x", "RegistrationTimeout")], failures=[("x", "RegistrationTimeout")])
    assert round_events(p) == [
        AuditEvent("Warning", "RunnerFailed", "runner x: RegistrationTimeout")
    ]


def test_a_job_ended_at_max_job_duration_is_one_warning_saying_how_long() -> None:
    p = replace(_plan([_remove("h", "MaxJobDuration")]), reaped=[("h", "busy for 90s")])
    assert round_events(p) == [AuditEvent("Warning", "MaxJobDuration", "runner h: busy for 90s")]


def test_named_events_are_bounded_per_round_then_summed_up() -> None:
    removals = [_remove(f"r{i}", "Outdated" if i % 2 else "MaxRunnerAge") for i in range(12)]
    failures = [(f"f{i}", "OOMKilled") for i in range(9)]
    events = round_events(_plan(removals, failures))
    replaced = [e for e in events if e.reason == "RunnerReplaced"]
    failed = [e for e in events if e.reason == "RunnerFailed"]
    assert len(replaced) == len(failed) == NAMED_PER_ROUND + 1
    assert replaced[-1].message == "7 more runners replaced: 3 MaxRunnerAge, 4 Outdated"
    assert failed[-1] == AuditEvent("Warning", "RunnerFailed", "4 more runners failed: 4 OOMKilled")
    assert all(f"r{i} " in e.message for i, e in enumerate(replaced[:-1]))


def test_blocked_creations_post_no_scale_up() -> None:
    assert round_events(_plan([CreateRunners(3)]), creates_blocked=True) == []


def test_caller_steps_are_appended_and_no_plan_still_posts_them() -> None:
    step = audit.normal("RolloutStarted", "template hash abc: replacing 2 idle runners")
    assert round_events(None, extra=[step]) == [step]
    assert round_events(_plan([CreateRunners(9)]), extra=[step])[-1] == step


def test_idle_runner_lost_with_its_node_is_replaced_not_failed() -> None:
    lost = replace(
        runner("gone", "idle"),
        registration=ObservedRegistration(1, online=False, busy=False, ran=True),
    )
    p = plan([lost], replace(LIMITS, min_runners=1), None, Memory(), NOW)
    assert p.failures == []
    events = round_events(p)
    assert [e.reason for e in events] == ["RunnerReplaced"]
    assert events[0].message.startswith("runner gone replaced: RunnerLost")


async def test_the_round_posts_its_steps_after_the_plans_events() -> None:
    """What `_post_events` writes for an outcome: the plan's Events, then the round's own
    steps (e.g. a rollout's), through the gateway's `event`."""
    from typing import Any, cast

    from runnerfleet.planning.status import RoundOutcome
    from runnerfleet.services.scale_set import ScaleSet, _post_events

    posted: list[tuple[str, str, str]] = []

    class Kube:
        async def event(self, involved: Any, kind: str, reason: str, message: str) -> None:
            posted.append((kind, reason, message))

    step = audit.normal("RolloutStep", "2 idle runners replaced with template abc")
    body = {"metadata": {"name": "linux", "namespace": "ns", "uid": "u"}, "status": {}}
    outcome = RoundOutcome(_plan([CreateRunners(9)]), audit=(step,))
    await _post_events(cast(Any, Kube()), ScaleSet(body), outcome)
    assert [p[1] for p in posted] == ["ScaledUp", "RolloutStep"]
    assert posted[-1] == ("Normal", "RolloutStep", "2 idle runners replaced with template abc")


def test_rollout_steps_are_one_event_each() -> None:
    rolling = replace(_plan([]), updated=0, outdated=2, rolling_out=True)
    started = audit.rollout_events({"templateHash": "aaa"}, rolling, "bbb")
    assert [(e.type, e.reason) for e in started] == [("Normal", "RolloutStarted")]
    assert "aaa -> bbb" in started[0].message
    steady = {"templateHash": "bbb", "conditions": [{"type": "Ready", "reason": "RollingOut"}]}
    assert audit.rollout_events(steady, rolling, "bbb") == [], "nothing new while it rolls"
    done = replace(_plan([]), updated=2, outdated=1, rolling_out=False)
    (complete,) = audit.rollout_events(steady, done, "bbb")
    assert complete.reason == "RolloutComplete"
    assert "1 outdated busy" in complete.message
    assert audit.rollout_events({}, rolling, "bbb") == [], "a new scale set rolls nothing"


async def test_a_removal_github_refused_as_busy_posts_no_replacement() -> None:
    """The rollout chose a runner the operator had not yet seen busy; GitHub refused its
    removal (422), so it was not replaced and no Event may say so."""
    from typing import Any, cast

    from runnerfleet.planning.status import RoundOutcome
    from runnerfleet.services.scale_set import ScaleSet, _post_events

    posted: list[tuple[str, str, str]] = []

    class Kube:
        async def event(self, involved: Any, kind: str, reason: str, message: str) -> None:
            posted.append((kind, reason, message))

    body = {"metadata": {"name": "linux", "namespace": "ns", "uid": "u"}, "status": {}}
    p = _plan(
        [RemoveRunner("idle", "Outdated", 1, True), RemoveRunner("took", "Outdated", 2, True)]
    )
    await _post_events(
        cast(Any, Kube()), ScaleSet(body), RoundOutcome(p, kept_busy=frozenset({"took"}))
    )
    assert [m for _, r, m in posted if r == "RunnerReplaced"] == [
        "runner idle replaced: Outdated: its pod template is outdated (rollout)"
    ]


async def test_creations_held_back_by_any_problem_post_no_scale_up() -> None:
    """A missing ServiceAccount (PodsAdmitted), not only a node pool, holds creations back:
    the round must not say it is creating runners."""
    from typing import Any, cast

    from runnerfleet.planning.status import Problem, RoundOutcome
    from runnerfleet.services.scale_set import ScaleSet, _post_events

    posted: list[str] = []

    class Kube:
        async def event(self, involved: Any, kind: str, reason: str, message: str) -> None:
            posted.append(reason)

    body = {"metadata": {"name": "linux", "namespace": "ns", "uid": "u"}, "status": {}}
    missing = Problem("PodsAdmitted", "ServiceAccountNotFound", "spec.identity...")
    outcome = RoundOutcome(_plan([CreateRunners(3)]), [missing], creates_blocked=True)
    await _post_events(cast(Any, Kube()), ScaleSet(body), outcome)
    assert posted == ["ServiceAccountNotFound"]
