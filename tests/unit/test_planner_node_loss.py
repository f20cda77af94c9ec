"""A runner whose node vanished (issue 12, scenario 4): its process is gone, GitHub failed its
job and shows it offline, while its pod stays until PodGC (40-60 s) removes it. Before the
fix the planner counted it Pending (capacity that would never come) and, once PodGC had
removed the pod, took it for a runner yet to start and made its pod again from its spent JIT
config. Pure planner tests, plus the registration book's memory that a runner ran."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

from runnerfleet import conventions as c
from runnerfleet.gateways.actions_service import Agent
from runnerfleet.gateways.github import Registration
from runnerfleet.models.base import epoch
from runnerfleet.models.runner_scale_set import Demand
from runnerfleet.planning.observe import observe
from runnerfleet.planning.runners import (
    Limits,
    Memory,
    ObservedRegistration,
    ObservedRunner,
    RemoveRunner,
    State,
    classify,
    plan,
)
from runnerfleet.services.registrations import RegistrationBook, Seen
from runnerfleet.services.scale_set_protocol import ScaleSetRegistrar

NOW = 1_767_225_700.0
LIMITS = Limits(min_runners=1, max_runners=10)


def _runner(phase: str | None, reg: ObservedRegistration) -> ObservedRunner:
    return ObservedRunner(
        name="linux-abc", created_at=NOW - 120, has_secret=True, has_jit=True,
        pod_phase=phase, registration=reg, registration_id=reg.id, checked_at=NOW - 1,
        pod_created_at=None if phase is None else NOW - 119,
    )  # fmt: skip


def test_a_runner_that_ran_and_is_offline_with_its_pod_still_there_is_lost_not_pending() -> None:
    lost = _runner("Running", ObservedRegistration(7, online=False, busy=False, ran=True))
    assert classify(lost, NOW, LIMITS) == (State.FAILED, "RunnerLost")
    p = plan([lost], LIMITS, None, Memory(), NOW)
    assert RemoveRunner("linux-abc", "RunnerLost", 7, require_idle=False) in p.actions
    assert p.counts[State.PENDING] == 0, "no capacity counted that will never come"
    assert p.memory.consecutive_failures == 0, "a vanished node is not the runner's failure"
    assert p.desired == 1


def test_a_runner_that_ran_whose_pod_podgc_removed_is_lost_not_started_again() -> None:
    gone = _runner(None, ObservedRegistration(7, online=False, busy=False, ran=True))
    assert classify(gone, NOW, LIMITS) == (State.FAILED, "PodLost")
    p = plan([gone], LIMITS, None, Memory(), NOW)
    assert RemoveRunner("linux-abc", "PodLost", 7, require_idle=False, has_pod=False) in (p.actions)


def test_a_runner_yet_to_start_is_still_pending_or_starting() -> None:
    fresh = ObservedRegistration(7, online=False, busy=False)
    assert classify(_runner("Running", fresh), NOW, LIMITS) == (State.PENDING, "")
    assert classify(_runner(None, fresh), NOW, LIMITS) == (State.STARTING, "")


def test_the_book_remembers_that_a_runner_ran_and_observe_passes_it_on() -> None:
    book = RegistrationBook(cast(Any, None), clock=lambda: NOW)
    name = c.runner_name("linux", "ns", 5)
    book.note(Registration(7, name, online=False, busy=False), ours=True)
    seen = book.seen(name)
    assert seen is not None
    assert not seen.ran
    book.note(Registration(7, name, online=True, busy=True))
    book.note(Registration(7, name, online=False, busy=False))  # GitHub failed its job
    seen = book.seen(name)
    assert seen is not None
    assert seen.ran, "once online, always ran"
    observed = observe("linux", "ns", [], [], [Seen(seen.registration, NOW, NOW, ran=True)],
                       None, NOW)  # fmt: skip
    assert observed[0].registration == ObservedRegistration(7, False, False, ran=True)


def test_a_runner_read_offline_after_the_listener_reported_it_busy_is_lost() -> None:
    """Scale-set protocol: a runner can go online, take its job and lose it between two
    reads; the listener's report (JobStarted) is then the only word that it ran. A read made
    before that word (re-listed at each sweep) does not make it lost."""
    registrar = ScaleSetRegistrar(cast(Any, None), cast(Any, None), cast(Any, None), "linux")
    name, other = c.runner_name("linux", "ns", 5), c.runner_name("linux", "ns", 6)
    registrar.track(7, name)
    registrar.track(8, other)
    registrar._seen(Agent(7, name, 1, online=False, busy=False))  # yet to start
    registrar.note_busy([name])
    assert registrar.lost() == set(), "the offline read came before it ran"
    registrar._seen(Agent(7, name, 1, online=False, busy=False))  # GitHub failed its job
    assert registrar.lost() == {name}
    offline = Registration(7, name, online=False, busy=False)
    observed = observe("linux", "ns", [], [], [Seen(offline, NOW, NOW)], None, NOW,
                       ran=registrar.lost())  # fmt: skip
    assert observed[0].registration == ObservedRegistration(7, False, False, ran=True)


def _demand(busy: list[str], at: str = "2026-01-01T00:01:40Z") -> Demand:
    body = {"assignedJobs": len(busy), "busyRunners": busy, "observedAt": at, "sequence": 1}
    return Demand.model_validate(body)


def test_a_busy_runner_the_listener_no_longer_lists_asks_github_again() -> None:
    """Its job ended; its pod did not (its node vanished): without asking, a settled scale set
    read it offline only at the next unasked sweep, up to a minute later."""
    busy = ObservedRegistration(7, online=True, busy=True, ran=True)
    runner = _runner("Running", busy)  # GitHub showed it busy at NOW - 1
    at = epoch("2026-01-01T00:01:40Z")
    assert at is not None
    later = replace(runner, checked_at=at - 1)
    asked = plan([later], LIMITS, _demand([]), Memory(), at + 1)
    assert asked.wants_evidence
    assert asked.recheck == [runner.name]
    assert not plan([later], LIMITS, _demand([runner.name]), Memory(), at + 1).wants_evidence
    fresher = replace(runner, checked_at=at + 0.5)  # GitHub said busy after the report
    assert plan([fresher], LIMITS, _demand([]), Memory(), at + 1).recheck == []


def test_a_recheck_makes_the_next_sweep_read_a_runner_seen_online_lately() -> None:
    registrar = ScaleSetRegistrar(cast(Any, None), cast(Any, None), cast(Any, None), "linux")
    name = c.runner_name("linux", "ns", 5)
    registrar.track(7, name)
    registrar._online_at[7] = registrar.clock()  # read online just now: not due for 10 min
    registrar.note_busy([name])
    registrar.recheck([name])
    assert 7 not in registrar._online_at
    registrar._seen(Agent(7, name, 1, online=False, busy=False))
    assert registrar.lost() == {name}, "still known to have run"
