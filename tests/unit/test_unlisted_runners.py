"""REST: a live runner that a sweep begun long after its pod existed did not list is read
directly (issue 12). A 404 is a removal our crash interrupted: the planner may replace it at
once. A registration that is there (a page skipped it) goes back into the book. Against the
fake GitHub over loopback HTTP."""

from __future__ import annotations

import datetime as dt
from typing import Any

from runnerfleet import conventions as c
from runnerfleet.gateways.github import GitHubGateway
from runnerfleet.models.github import GitHubCredentials, parse_config_url
from runnerfleet.planning.observe import observe
from runnerfleet.services.registrations import RegistrationBook, SweepSettings
from runnerfleet.services.scale_set import _probe_vanished, unlisted_runners
from runnerfleet.sim.github import FakeGitHub

NS, SET = "team-a", "linux"
NOW = 1_000_000.0


def _gateway(fake: FakeGitHub) -> GitHubGateway:
    token = fake.add_token()
    return GitHubGateway(parse_config_url(f"{fake.url}/acme"), GitHubCredentials(token=token))


def _name(i: int) -> str:
    return c.runner_name(SET, NS, i)


def _pod(name: str, age: float) -> dict[str, Any]:
    born = dt.datetime.fromtimestamp(NOW - age, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"name": name, "labels": {c.LABEL_RUNNER: name},
                         "creationTimestamp": born},
            "status": {"phase": "Running"}}  # fmt: skip


def _secret(name: str, runner_id: int, age: float) -> dict[str, Any]:
    pod = _pod(name, age)
    return {"metadata": {"name": name, "creationTimestamp": pod["metadata"]["creationTimestamp"],
                         "annotations": {c.ANNOTATION_RUNNER_ID: str(runner_id)}},
            "dataKeys": [c.SECRET_KEY_JITCONFIG]}  # fmt: skip


async def test_unlisted_live_runners_are_read_once_the_grace_has_passed(fake: FakeGitHub) -> None:
    gh = GitHubGateway(
        parse_config_url(f"{fake.url}/acme"), GitHubCredentials(token=fake.add_token())
    )
    book = RegistrationBook(gh, SweepSettings(), clock=lambda: NOW)
    listed, _ = await gh.create_jit_runner(_name(1), ["linux"], 1)
    removed, _ = await gh.create_jit_runner(_name(2), ["linux"], 1)
    young, _ = await gh.create_jit_runner(_name(4), ["linux"], 1)
    await gh.delete_runner(removed.id, removed.name)  # the removal a crash interrupted
    await book.sweep()  # at NOW: lists 1 and 4, not 2 (deleted) nor 3 (not there yet)
    skipped, _ = await gh.create_jit_runner(_name(3), ["linux"], 1)  # as if a page skipped it
    ages = {listed: 120.0, removed: 120.0, skipped: 120.0, young: 10.0}
    pods = [_pod(r.name, age) for r, age in ages.items()]
    secrets_ = [_secret(r.name, r.id, age) for r, age in ages.items()]
    ids = {r.name: r.id for r in ages}

    assert sorted(unlisted_runners(pods, ids, book)) == [
        (_name(2), removed.id),
        (_name(3), skipped.id),
    ]
    fake.reset_counters()
    await _probe_vanished(gh, book, pods, secrets_, unlisted=True)
    assert fake.counted_requests == 2, "one read each, nothing for listed or young runners"
    assert book.was_absent(_name(2))
    seen = book.seen(_name(3))
    assert seen is not None
    assert seen.registration.id == skipped.id
    assert unlisted_runners(pods, ids, book) == [], "read once, not every round"

    runners = {r.name: r for r in observe(
        SET, NS, pods, secrets_, book.runners_of(SET, NS), book.swept_at, NOW,
        book.absent_of(SET, NS),
    )}  # fmt: skip
    assert runners[_name(2)].absence_confirmed, "a 404 is GitHub's word, not a paging gap"
    assert runners[_name(3)].registration is not None


async def test_the_protocol_path_does_not_read_unlisted_runners(fake: FakeGitHub) -> None:
    """Its sweeps read each runner by id already: unlisted=False costs nothing more."""
    gh = GitHubGateway(
        parse_config_url(f"{fake.url}/acme"), GitHubCredentials(token=fake.add_token())
    )
    book = RegistrationBook(gh, SweepSettings(), clock=lambda: NOW)
    await book.sweep()
    gone, _ = await gh.create_jit_runner(_name(1), ["linux"], 1)
    fake.reset_counters()
    await _probe_vanished(gh, book, [_pod(gone.name, 120)], [_secret(gone.name, gone.id, 120)])
    assert fake.counted_requests == 0
