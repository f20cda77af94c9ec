"""The Actions service client waits out a 429 (issue 12, scenario 3; reliability item 21):
the Retry-After is remembered and no request is sent before it passes; every call in the
meantime fails at once with RateLimitedError (reset time included), and calls resume after.
Against the fake GitHub's Actions service over loopback (throttled by sim/faults.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from runnerfleet.gateways.actions_service import ActionsServiceClient, _retry_after
from runnerfleet.gateways.github import GitHubGateway, RateLimitedError
from runnerfleet.models.github import GitHubCredentials, parse_config_url
from runnerfleet.sim.github import FakeGitHub


class Clock:
    """Real time plus an offset the test moves forward (shared by the fake and the client)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@asynccontextmanager
async def throttled_service(clock: Clock) -> AsyncIterator[tuple[FakeGitHub, ActionsServiceClient]]:
    fake = FakeGitHub(clock=clock)
    fake.faults.clock = clock
    fake.orgs.add("acme")
    await fake.start()
    url = f"{fake.url}/acme"
    gh = GitHubGateway(parse_config_url(url), GitHubCredentials(token=fake.add_token()))
    client = ActionsServiceClient(url, gh.registration_token, backoff=0.01, clock=clock)
    try:
        yield fake, client
    finally:
        await client.close()
        await gh.close()
        await fake.stop()


async def test_a_429_is_waited_out_without_sending_anything() -> None:
    clock = Clock()
    async with throttled_service(clock) as (fake, client):
        await client.runner_group_id("Default")  # registered: the admin token is in hand
        fake.faults.throttle_actions(120)
        with pytest.raises(RateLimitedError) as refused:
            await client.get_scale_set(1, "team-a")
        assert abs(refused.value.reset_at - (clock() + 120)) < 2
        assert client.requests[("GET runnerscalesets", 429)] == 1, "not retried"
        sent = sum(fake.actions.requests.values())
        for _ in range(20):  # a caller retrying in a loop sends nothing while throttled
            with pytest.raises(RateLimitedError):
                await client.get_scale_set(1, "team-a")
        assert sum(fake.actions.requests.values()) == sent
        clock.offset += 121
        assert await client.get_scale_set(1, "team-a") is None  # calls resume after it


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = 1_800_000_000.0
    assert _retry_after("30", now) == 30.0
    assert _retry_after("Thu, 01 Jan 1970 00:01:00 GMT", 30.0) == 30.0
    assert _retry_after("soon", now) is None
    assert _retry_after(None, now) is None
