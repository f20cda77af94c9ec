"""The shared runner sweep and the GitHub budget, against the fake GitHub over loopback HTTP:
what a sweep costs, how our own writes show at once, how stale sweeps are merged, and how
writes are paced below GitHub's secondary limit."""

from __future__ import annotations

import httpx
import pytest

from runnerfleet import conventions as c
from runnerfleet.gateways.github import GitHubGateway, Registration
from runnerfleet.gateways.github_budget import Budget, endpoint_of
from runnerfleet.models.github import GitHubCredentials, parse_config_url
from runnerfleet.planning.observe import observe
from runnerfleet.services.registrations import RegistrationBook, SweepSettings
from runnerfleet.sim.github import FakeGitHub

NS = "team-a"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _book(fake: FakeGitHub, clock: Clock | None = None) -> tuple[GitHubGateway, RegistrationBook]:
    target = parse_config_url(f"{fake.url}/acme")
    gh = GitHubGateway(target, GitHubCredentials(token=fake.add_token()))
    return gh, RegistrationBook(gh, SweepSettings(), clock=clock or Clock())


def _name(i: int, scale_set: str = "linux") -> str:
    return c.runner_name(scale_set, NS, i)


async def test_an_idle_org_costs_nothing_after_the_first_sweep(fake: FakeGitHub) -> None:
    gh, book = _book(fake)
    for i in range(150):  # other teams' runners in the same org
        await gh.create_jit_runner(f"other-{i}", ["linux"], 1)
    await book.sweep()
    assert book.paid_pages == 2  # 150 runners, 100 a page
    counted = fake.counted_requests
    for _ in range(5):
        await book.sweep()
    assert fake.counted_requests == counted, "unchanged pages are 304s, which GitHub does not count"
    assert book.paid_pages == 2


async def test_own_writes_show_at_once_and_stale_sweeps_do_not_undo_them(fake: FakeGitHub) -> None:
    clock = Clock()
    gh, book = _book(fake, clock)
    await book.sweep()
    reg, _ = await gh.create_jit_runner(_name(1), ["linux"], 1)
    clock.now += 1
    book.note(reg)
    assert [s.registration.name for s in book.runners_of("linux", NS)] == [_name(1)]
    # A sweep that began before the registration must not drop it ...
    book._merge((), clock.now - 5)
    assert book.seen(_name(1)) is not None
    # ... and one that began before our delete must not bring it back.
    clock.now += 1
    book.forget(_name(1), reg.id)
    book._merge((reg,), clock.now - 0.5)
    assert book.seen(_name(1)) is None
    assert book.absent_of("linux", NS) == {_name(1): clock.now}


async def test_registrations_made_here_stay_marked_through_sweeps_and_reads(
    fake: FakeGitHub,
) -> None:
    """`ours` (registered by this process) lets a finished runner's registration go without
    the orphan grace: a sweep or a later read must not lose the mark, and a registration only
    seen in a list never gets it."""
    clock = Clock()
    gh, book = _book(fake, clock)
    mine, _ = await gh.create_jit_runner(_name(3), ["linux"], 1)
    _other, _ = await gh.create_jit_runner(_name(4), ["linux"], 1)
    book.note(mine, ours=True)
    clock.now += 1
    await book.sweep()
    book.note(mine)  # a direct read later (a vanished pod's probe)
    seen_mine, seen_other = book.seen(_name(3)), book.seen(_name(4))
    assert seen_mine is not None
    assert seen_mine.ours
    assert seen_other is not None
    assert not seen_other.ours
    clock.now += 1
    await book.sweep()
    again = book.seen(_name(3))
    assert again is not None
    assert again.ours


async def test_a_sweep_reports_which_runners_changed(fake: FakeGitHub) -> None:
    changed: list[set[str]] = []
    gh, book = _book(fake)
    book.on_change = changed.append
    _reg, jit = await gh.create_jit_runner(_name(2), ["linux"], 1)
    await book.sweep()
    runner = fake.runner_from_jit(jit)
    assert runner is not None
    fake.go_online(runner)
    await book.sweep()
    assert changed == [{_name(2)}, {_name(2)}]
    seen = book.seen(_name(2))
    assert seen is not None
    assert seen.registration.online
    await book.sweep()
    assert len(changed) == 2, "nothing changed: nobody is woken"


def test_absence_is_evidence_only_for_runners_older_than_the_sweep() -> None:
    secret = {
        "metadata": {
            "name": _name(3), "creationTimestamp": "2026-01-01T00:00:10Z",
            "annotations": {c.ANNOTATION_RUNNER_ID: "77"},
        },
        "dataKeys": [c.SECRET_KEY_JITCONFIG],
    }  # fmt: skip
    created = 1767225610.0  # 2026-01-01T00:00:10Z
    before = observe("linux", NS, [], [secret], [], created - 1, created + 60)
    after = observe("linux", NS, [], [secret], [], created + 1, created + 60)
    assert before[0].checked_at is None
    assert after[0].checked_at == created + 1
    assert after[0].registration_id == 77


def test_writes_are_paced_below_the_secondary_limit() -> None:
    clock = Clock()
    budget = Budget(clock=clock)
    jit = endpoint_of("POST", "/api/v3/orgs/acme/actions/runners/generate-jitconfig")
    assert jit == "POST /orgs/acme/actions/runners/generate-jitconfig"
    assert endpoint_of("DELETE", "/orgs/acme/actions/runners/12") == (
        "DELETE /orgs/acme/actions/runners/{id}"
    )
    slots = budget.writes_available(jit)
    assert slots == 160  # 800 of GitHub's 900 points a minute, 5 points a write
    delays = [budget.reserve_write(jit) for _ in range(slots + 3)]
    assert delays[:slots] == [0.0] * slots
    assert delays[slots:] == [60.0, 60.0, 60.0], "the next writes wait for the window"
    assert budget.writes_available(jit) == 0
    clock.now += 61
    assert budget.writes_available(jit) == slots - 3


def test_the_budget_follows_githubs_counter() -> None:
    clock = Clock()
    budget = Budget(clock=clock)
    assert budget.per_second() == pytest.approx(5000 / 3600)
    headers = httpx.Headers({
        "x-ratelimit-limit": "15000", "x-ratelimit-remaining": "1800",
        "x-ratelimit-reset": str(int(clock.now + 1800)),
    })  # fmt: skip
    budget.observe("GET /x", 200, headers)
    assert (budget.hourly_limit, budget.per_second()) == (15000, 1.0)
    assert not budget.exhausted()
    budget.observe("POST /y", 403, httpx.Headers({"retry-after": "30"}))
    assert budget.exhausted()
    assert budget.limited_until == clock.now + 30


def test_registration_records_are_plain() -> None:
    reg = Registration(1, _name(4), online=True, busy=False)
    assert c.runner_owner(reg.name) == ("linux", c.namespace_tag(NS))


def test_the_informer_cache_keeps_secrets_without_data_and_sees_own_writes() -> None:
    from typing import Any, cast

    from runnerfleet.gateways.informer import Informer

    changed: list[str] = []
    informer = Informer(cast(Any, None), "secrets", None, "x", lambda o: changed.append("x"))
    labels = {c.LABEL_SCALE_SET: "linux"}
    meta = {"name": "r", "namespace": NS, "labels": labels}
    informer.upsert({"metadata": meta, "data": {c.SECRET_KEY_JITCONFIG: "c2VjcmV0"}})
    assert informer.items(NS, labels)[0]["dataKeys"] == [c.SECRET_KEY_JITCONFIG]
    assert "data" not in informer.items(NS, labels)[0], "no JIT config kept in memory"
    # The gateway's answer to a write is stripped already: its key list must survive.
    informer.upsert({"metadata": meta, "dataKeys": [c.SECRET_KEY_JITCONFIG]})
    assert informer.items(NS, labels)[0]["dataKeys"] == [c.SECRET_KEY_JITCONFIG]
    assert informer.items("elsewhere", labels) == []
    informer.remove(NS, "r")
    assert informer.items(NS, labels) == []


def test_a_late_watch_event_does_not_undo_our_own_write() -> None:
    from typing import Any, cast

    from runnerfleet.gateways.informer import Informer

    informer = Informer(cast(Any, None), "secrets", None, "x")
    meta = {"name": "r", "namespace": NS, "labels": {}}
    # Our write (the JIT config stored) is cached at once, at version 12 ...
    informer.upsert({"metadata": {**meta, "resourceVersion": "12"}, "dataKeys": ["jitconfig"]})
    # ... then the watch delivers the Secret's creation (version 10), without the config.
    informer._apply("ADDED", {"metadata": {**meta, "resourceVersion": "10"}, "data": {}})
    assert informer.items(NS, {})[0]["dataKeys"] == ["jitconfig"]
    informer._apply("MODIFIED", {"metadata": {**meta, "resourceVersion": "13"}, "data": {}})
    assert informer.items(NS, {})[0]["dataKeys"] == []
    informer._apply("DELETED", {"metadata": {**meta, "resourceVersion": "14"}})
    assert informer.items(NS, {}) == []


def test_the_budget_says_when_the_next_write_fits() -> None:
    clock = Clock()
    budget = Budget(clock=clock, points_per_window=10)  # two writes a minute
    assert budget.write_free_at("POST /x") == clock.now
    budget.reserve_write("POST /x")
    clock.now += 5
    budget.reserve_write("POST /x")
    assert budget.write_free_at("POST /x") == clock.now - 5 + 60


def test_the_listeners_word_marks_a_live_runner_busy_until_github_says_more() -> None:
    from runnerfleet.planning.runners import Limits, Memory, ProtectPod, State, plan

    name = _name(5)
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
    t0 = 1767225610.0
    hinted = observe("linux", NS, [pod], [secret], [], None, t0 + 30, busy={name: t0 + 20})
    p = plan(hinted, Limits(min_runners=1, max_runners=2), None, Memory(), t0 + 30)
    assert p.counts[State.BUSY] == 1
    assert ProtectPod(name, protect=True, busy_since=t0 + 30) in p.actions, (
        "Karpenter must not disrupt it"
    )
    # A sweep that began after the listener's report is newer evidence and wins.
    later = Registration(77, name, online=True, busy=False)
    swept = type("Seen", (), {"registration": later, "at": t0 + 25, "first_at": t0 + 12,
                            "ours": False})()  # fmt: skip
    runners = observe("linux", NS, [pod], [secret], [swept], t0 + 25, t0 + 30, busy={name: t0 + 20})
    assert runners[0].registration is not None
    assert not runners[0].registration.busy


async def test_slots_wake_only_as_many_waiters_as_there_are_slots_in_order() -> None:
    import asyncio
    import time as time_
    from typing import Any, cast

    from runnerfleet.services.runtime import RegistrationQueue

    class Slots:
        available = 2

        def jit_free_at(self) -> float:
            return time_.time()

        def jit_writes_available(self) -> int:
            return self.available

    woken: list[tuple[str, str]] = []
    done = asyncio.Event()

    def wake(ns: str, name: str) -> None:
        woken.append((ns, name))
        if len(woken) == 3:
            done.set()

    slots = Slots()
    queue = RegistrationQueue(cast(Any, slots), wake)
    for name in ("a", "b", "c", "a"):  # "a" asks twice: it keeps its place
        queue.wait(NS, name)
    await asyncio.wait_for(done.wait(), 5)
    assert woken == [(NS, "a"), (NS, "b"), (NS, "c")]
    assert not queue.waiting
