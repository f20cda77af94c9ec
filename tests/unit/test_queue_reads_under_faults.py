"""The REST queue reads hold up when GitHub is slow and flaky (issue 12, scenario 3): a page
that fails transiently (5xx, reset, timeout) is retried, never anything else; and a busy
repository's runs are read several at a time, not one after another. Gateway against the fake
GitHub over loopback (faults from sim/faults.py); the listener with a stub gateway."""

from __future__ import annotations

import asyncio
import time

import pytest

from runnerfleet.gateways import github as gateway
from runnerfleet.gateways.github import GitHubGateway, GitHubUnavailableError, QueuedJob
from runnerfleet.models.github import GitHubCredentials, parse_config_url
from runnerfleet.services import listener as listener_module
from runnerfleet.sim.github import FakeGitHub
from tests.unit.test_listener_demand import StubKube
from tests.unit.test_listener_poll import LABELS, StubGitHub, _listener, _org

RUNS = "repos/actions/runs"


def _gateway(fake: FakeGitHub, on_request: object = None) -> GitHubGateway:
    return GitHubGateway(
        parse_config_url(f"{fake.url}/acme"), GitHubCredentials(token=fake.add_token()),
        on_request=on_request,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["502", "reset"])
async def test_a_transient_page_failure_is_retried(fake: FakeGitHub, kind: str) -> None:
    jobs = [fake.enqueue_job("acme/app", ["linux"], 60.0) for _ in range(3)]
    fake.faults.error_rate, fake.faults.error_kinds = 1.0, (kind,)
    seen: list[int] = []

    def on_request(endpoint: str, status: int) -> None:
        seen.append(status)
        fake.faults.error_rate = 0.0  # GitHub recovers after one failed attempt

    gh = _gateway(fake, on_request)
    try:
        assert await gh.active_run_ids("acme", "app") == sorted(j.run_id for j in jobs)
    finally:
        await gh.close()
    assert seen[0] == (502 if kind == "502" else 0)
    assert seen[1:] == [200, 200]  # the queued list retried once, then the in_progress list


async def test_a_page_failing_every_attempt_gives_up(fake: FakeGitHub) -> None:
    fake.faults.error_rate, fake.faults.error_kinds = 1.0, ("503",)
    gh = _gateway(fake)
    try:
        with pytest.raises(GitHubUnavailableError):
            await gh.active_run_ids("acme", "app")
    finally:
        await gh.close()
    assert gh.requests == {(RUNS, 503): gateway.QUEUE_ATTEMPTS}


async def test_refusals_are_not_retried(fake: FakeGitHub) -> None:
    fake.exhaust_rate_limit(60)
    gh = _gateway(fake)
    try:
        with pytest.raises(gateway.RateLimitedError):
            await gh.active_run_ids("acme", "app")
    finally:
        await gh.close()
    assert gh.requests == {(RUNS, 403): 1}


class SlowGitHub(StubGitHub):
    """Each run's jobs take `latency` seconds to read; counts reads in flight."""

    latency: float = 0.1
    in_flight: int = 0
    most: int = 0

    async def run_jobs(self, owner: str, repo: str, run_id: int) -> list[QueuedJob]:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(self.latency)  # GitHub's latency, simulated
            return await super().run_jobs(owner, repo, run_id)
        finally:
            self.in_flight -= 1


async def test_a_busy_repositorys_runs_are_read_several_at_a_time() -> None:
    runs = 20
    gh = SlowGitHub(_org(1), {"acme/r0000": [
        QueuedJob(i, i, LABELS, "queued", None, None) for i in range(1, runs + 1)
    ]})  # fmt: skip
    listener = _listener(gh, StubKube([]), [1000.0])
    started = time.monotonic()
    await listener.poll()
    took = time.monotonic() - started
    assert gh.most == listener_module.RUN_CONCURRENCY
    assert took < runs * gh.latency / 2, f"{runs} runs read in {took:.2f} s: one at a time?"
    assert sorted(listener.table.jobs) == list(range(1, runs + 1))
