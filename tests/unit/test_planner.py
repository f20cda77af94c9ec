"""The runner planner (pure): desired counts, scale-down safety, failures, crash recovery."""

from __future__ import annotations

from dataclasses import replace

from runnerfleet.models.runner_scale_set import Demand
from runnerfleet.planning.runners import (
    CreatePod,
    CreateRunners,
    DeletePod,
    DeleteRegistration,
    Limits,
    Memory,
    ObservedRegistration,
    ObservedRunner,
    ProtectPod,
    RegisterRunner,
    RemoveRunner,
    State,
    plan,
)

NOW = 10_000.0


def demand(n: int) -> Demand:
    return Demand(assigned_jobs=n, sequence=1, observed_at="2026-11-21T00:00:00Z")


def runner(name: str, state: str, *, age: float = 10.0, reg_id: int = 1) -> ObservedRunner:
    base = ObservedRunner(name=name, created_at=NOW - age, has_secret=True, has_jit=True)
    match state:
        case "idle":
            return replace(
                base, pod_phase="Running", registration=ObservedRegistration(reg_id, True, False)
            )
        case "busy":  # steady state: the operator has already protected its pod
            return replace(
                base,
                pod_phase="Running",
                registration=ObservedRegistration(reg_id, True, True),
                protected=True,
                busy_since=NOW - age / 2,
            )
        case "pending":
            return replace(base, pod_phase="Pending")
        case "succeeded":
            return replace(base, pod_phase="Succeeded")
        case "failed":
            return replace(base, pod_phase="Failed", pod_reason="OOMKilled")
    raise AssertionError(state)


LIMITS = Limits(min_runners=3, max_runners=13, scale_down_delay=30.0, registration_timeout=60.0)


def test_min_runners_are_created_when_nothing_exists() -> None:
    p = plan([], LIMITS, None, Memory(), NOW)
    assert p.desired == 3
    assert p.actions == [CreateRunners(3)]


def test_demand_adds_to_min_but_never_above_max() -> None:
    assert plan([], LIMITS, demand(10), Memory(), NOW).actions == [CreateRunners(13)]
    capped = plan([], replace(LIMITS, max_runners=5), demand(10), Memory(), NOW)
    assert capped.desired == 5
    assert capped.actions == [CreateRunners(5)]


def test_failed_runners_do_not_count_against_max() -> None:
    runners = [runner(f"r{i}", "idle") for i in range(4)] + [runner("bad", "failed")]
    limits = replace(LIMITS, max_runners=5, keep_failed_for=600)
    p = plan(runners, limits, demand(2), Memory(), NOW)
    removal = next(a for a in p.actions if isinstance(a, RemoveRunner))
    assert removal.name == "bad"
    assert removal.keep_pod is True
    # Next round, after the backoff: the kept pod (Secret gone) no longer counts.
    kept = replace(runners[-1], has_secret=False, has_jit=False)
    later = plan([*runners[:-1], kept], limits, demand(2), p.memory, NOW + 6)
    assert later.counts[State.KEPT] == 1
    assert later.actions == [CreateRunners(1)]


def test_scale_down_waits_for_the_delay_then_removes_only_non_busy() -> None:
    runners = [runner(f"b{i}", "busy") for i in range(5)] + [
        runner(f"i{i}", "idle", age=100 + i) for i in range(3)
    ]
    first = plan(runners, LIMITS, demand(0), Memory(), NOW)
    assert first.actions == []
    assert first.memory.scale_down_pending_since == NOW

    later = plan(runners, LIMITS, demand(0), first.memory, NOW + 31)
    removed = [a for a in later.actions if isinstance(a, RemoveRunner)]
    assert sorted(a.name for a in removed) == ["i0", "i1", "i2"]
    assert all(a.require_idle for a in removed)


def test_pending_runners_go_before_idle_ones_on_scale_down() -> None:
    runners = [runner("idle", "idle"), runner("pend", "pending")]
    limits = replace(LIMITS, min_runners=1, scale_down_delay=0)
    p = plan(runners, limits, None, Memory(), NOW)
    assert [a.name for a in p.actions if isinstance(a, RemoveRunner)] == ["pend"]


def test_finished_runner_is_removed_and_replaced() -> None:
    runners = [runner("done", "succeeded"), runner("a", "idle"), runner("b", "idle")]
    p = plan(runners, LIMITS, None, Memory(), NOW)
    assert RemoveRunner("done", "JobCompleted", None, require_idle=False) in p.actions
    assert CreateRunners(1) in p.actions


def test_registration_timeout_fails_the_runner_and_backs_off() -> None:
    # GitHub showed them offline in a sweep after their deadline: that is evidence.
    offline = ObservedRegistration(1, False, False)
    started = {"pod_phase": "Running", "container_started_at": NOW - 115}
    stuck = [
        replace(runner(f"s{i}", "pending", age=120), checked_at=NOW - 1, registration=offline,
                **started)  # type: ignore[arg-type]
        for i in range(3)
    ]  # fmt: skip
    p = plan(stuck, LIMITS, None, Memory(), NOW)
    assert [r for _, r in p.failures] == ["RegistrationTimeout"] * 3
    assert p.failing
    assert p.backing_off_until == NOW + 20  # 5 s * 2^(3-1)
    assert not any(isinstance(a, CreateRunners) for a in p.actions)

    after = plan([], LIMITS, None, p.memory, NOW + 21)
    assert after.actions == [CreateRunners(3)]
    recovered = plan([runner("ok", "idle")], LIMITS, None, after.memory, NOW + 30)
    assert recovered.memory.consecutive_failures == 0


def test_past_the_deadline_without_evidence_is_unknown_not_failed() -> None:
    # GitHub has said nothing since before the deadline (no sweep yet, or it failed).
    stale = [replace(runner("s", "pending", age=120), checked_at=NOW - 100)]
    unseen = [runner("u", "pending", age=120)]
    for runners in (stale, unseen):
        p = plan(runners, LIMITS, None, Memory(), NOW)
        assert p.failures == []
        assert p.counts[State.PENDING] == 1
        assert p.wants_evidence, "the round asks the shared sweep for evidence"


def test_crash_between_steps_resumes_the_missing_step() -> None:
    registering = ObservedRunner(
        "reg", NOW - 5, has_secret=True, registration=ObservedRegistration(7, False, False)
    )
    # Read this round: GitHub has its registration, offline, so the JIT config is unused.
    starting = ObservedRunner(
        "start", NOW - 5, has_secret=True, has_jit=True, checked_at=NOW,
        registration=ObservedRegistration(8, False, False),
    )  # fmt: skip
    p = plan([registering, starting], replace(LIMITS, min_runners=2), None, Memory(), NOW)
    assert p.actions == [RegisterRunner("reg", 7), CreatePod("start")]


def test_a_vanished_pod_is_recreated_only_on_fresh_evidence() -> None:
    stale = ObservedRunner(
        "s", NOW - 50, has_secret=True, has_jit=True, checked_at=NOW - 30,
        registration=ObservedRegistration(8, False, False),
    )  # fmt: skip
    p = plan([stale], replace(LIMITS, min_runners=1), None, Memory(), NOW)
    assert p.actions == [], "a stale 'offline' may hide a spent JIT config: wait for a read"
    gone = ObservedRunner("g", NOW - 50, has_secret=True, has_jit=True, checked_at=NOW)
    p = plan([gone], replace(LIMITS, min_runners=0), None, Memory(), NOW)
    assert p.counts[State.FINISHED] == 1
    assert p.failures == []
    assert RemoveRunner("g", "RegistrationGone", None, require_idle=False, has_pod=False) in (
        p.actions
    )


def test_orphan_registrations_are_removed_unless_busy() -> None:
    orphan = ObservedRunner("o", NOW - 50, registration=ObservedRegistration(9, True, False))
    busy = ObservedRunner("b", NOW - 50, registration=ObservedRegistration(10, True, True))
    young = ObservedRunner("y", NOW - 5, registration=ObservedRegistration(11, False, False))
    p = plan([orphan, busy, young], replace(LIMITS, min_runners=0), None, Memory(), NOW)
    assert DeleteRegistration("o", 9, "OrphanRegistration") in p.actions
    assert not any(getattr(a, "name", "") == "b" for a in p.actions)
    # First seen moments ago: its Secret may simply not be in this round's read yet.
    assert not any(getattr(a, "name", "") == "y" for a in p.actions)


def test_a_registration_made_here_is_removed_without_the_orphan_grace() -> None:
    """Reliability #16: a busy runner's pod was deleted moments after it registered; its pod
    and Secret are gone. This process registered it after writing its Secret, so there is no
    Secret still to appear: once GitHub says it is not busy, it goes at once."""
    lost = ObservedRunner("l", NOW - 5, registration=ObservedRegistration(12, False, False),
                          registered_here=True)  # fmt: skip
    still_busy = ObservedRunner("s", NOW - 5, registration=ObservedRegistration(13, True, True),
                                registered_here=True)  # fmt: skip
    p = plan([lost, still_busy], replace(LIMITS, min_runners=0), None, Memory(), NOW)
    assert DeleteRegistration("l", 12, "OrphanRegistration") in p.actions
    assert not any(getattr(a, "name", "") == "s" for a in p.actions)


def test_kept_failed_pod_is_deleted_after_keep_period() -> None:
    kept = ObservedRunner("k", NOW - 1000, pod_phase="Failed", pod_finished_at=NOW - 700)
    p = plan([kept], replace(LIMITS, min_runners=0, keep_failed_for=600), None, Memory(), NOW)
    assert p.counts[State.KEPT] == 1
    assert p.actions == [DeletePod("k", "FailedRunnerExpired")]


def test_suspend_creates_nothing_and_keeps_busy_runners() -> None:
    runners = [runner("b", "busy"), runner("i", "idle")]
    p = plan(runners, replace(LIMITS, suspend=True, scale_down_delay=0), demand(5), Memory(), NOW)
    assert p.desired == 0
    assert [a.name for a in p.actions if isinstance(a, RemoveRunner)] == ["i"]


def test_idle_runner_past_max_age_is_replaced() -> None:
    old = runner("old", "idle", age=90_000)
    p = plan([old], replace(LIMITS, min_runners=1), None, Memory(), NOW)
    assert RemoveRunner("old", "MaxRunnerAge", 1, require_idle=True) in p.actions
    assert CreateRunners(1) in p.actions


def test_runner_whose_pod_vanished_after_registering_is_replaced_not_restarted() -> None:
    lost = replace(runner("lost", "busy"), pod_phase=None)
    p = plan([lost], replace(LIMITS, min_runners=1), None, Memory(), NOW)
    assert p.failures == [("lost", "PodLost")]
    removal = next(a for a in p.actions if isinstance(a, RemoveRunner))
    assert (removal.name, removal.has_pod, removal.require_idle) == ("lost", False, False)
    assert not any(isinstance(a, CreatePod) for a in p.actions)


def test_busy_runners_pods_are_protected_from_disruption_and_idle_ones_released() -> None:
    """karpenter.sh/do-not-disrupt follows the runner: set once it is busy, cleared when it
    is idle (so Karpenter may consolidate idle capacity), never touched otherwise."""
    started = replace(runner("b", "busy"), protected=False, busy_since=None)
    released = replace(runner("i", "idle"), protected=True)
    steady = [runner("b2", "busy"), runner("i2", "idle"), runner("p", "pending")]
    p = plan([started, released, *steady], replace(LIMITS, min_runners=5), None, Memory(), NOW)
    protects = [a for a in p.actions if isinstance(a, ProtectPod)]
    assert protects == [
        ProtectPod("b", protect=True, busy_since=NOW),
        ProtectPod("i", protect=False),
    ]


def test_idle_runner_evicted_is_replaced_without_counting_as_a_failure() -> None:
    """Karpenter consolidating idle capacity must not put the scale set into backoff."""
    evicted = replace(runner("e", "idle"), pod_phase="Failed", pod_reason="Deleted")
    gone = replace(runner("g", "idle"), pod_phase=None)  # pod already removed: PodLost
    busy_lost = replace(runner("b", "busy"), pod_phase=None)
    p = plan([evicted, gone], replace(LIMITS, min_runners=2), None, Memory(), NOW)
    assert p.failures == []
    assert p.memory.consecutive_failures == 0
    assert CreateRunners(2) in p.actions
    lost = plan([busy_lost], replace(LIMITS, min_runners=1), None, Memory(), NOW)
    assert lost.failures == [("b", "PodLost")]


def test_a_registered_runner_whose_pod_is_being_deleted_is_lost_like_one_already_gone() -> None:
    """Same reason whether the pod is still terminating or already removed (no race)."""
    deleting = replace(runner("b", "busy"), pod_phase="Failed", pod_reason="Deleted")
    gone = replace(runner("b", "busy"), pod_phase=None)
    assert plan([deleting], LIMITS, None, Memory(), NOW).failures == [("b", "PodLost")]
    assert plan([gone], LIMITS, None, Memory(), NOW).failures == [("b", "PodLost")]


def test_short_jobs_that_end_before_the_listener_saw_them_start_make_no_spares() -> None:
    """Four jobs reported, none listed busy yet; three runners have already finished theirs
    (jobs of 2 s). Those three are held, not replaced: one runner is still wanted."""
    reported = Demand(assigned_jobs=4, sequence=3, observed_at="1970-01-01T02:46:30Z")  # 9990
    done = [replace(runner(f"r{i}", "succeeded"), pod_finished_at=NOW - 3 + i) for i in range(3)]
    working = runner("r3", "busy")
    p = plan([*done, working], replace(LIMITS, min_runners=0), reported, Memory(), NOW)
    assert p.desired == 1
    assert not [a for a in p.actions if isinstance(a, (CreateRunners, RemoveRunner))]


def test_a_job_that_ends_before_the_listener_reports_it_starts_no_spare_runner() -> None:
    """The last report listed the runner busy and it has finished since: its job is still
    counted there, so it is subtracted (and its pod kept) until the listener reports again
    (or 30 s pass)."""
    reported = Demand(
        assigned_jobs=1, sequence=1, observed_at="1970-01-01T02:46:30Z", busy_runners=["r-done"]
    )  # 9990
    done = replace(runner("r-done", "succeeded"), pod_finished_at=NOW - 2)
    limits = replace(LIMITS, min_runners=0)
    p = plan([done], limits, reported, Memory(), NOW)
    assert p.desired == 0
    assert p.actions == [], "no spare runner, and the finished pod waits for the report"
    # The listener has reported since: the pod is cleaned up, nothing is subtracted.
    later = reported.model_copy(update={"assigned_jobs": 0, "observed_at": "1970-01-01T02:46:39Z"})
    p = plan([done], limits, later, Memory(), NOW)
    assert [type(a) for a in p.actions] == [RemoveRunner]
    # A runner the report did not list busy (its job ended before the listener saw it start)
    # is held too, up to the report's jobs no listed runner accounts for.
    unlisted = reported.model_copy(update={"busy_runners": []})
    p = plan([done], limits, unlisted, Memory(), NOW)
    assert (p.desired, p.actions) == (0, [])
    # Beyond those, it is not: the report may not count its job (1 job, 1 listed elsewhere).
    other = reported.model_copy(update={"busy_runners": ["r-other"]})
    busy = runner("r-other", "busy")
    assert [type(a) for a in plan([done, busy], limits, other, Memory(), NOW).actions] == [
        RemoveRunner
    ]  # fmt: skip
    # No report for 30 s (listener down): cleaned up anyway, demand taken as reported.
    p = plan([done], limits, reported, Memory(), NOW + 40)
    assert RemoveRunner in [type(a) for a in p.actions]
    assert p.desired == 1
