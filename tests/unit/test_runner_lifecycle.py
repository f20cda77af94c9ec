"""Runner lifecycle (issue 13): rollouts by template hash, maxJobDuration, jobs over while
their pods run, and the registration timeout counted from the runner container's start.

Pure: the planner, the observer and the builders, no cluster."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from runnerfleet import conventions as c
from runnerfleet.builders.runner import ScaleSetIdentity, build_runner_pod, runner_template_hash
from runnerfleet.models.runner_scale_set import Demand, RunnerScaleSetSpec
from runnerfleet.planning.observe import observe
from runnerfleet.planning.runners import (
    CreateRunners,
    Limits,
    Memory,
    ObservedRegistration,
    ObservedRunner,
    Plan,
    ProtectPod,
    RemoveRunner,
    State,
    plan,
)
from runnerfleet.planning.status import RoundOutcome, build_status

NOW = 50_000.0
OLD, NEW = "oldhash001", "newhash002"
OWNER = ScaleSetIdentity("linux", "team-a", "uid-1", "team-a")


def demand(n: int) -> Demand:
    return Demand(assigned_jobs=n, sequence=1, observed_at="2026-12-01T00:00:00Z")


def runner(name: str, state: str, template: str = OLD, age: float = 60.0) -> ObservedRunner:
    base = ObservedRunner(
        name=name, created_at=NOW - age, has_secret=True, has_jit=True, pod_phase="Running",
        template_hash=template, container_started_at=NOW - age + 1, checked_at=NOW - 1,
    )  # fmt: skip
    match state:
        case "idle":
            return replace(base, registration=ObservedRegistration(1, True, False))
        case "busy":
            return replace(
                base, registration=ObservedRegistration(1, True, True, ran=True),
                protected=True, busy_since=NOW - age / 2,
            )  # fmt: skip
        case "pending":
            return replace(base, registration=ObservedRegistration(1, False, False))
    raise AssertionError(state)


def limits(max_runners: int = 10, min_runners: int = 2, **kw: object) -> Limits:
    return Limits(min_runners=min_runners, max_runners=max_runners, template_hash=NEW, **kw)  # type: ignore[arg-type]


def removals(p: Plan, reason: str) -> list[str]:
    return sorted(a.name for a in p.actions if isinstance(a, RemoveRunner) and a.reason == reason)


def created(p: Plan) -> int:
    return sum(a.count for a in p.actions if isinstance(a, CreateRunners))


# ----------------------------------------------------------------------------- rollout
def test_a_template_change_surges_new_runners_then_retires_the_outdated_idle_ones() -> None:
    """3 busy + 2 idle on the old template, room under maxRunners: 2 new runners first,
    the old idle ones only once new ones are idle; the busy ones are never touched."""
    busy = [runner(f"b{i}", "busy") for i in range(3)]
    idle = [runner(f"i{i}", "idle") for i in range(2)]
    first = plan([*busy, *idle], limits(), demand(3), Memory(), NOW)
    assert first.desired == 5
    assert created(first) == 2
    assert removals(first, "Outdated") == []
    assert (first.updated, first.outdated, first.rolling_out) == (0, 5, True)

    starting = [runner(f"n{i}", "pending", NEW, age=5) for i in range(2)]
    second = plan([*busy, *idle, *starting], limits(), demand(3), Memory(), NOW)
    assert created(second) == 0, "no more than the surge at once"
    assert removals(second, "Outdated") == [], "old idle runners stay until new ones are idle"

    ready = [runner(f"n{i}", "idle", NEW, age=5) for i in range(2)]
    third = plan([*busy, *idle, *ready], limits(), demand(3), Memory(), NOW)
    assert removals(third, "Outdated") == ["i0", "i1"]
    assert all(a.require_idle for a in third.actions if isinstance(a, RemoveRunner))
    assert not any(isinstance(a, RemoveRunner) and a.name.startswith("b") for a in third.actions)
    assert created(third) == 0


def test_at_max_runners_the_outdated_idle_ones_are_replaced_in_place_never_above_max() -> None:
    busy = [runner(f"b{i}", "busy") for i in range(3)]
    idle = [runner(f"i{i}", "idle") for i in range(2)]
    p = plan([*busy, *idle], limits(max_runners=5), demand(3), Memory(), NOW)
    assert removals(p, "Outdated") == ["i0", "i1"]
    assert created(p) == 0, "their pods still exist this round"
    after = plan(busy, limits(max_runners=5), demand(3), Memory(), NOW)
    assert created(after) == 2


def test_outdated_pending_runners_go_before_idle_ones_and_surplus_goes_without_surge() -> None:
    runners = [runner("p0", "pending"), runner("i0", "idle"), runner("i1", "idle")]
    p = plan(runners, limits(min_runners=0), demand(0), Memory(), NOW)
    # desired 0: every outdated spare runner is surplus; nothing new is made for them.
    assert removals(p, "Outdated") == ["i0", "i1", "p0"]
    assert created(p) == 0


def test_no_rollout_without_a_template_hash() -> None:
    """The service passes no hash while new runners cannot be created (a missing node pool):
    replacing would only remove healthy runners."""
    runners = [runner("i0", "idle"), runner("i1", "idle")]
    p = plan(runners, replace(limits(), template_hash=None), None, Memory(), NOW)
    assert p.actions == []
    assert (p.updated, p.outdated, p.rolling_out) == (None, None, False)


@pytest.mark.parametrize("max_runners", [5, 6, 8, 12])
def test_a_simulated_rollout_ends_on_the_new_template_and_never_exceeds_max(
    max_runners: int,
) -> None:
    """Rounds with the actions applied: new runners start pending and are idle a round
    later; busy ones finish after 4 rounds (their jobs leave the demand); at every point
    the runners that exist are at most maxRunners, and no busy runner is removed."""
    names = itertools.count()
    world: dict[str, ObservedRunner] = {
        **{f"b{i}": runner(f"b{i}", "busy") for i in range(3)},
        **{f"i{i}": runner(f"i{i}", "idle") for i in range(2)},
    }
    for rnd in range(20):
        jobs = 3 if rnd < 4 else 0
        if rnd == 4:
            world = {k: v for k, v in world.items() if not k.startswith("b")}  # jobs done
        p = plan(list(world.values()), limits(max_runners), demand(jobs), Memory(), NOW)
        for action in p.actions:
            if isinstance(action, RemoveRunner):
                assert not world[action.name].registration.busy  # type: ignore[union-attr]
                world.pop(action.name)
        world = {k: (replace(v, registration=ObservedRegistration(1, True, False))
                     if v.registration and not v.registration.online else v)
                 for k, v in world.items()}  # fmt: skip
        assert len(world) + created(p) <= max_runners
        for _ in range(created(p)):
            name = f"n{next(names)}"
            world[name] = runner(name, "pending", NEW, age=1)
    assert all(r.template_hash == NEW for r in world.values())
    assert len(world) == 2  # minRunners, idle


# ----------------------------------------------------------------------- stuck runners
def test_a_runner_busy_past_max_job_duration_is_reaped_with_a_reason() -> None:
    hung = replace(runner("hung", "busy"), busy_since=NOW - 7_201)
    fine = replace(runner("fine", "busy"), busy_since=NOW - 7_000)
    p = plan([hung, fine], limits(max_job_duration=7_200.0), demand(2), Memory(), NOW)
    assert removals(p, "MaxJobDuration") == ["hung"]
    removal = next(a for a in p.actions if isinstance(a, RemoveRunner))
    assert removal.require_idle is False  # GitHub refusing (busy) does not keep it
    assert [name for name, _ in p.reaped] == ["hung"]
    assert "maxJobDuration" in p.reaped[0][1]
    assert p.failures == []  # a hung job is not a runner failure: no backoff


def test_a_runner_whose_job_is_over_but_whose_pod_runs_is_reaped_after_the_grace() -> None:
    over = replace(
        runner("over", "busy"), registration=ObservedRegistration(1, True, False, ran=True),
        checked_at=NOW - 1, busy_since=NOW - 100,
    )  # fmt: skip
    first = plan([over], limits(min_runners=1), None, Memory(), NOW)
    assert first.counts[State.FINISHED] == 1, "not idle capacity: its one job is spent"
    assert ProtectPod("over", protect=False, job_done_at=NOW) in first.actions
    assert created(first) == 1

    marked = replace(over, job_done_at=NOW - 120.0 + 5, protected=False)
    assert removals(plan([marked], limits(min_runners=1), None, Memory(), NOW), "JobFinished") == []
    late = replace(marked, job_done_at=NOW - 120.0 - 1)
    p = plan([late], limits(min_runners=1), None, Memory(), NOW)
    assert removals(p, "JobFinished") == ["over"]
    assert next(a for a in p.actions if isinstance(a, RemoveRunner)).require_idle


def test_a_stale_idle_read_from_before_the_busy_mark_is_not_a_job_over() -> None:
    stale = replace(
        runner("r", "busy"), registration=ObservedRegistration(1, True, False, ran=True),
        checked_at=NOW - 50, busy_since=NOW - 20,
    )  # fmt: skip
    p = plan([stale], limits(min_runners=1), None, Memory(), NOW)
    assert p.counts[State.IDLE] == 1
    assert not any(isinstance(a, ProtectPod | RemoveRunner) for a in p.actions)


def test_gone_registration_after_a_job_waits_for_the_grace_too() -> None:
    gone = replace(
        runner("g", "busy"), registration=None, absence_confirmed=True, checked_at=NOW - 1,
        registration_id=9, busy_since=NOW - 100, job_done_at=NOW - 10,
    )  # fmt: skip
    p = plan([gone], limits(min_runners=0), None, Memory(), NOW)
    assert p.counts[State.FINISHED] == 1
    assert removals(p, "JobFinished") == []


# --------------------------------------------------------------- registration timeout
def _pending(**kw: object) -> ObservedRunner:
    base = ObservedRunner(
        "w", NOW - 900, has_secret=True, has_jit=True, registration_id=3,
        registration=ObservedRegistration(3, False, False), pod_phase="Pending",
        pod_created_at=NOW - 900, checked_at=NOW - 1,
    )  # fmt: skip
    return replace(base, **kw)  # type: ignore[arg-type]


def test_a_pod_waiting_for_a_node_is_not_failed_however_long() -> None:
    p = plan([_pending()], limits(registration_timeout=300.0), None, Memory(), NOW)
    assert p.failures == []
    assert p.counts[State.PENDING] == 1


def test_the_registration_timeout_starts_when_the_runner_container_starts() -> None:
    lim = limits(registration_timeout=300.0)
    started = _pending(pod_phase="Running", container_started_at=NOW - 200)
    assert plan([started], lim, None, Memory(), NOW).failures == []
    late = _pending(pod_phase="Running", container_started_at=NOW - 301)
    assert plan([late], lim, None, Memory(), NOW).failures == [("w", "RegistrationTimeout")]


def test_a_runner_container_that_cannot_start_fails_with_the_kubelets_reason() -> None:
    lim = limits(registration_timeout=300.0)
    pulling = _pending(container_waiting="ContainerCreating")
    assert plan([pulling], lim, None, Memory(), NOW).failures == []
    bad = _pending(container_waiting="ImagePullBackOff")
    assert plan([bad], lim, None, Memory(), NOW).failures == [("w", "ImagePullBackOff")]


# ------------------------------------------------------------------------- observation
def _pod(state: dict[str, object], phase: str = "Running", **meta: object) -> dict[str, object]:
    return {
        "metadata": {"name": "linux-abc", "creationTimestamp": "2026-12-01T00:00:00Z",
                     "labels": {c.LABEL_RUNNER: "linux-abc"}, **meta},
        "status": {"phase": phase,
                   "containerStatuses": [{"name": c.RUNNER_CONTAINER, "state": state}]},
    }  # fmt: skip


def test_observe_reads_the_hash_marks_and_container_state() -> None:
    pod = _pod(
        {"running": {"startedAt": "2026-12-01T00:01:00Z"}},
        labels={c.LABEL_RUNNER: "linux-abc", c.LABEL_TEMPLATE_HASH: NEW},
        annotations={c.ANNOTATION_BUSY_SINCE: "2026-12-01T00:02:00Z",
                     c.ANNOTATION_JOB_DONE_AT: "not a time"},
    )  # fmt: skip
    (seen,) = observe("linux", "team-a", [pod], [], [], None, NOW)
    assert seen.template_hash == NEW
    assert seen.container_started_at == 1796083260.0
    assert seen.busy_since == 1796083320.0
    assert seen.job_done_at is None  # an edited, unreadable mark counts as unset


@pytest.mark.parametrize(("code", "phase"), [(0, "Succeeded"), (1, "Failed")])
def test_a_running_pod_whose_runner_container_ended_counts_as_ended(code: int, phase: str) -> None:
    """A sidecar (a docker daemon) keeps the pod Running after the runner exits."""
    ended = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                            "finishedAt": "2026-12-01T00:05:00Z"}}  # fmt: skip
    (seen,) = observe("linux", "team-a", [_pod(ended)], [], [], None, NOW)
    assert seen.pod_phase == phase


# ---------------------------------------------------------------------------- builders
def _spec(**kw: object) -> RunnerScaleSetSpec:
    base: dict[str, object] = {
        "github": {"configUrl": "https://github.com/acme", "secretRef": {"name": "gh"}},
        "labels": ["linux"],
    }
    return RunnerScaleSetSpec.model_validate({**base, **kw})


def test_the_template_hash_is_on_every_pod_and_moves_only_with_what_builds_the_runner() -> None:
    spec = _spec()
    digest = runner_template_hash(OWNER, spec)
    for name in ("linux-aaaaaaaaa", "linux-bbbbbbbbb"):
        assert build_runner_pod(OWNER, spec, name)["metadata"]["labels"][
            c.LABEL_TEMPLATE_HASH
        ] == digest  # fmt: skip
    image = {"spec": {"containers": [{"name": "runner", "image": "example/runner:2"}]}}
    assert runner_template_hash(OWNER, _spec(template=image)) != digest
    assert runner_template_hash(OWNER, _spec(maxRunners=50)) == digest
    # Labels are the scale set's on the scale-set protocol, each runner's own on REST.
    assert runner_template_hash(OWNER, _spec(labels=["linux", "x64"])) == digest
    rest = {"configUrl": "https://github.com/acme", "secretRef": {"name": "gh"},
            "protocol": "rest"}  # fmt: skip
    assert runner_template_hash(OWNER, _spec(github=rest)) != runner_template_hash(
        OWNER, _spec(github=rest, labels=["linux", "x64"])
    )


def test_status_shows_the_rollout_and_ready_waits_for_it() -> None:
    idle = [runner(f"i{i}", "idle") for i in range(2)]
    p = plan(idle, limits(), None, Memory(), NOW)
    status = build_status(RoundOutcome(p, template_hash=NEW), {}, 3, NOW)
    assert (status["updated"], status["outdated"], status["templateHash"]) == (0, 2, NEW)
    ready = next(x for x in status["conditions"] if x["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RollingOut")
    # Outdated runners still busy do not hold Ready: they never take another job.
    done = [runner(f"n{i}", "idle", NEW) for i in range(2)] + [runner("b", "busy")]
    settled = plan(done, limits(), demand(1), Memory(), NOW)
    status = build_status(RoundOutcome(settled, template_hash=NEW), {}, 3, NOW)
    assert (status["updated"], status["outdated"]) == (2, 1)
    assert next(x for x in status["conditions"] if x["type"] == "Ready")["status"] == "True"
