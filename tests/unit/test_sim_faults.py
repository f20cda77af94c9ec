"""GitHub faults (sim/faults.py): the seeded decisions, and the fake GitHub and its Actions
service carrying them out on the wire (real aiohttp server in-process; outage and throttle
windows from a clock the test moves)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from runnerfleet.sim.actions_service import REGISTRATION_PATH
from runnerfleet.sim.faults import GitHubFaults
from runnerfleet.sim.github import API_PREFIX, FakeGitHub

TOKEN = "ghs_test"
RUNNERS = f"{API_PREFIX}/orgs/acme/actions/runners"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def clock() -> Clock:
    return Clock()


@pytest.fixture
async def fake(clock: Clock) -> AsyncIterator[FakeGitHub]:
    gh = FakeGitHub(tokens={TOKEN}, clock=clock)
    gh.faults.clock = clock
    gh.orgs.add("acme")
    await gh.start()
    try:
        yield gh
    finally:
        await gh.stop()


async def get(
    gh: FakeGitHub, path: str, patience: float = 5.0, method: str = "GET"
) -> tuple[int, Any, dict[str, str]]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=patience)) as s,
        s.request(method, gh.url + path, headers={"Authorization": f"token {TOKEN}"}) as resp,
    ):
        text = await resp.text()
        return resp.status, text, dict(resp.headers)


# ---------------------------------------------------------------------------------- decisions
def test_the_same_seed_replays_the_same_faults() -> None:
    one, two = GitHubFaults(seed=7, error_rate=0.3), GitHubFaults(seed=7, error_rate=0.3)
    first = [one.draw("rest") for _ in range(200)]
    assert first == [two.draw("rest") for _ in range(200)]
    assert first != [GitHubFaults(seed=8, error_rate=0.3).draw("rest") for _ in range(200)]


def test_the_error_share_and_every_kind_are_drawn() -> None:
    faults = GitHubFaults(seed=1, error_rate=0.05)
    drawn = [faults.draw("actions") for _ in range(20_000)]
    share = sum(1 for f in drawn if f is not None) / len(drawn)
    assert 0.04 < share < 0.06
    assert set(faults.injected) == {"500", "502", "503", "reset", "timeout"}
    assert faults.seen["actions"] == 20_000
    timeouts = {f.hold for f in drawn if f is not None and f.kind == "timeout"}
    assert timeouts == {faults.timeout_hold}
    assert {f.status for f in drawn if f is not None and f.kind == "reset"} == {0}


def test_unknown_error_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown error kinds"):
        GitHubFaults(error_kinds=("418",))


def test_an_outage_refuses_everything_until_it_ends_then_nothing(clock: Clock) -> None:
    faults = GitHubFaults(clock=clock)
    faults.outage(60)
    clock.now += 59.9
    assert faults.draw("rest") is not None
    assert faults.in_outage
    fault = faults.draw("actions")
    assert fault is not None
    assert (fault.kind, fault.status) == ("outage", 503)
    faults.outage_kind = "reset"
    assert (fault := faults.draw("rest")) is not None
    assert fault.status == 0
    clock.now += 0.2
    assert faults.draw("rest") is None
    assert faults.draw("actions") is None


def test_throttling_is_the_actions_service_429_with_retry_after(clock: Clock) -> None:
    faults = GitHubFaults(clock=clock)
    faults.throttle_actions(120)
    clock.now += 30
    fault = faults.draw("actions")
    assert fault is not None
    assert (fault.status, fault.retry_after) == (429, 90)
    assert faults.draw("rest") is None  # REST's own limit is FakeGitHub.exhaust_rate_limit
    clock.now += 90
    assert faults.draw("actions") is None


def test_latency_jitters_within_its_bounds_and_never_below_zero() -> None:
    faults = GitHubFaults(seed=3, latency=2.0, jitter=0.5)
    delays = [faults.delay() for _ in range(1000)]
    assert 1.5 <= min(delays) < 1.6
    assert 2.4 < max(delays) <= 2.5
    faults.latency, faults.jitter = 0.1, 1.0
    assert min(faults.delay() for _ in range(1000)) == 0.0


def test_pages_come_back_truncated_or_unlinked_only_for_the_chosen_lists() -> None:
    faults = GitHubFaults(seed=5, page_fault_rate=1.0, page_fault_kinds=("truncated",))
    items = list(range(30))
    served, linked = faults.page("runners", items)
    assert linked
    assert len(served) == 29
    assert set(served) < set(items)
    assert faults.page("repositories", items) == (items, True)
    faults.page_fault_kinds = ("unlinked",)
    assert faults.page("runners", items) == (items, False)
    assert faults.injected == {"page_truncated": 1, "page_unlinked": 1}
    faults.clear()
    assert faults.page("runners", items) == (items, True)


# ---------------------------------------------------------------------------------- on the wire
async def test_an_outage_answers_503_with_githubs_bodies_on_rest_and_actions(
    fake: FakeGitHub, clock: Clock
) -> None:
    fake.faults.outage(60)
    status, text, _ = await get(fake, RUNNERS)
    assert status == 503
    assert '"Service Unavailable"' in text
    status, text, _ = await get(fake, REGISTRATION_PATH, method="POST")
    assert status == 503
    assert "ServiceUnavailableException" in text
    assert fake.counted_requests == 0, "a refused request is not counted against the budget"
    clock.now += 61
    status, _, headers = await get(fake, RUNNERS)
    assert status == 200
    assert headers["X-RateLimit-Remaining"] == "4999"


async def test_a_reset_closes_the_connection_unanswered_and_counts_as_status_0(
    fake: FakeGitHub,
) -> None:
    fake.faults.error_rate, fake.faults.error_kinds = 1.0, ("reset",)
    with pytest.raises(aiohttp.ClientError):
        await get(fake, RUNNERS)
    # (aiohttp's client tries an idempotent request once more on a dropped connection)
    assert set(fake.requests) == {("GET", RUNNERS.replace("acme", "{org}"), 0)}


async def test_a_timeout_holds_the_request_past_the_clients_patience(fake: FakeGitHub) -> None:
    fake.faults.error_rate, fake.faults.error_kinds = 1.0, ("timeout",)
    fake.faults.timeout_hold = 0.5
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await get(fake, RUNNERS, patience=0.2)
    assert time.monotonic() - started < 0.45
    await asyncio.sleep(0.5)  # let the held handler finish before the server stops


async def test_the_actions_service_throttles_with_429_and_retry_after(
    fake: FakeGitHub, clock: Clock
) -> None:
    fake.faults.throttle_actions(120)
    status, text, headers = await get(fake, REGISTRATION_PATH, method="POST")
    assert (status, headers["Retry-After"]) == (429, "120")
    assert "TooManyRequestsException" in text
    status, _, _ = await get(fake, RUNNERS)
    assert status == 200, "REST is not throttled by the Actions service's window"


@pytest.mark.parametrize("kind", ["truncated", "unlinked"])
async def test_runner_list_pages_come_back_stale(fake: FakeGitHub, kind: str) -> None:
    for i in range(5):
        fake.register_runner(f"r{i}", "org/acme", ["linux"], 1)
    fake.faults.page_fault_rate, fake.faults.page_fault_kinds = 1.0, (kind,)
    status, text, headers = await get(fake, RUNNERS + "?per_page=2")
    assert status == 200
    if kind == "truncated":
        assert text.count('"name": "r') == 1
        assert 'rel="next"' in headers["Link"]
    else:
        assert text.count('"name": "r') == 2
        assert "Link" not in headers
