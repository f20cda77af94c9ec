"""The planner and status fold when the operator itself crash-loops (issue 12; reliability
item 23): what our own crashes leave behind is neither capacity nor a runner failure, the
backoff never holds queued jobs for minutes, and Ready never claims runners that are not
there. Pure."""

from __future__ import annotations

from dataclasses import replace

from runnerfleet.models.runner_scale_set import Demand
from runnerfleet.planning.runners import (
    BACKOFF_MAX,
    CreateRunners,
    Limits,
    Memory,
    ObservedRegistration,
    ObservedRunner,
    RemoveRunner,
    State,
    plan,
)
from runnerfleet.planning.status import RoundOutcome, build_status

NOW = 50_000.0
LIMITS = Limits(min_runners=1, max_runners=30)  # the spec defaults: registrationTimeout 5 min


def demand(jobs: int) -> Demand:
    return Demand(assigned_jobs=jobs, sequence=1, observed_at="2026-12-01T00:00:00Z")


def ghost(name: str, age: float) -> ObservedRunner:
    """A runner whose scale-down a crash interrupted: its registration was deleted at GitHub,
    then the operator died before deleting the pod and the Secret. Its pod runs on; GitHub
    (read this round) has no registration for it."""
    return ObservedRunner(
        name, NOW - age, has_secret=True, has_jit=True, registration_id=7,
        pod_phase="Running", checked_at=NOW - 1, absence_confirmed=True,
    )  # fmt: skip


def ready(status: dict[str, object]) -> dict[str, str]:
    conditions = status["conditions"]
    assert isinstance(conditions, list)
    found: dict[str, str] = next(c for c in conditions if c["type"] == "Ready")
    return found


def test_a_runner_whose_registration_is_gone_is_not_capacity() -> None:
    """Before: Pending (active) until registrationTimeout, so no replacement for 5 minutes."""
    p = plan([ghost("g", age=40)], LIMITS, demand(2), Memory(), NOW)
    assert p.counts[State.PENDING] == 0
    assert RemoveRunner("g", "RegistrationGone", None, require_idle=False) in p.actions
    assert CreateRunners(3) in p.actions, "min 1 + 2 queued jobs, none of them the ghost"
    assert p.failures == []


def test_a_runner_our_crash_left_is_not_a_runner_failure() -> None:
    """Before: seven such runners failed together with RegistrationTimeout after 5 minutes;
    consecutiveFailures 7 put the scale set in a 5-minute backoff with jobs queued."""
    ghosts = [ghost(f"g{i}", age=310) for i in range(7)]
    p = plan(ghosts, LIMITS, demand(6), Memory(), NOW)
    assert p.failures == []
    assert p.memory.consecutive_failures == 0
    assert p.backing_off_until is None
    assert CreateRunners(7) in p.actions


def test_absence_is_trusted_only_after_the_grace() -> None:
    """A runner registered moments ago may simply not be in the registrar's sweep yet."""
    p = plan([ghost("new", age=10)], LIMITS, None, Memory(), NOW)
    assert p.counts[State.PENDING] == 1
    assert not any(isinstance(a, RemoveRunner) for a in p.actions)


def test_a_pod_created_late_gets_the_whole_registration_timeout() -> None:
    """The operator died between storing the JIT config and creating the pod; the next one
    created the pod 4 min later. The lost time was ours: the deadline counts from the pod.
    Before: RegistrationTimeout one minute after the pod existed."""
    late = ObservedRunner(
        "late", NOW - 310, has_secret=True, has_jit=True, registration_id=8,
        registration=ObservedRegistration(8, False, False), pod_phase="Running",
        pod_created_at=NOW - 70, container_started_at=NOW - 69, checked_at=NOW - 1,
    )  # fmt: skip
    p = plan([late], LIMITS, None, Memory(), NOW)
    assert p.failures == []
    assert p.counts[State.PENDING] == 1
    stuck = replace(late, pod_created_at=NOW - 305, container_started_at=NOW - 304)
    assert [r for _, r in plan([stuck], LIMITS, None, Memory(), NOW).failures] == [
        "RegistrationTimeout"
    ]


def test_backoff_never_holds_queued_jobs_for_minutes() -> None:
    """Seven failures in one round: before, the backoff jumped to its 5-minute cap."""
    memory = Memory(consecutive_failures=7, last_failure_at=NOW)
    held = plan([], LIMITS, demand(6), memory, NOW + 30)
    assert held.backing_off_until == NOW + BACKOFF_MAX
    assert BACKOFF_MAX <= 60
    assert not any(isinstance(a, CreateRunners) for a in held.actions)
    after = plan([], LIMITS, demand(6), memory, NOW + BACKOFF_MAX + 1)
    assert after.actions == [CreateRunners(7)]


def test_ready_is_never_true_with_fewer_runners_online_than_desired() -> None:
    """The issue's status: desired 7, no runner at all, and Ready True."""
    backing_off = plan(
        [], LIMITS, demand(6), Memory(consecutive_failures=7, last_failure_at=NOW), NOW
    )
    cond = ready(build_status(RoundOutcome(backing_off), {}, 1, NOW))
    assert (cond["status"], cond["reason"]) == ("False", "BackingOff")

    starting = plan([], LIMITS, demand(6), Memory(), NOW)
    assert starting.actions == [CreateRunners(7)]
    cond = ready(build_status(RoundOutcome(starting), {}, 1, NOW))
    assert (cond["status"], cond["reason"]) == ("False", "ScalingUp")


def test_ready_once_the_desired_runners_are_online() -> None:
    online = ObservedRegistration(1, True, False)
    idle = ObservedRunner("i", NOW - 60, has_secret=True, has_jit=True, pod_phase="Running",
                          registration=online, checked_at=NOW)  # fmt: skip
    p = plan([idle], LIMITS, None, Memory(), NOW)
    assert p.desired == 1
    first = build_status(RoundOutcome(p), {}, 1, NOW)
    assert (ready(first)["status"], ready(first)["reason"]) == ("True", "Reconciled")
    # A steady scale set computes the same condition: nothing to write next round.
    assert build_status(RoundOutcome(p), first, 1, NOW + 30)["conditions"] == first["conditions"]


def test_observed_from_the_cluster_and_a_sweep() -> None:
    """The same ghost as the operator sees it: its Secret and running pod, and a sweep begun
    after them that did not list its registration. The pod's creation time is observed."""
    from runnerfleet import conventions as c
    from runnerfleet.planning.observe import observe

    name = c.runner_name("linux", "team-a", 5)
    secret = {
        "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:10Z",
                     "annotations": {c.ANNOTATION_RUNNER_ID: "77"}},
        "dataKeys": [c.SECRET_KEY_JITCONFIG],
    }  # fmt: skip
    pod = {
        "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:11Z",
                     "labels": {c.LABEL_RUNNER: name}},
        "status": {"phase": "Running"},
    }  # fmt: skip
    t0 = 1767225610.0  # the Secret's creation
    runners = observe("linux", "team-a", [pod], [secret], [], t0 + 58, t0 + 60, exact_sweeps=True)
    assert runners[0].pod_created_at == t0 + 1
    p = plan(runners, LIMITS, None, Memory(), t0 + 60)
    assert p.counts[State.FINISHED] == 1
    assert RemoveRunner(name, "RegistrationGone", None, require_idle=False) in p.actions
    # REST: the org-wide list is paged by number, and runners removed while it is read shift
    # others past a page boundary. Absence from it is no reason to delete a pod that may be
    # running a job; the runner stays Pending (the registration timeout still applies).
    rest = observe("linux", "team-a", [pod], [secret], [], t0 + 58, t0 + 60)
    p = plan(rest, LIMITS, None, Memory(), t0 + 60)
    assert p.counts[State.PENDING] == 1
    assert not any(isinstance(a, RemoveRunner) for a in p.actions)
    # The same runner said 404 for (a direct read, or our own delete): gone.
    confirmed = observe(
        "linux", "team-a", [pod], [secret], [], t0 + 58, t0 + 60, absent={name: t0 + 59}
    )
    assert plan(confirmed, LIMITS, None, Memory(), t0 + 60).counts[State.FINISHED] == 1


def test_absence_need_not_be_fresh() -> None:
    """Sweeps come about as often as rounds: evidence required to be under 5 s old was missed
    round after round, and the runners left behind stayed Pending."""
    old_news = replace(ghost("g", age=100), checked_at=NOW - 20)
    p = plan([old_news], LIMITS, None, Memory(), NOW)
    assert p.counts[State.FINISHED] == 1
    assert p.counts[State.PENDING] == 0
