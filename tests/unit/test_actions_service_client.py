"""The Actions service client (runner scale-set protocol) against the fake GitHub's Actions
service over loopback HTTP (no cluster, no HTTP mocking): registration and token refreshes,
scale sets, sessions, the long-poll, both assignment flows, runners, retries, error mapping
and that no token or JIT config shows in a repr or an error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from runnerfleet.gateways.actions_service import (
    ActionsServiceClient,
    JobEvent,
    MessageBatch,
    ScaleSetNotFoundError,
    Session,
    SessionConflictError,
    SessionGoneError,
)
from runnerfleet.gateways.github import (
    GitHubAuthError,
    GitHubGateway,
    GitHubNotFoundError,
    GitHubUnavailableError,
    RunnerBusyError,
    RunnerNameTakenError,
)
from runnerfleet.models.github import GitHubCredentials, parse_config_url
from runnerfleet.sim.actions_service import REGISTRATION_PATH, ActionsServiceOptions
from runnerfleet.sim.github import FakeGitHub

REGISTER = ("POST", REGISTRATION_PATH)
LABELS = ["self-hosted", "linux"]


class Clock:
    """The fake's clock: real time plus an offset a test moves forward (token expiry)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@asynccontextmanager
async def started(clock: Clock | None = None, **options: Any) -> AsyncIterator[FakeGitHub]:
    """A fake GitHub whose Actions service long-polls for 1 s (and `options`)."""
    fake = FakeGitHub(
        clock=clock or time.time,
        actions=ActionsServiceOptions(**{"long_poll_timeout": 1.0, **options}),
    )
    fake.orgs.add("acme")
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@asynccontextmanager
async def client_for(
    fake: FakeGitHub, path: str = "acme", **kw: Any
) -> AsyncIterator[ActionsServiceClient]:
    """A client on `{fake}/path` whose registration tokens come from a GitHubGateway."""
    url = f"{fake.url}/{path}"
    gh = GitHubGateway(parse_config_url(url), GitHubCredentials(token=fake.add_token()))
    client = ActionsServiceClient(url, gh.registration_token, **{"backoff": 0.01, **kw})
    try:
        yield client
    finally:
        await client.close()
        await gh.close()


def registrations(fake: FakeGitHub) -> int:
    """How many admin tokens the fake issued (successful runner-registration calls)."""
    return fake.actions.requests[(*REGISTER, 200)]


async def next_events(
    client: ActionsServiceClient, session: Session, last: int, kinds: set[str], within: float = 10
) -> tuple[int, list[JobEvent], MessageBatch]:
    """Poll (acknowledging as it goes) until events of every kind in `kinds` have arrived."""
    events: list[JobEvent] = []
    deadline = time.monotonic() + within
    batch: MessageBatch | None = None
    while not kinds <= {e.kind for e in events}:
        assert time.monotonic() < deadline, f"no {kinds} events; got {events}"
        got = await client.get_messages(session, last, max_capacity=10)
        if got is not None:
            batch, last = got, got.message_id
            events += got.events
            await client.ack(session, got.message_id)
    assert batch is not None
    return last, events, batch


# ------------------------------------------------------------------ registration, admin token
async def test_registration_token_from_the_rest_gateway_for_each_scope() -> None:
    async with started() as fake:
        for path in ("acme", "acme/app", "enterprises/big"):
            gh = GitHubGateway(
                parse_config_url(f"{fake.url}/{path}"), GitHubCredentials(token=fake.add_token())
            )
            token, expires_at = await gh.registration_token()
            await gh.close()
            assert token
            assert 3000 < expires_at - time.time() <= 3600


async def test_admin_token_is_refreshed_when_less_than_a_minute_is_left() -> None:
    offset = 0.0
    async with started() as fake, client_for(fake, clock=lambda: time.time() + offset) as client:
        assert await client.runner_group_id("Default") == 1
        await client.get_scale_set(1, "nothing")
        assert registrations(fake) == 1, "one admin token serves many calls"
        offset = 3600 - 59  # the client now sees 59 s left on the 1 h token
        await client.get_scale_set(1, "nothing")
        assert registrations(fake) == 2
        rest = {e: n for e, n in fake.counted_by_endpoint.items() if n}
        assert rest == {"POST /api/v3/orgs/{org}/actions/runners/registration-token": 2}, (
            "only the registration tokens count against the REST limit"
        )


async def test_admin_token_lifetime_counts_from_receipt_despite_clock_skew() -> None:
    # Our clock is two hours ahead of GitHub's: by `exp` alone every token looks expired.
    async with started() as fake, client_for(fake, clock=lambda: time.time() + 7200) as client:
        for name in ("a", "b", "c"):
            await client.get_scale_set(1, name)
        assert registrations(fake) == 1


async def test_expired_admin_token_is_refreshed_once_on_401() -> None:
    # The fake's clock jumps past the token's `exp` while the client's does not: only the 401
    # tells the client.
    clock = Clock()
    async with started(clock) as fake, client_for(fake) as client:
        await client.get_scale_set(1, "nothing")
        clock.offset = 3601
        assert await client.get_scale_set(1, "nothing") is None
        assert registrations(fake) == 2
        assert client.requests[("GET runnerscalesets", 401)] == 1


async def test_concurrent_callers_share_one_admin_refresh() -> None:
    clock = Clock()
    async with started(clock) as fake, client_for(fake) as client:
        await client.get_scale_set(1, "nothing")
        clock.offset = 3601  # every caller below gets a 401 with the old token
        found = await asyncio.gather(*(client.get_scale_set(1, f"s{i}") for i in range(8)))
        assert found == [None] * 8
        assert registrations(fake) == 2, "one refresh for all of them"


async def test_registration_refused_for_unknown_org_and_bad_credentials() -> None:
    async with started() as fake:
        async with client_for(fake, "nosuchorg") as client:
            with pytest.raises(GitHubNotFoundError):
                await client.runner_group_id("Default")
        url = f"{fake.url}/acme"
        gh = GitHubGateway(parse_config_url(url), GitHubCredentials(token="ghs_not_a_token"))
        async with ActionsServiceClient(url, gh.registration_token) as client:
            with pytest.raises(GitHubAuthError) as err:
                await client.runner_group_id("Default")
        assert "ghs_not_a_token" not in str(err.value)
        await gh.close()


# ------------------------------------------------------------------ runner groups, scale sets
async def test_runner_group_lookup_is_cached() -> None:
    async with started() as fake, client_for(fake) as client:
        assert await client.runner_group_id("Default") == 1
        assert await client.runner_group_id("Default") == 1
        assert client.requests[("GET runnergroups", 200)] == 1
        with pytest.raises(GitHubNotFoundError):
            await client.runner_group_id("no-such-group")


async def test_scale_set_create_adopt_get_update_delete() -> None:
    async with started() as fake, client_for(fake) as client:
        created = await client.create_scale_set("team-a", 1, LABELS)
        assert (created.name, created.runner_group_id, created.labels) == (
            "team-a",
            1,
            tuple(LABELS),
        )
        assert created.id > 0
        adopted = await client.create_scale_set("team-a", 1, LABELS)
        assert adopted == created
        assert client.requests[("POST runnerscalesets", 409)] == 1

        assert await client.get_scale_set(1, "team-a") == created
        assert await client.get_scale_set(1, "team-b") is None
        assert await client.get_scale_set_by_id(created.id) == created

        updated = await client.update_scale_set(created.id, "team-a", 1, ["self-hosted", "gpu"])
        assert updated.labels == ("self-hosted", "gpu")
        assert await client.get_scale_set_by_id(created.id) == updated

        await client.delete_scale_set(created.id)
        assert await client.get_scale_set_by_id(created.id) is None
        await client.delete_scale_set(created.id)  # already gone: fine
        with pytest.raises(ScaleSetNotFoundError):
            await client.update_scale_set(created.id, "team-a", 1, LABELS)
        with pytest.raises(ScaleSetNotFoundError):
            await client.create_session(created.id, "listener")


# ------------------------------------------------------------------ sessions, messages
async def test_session_conflict_and_delete() -> None:
    async with started() as fake, client_for(fake) as client:
        scale_set = await client.create_scale_set("team-a", 1, LABELS)
        session = await client.create_session(scale_set.id, "listener-0")
        assert session.session_id
        assert session.queue_url
        assert session.statistics.assigned == 0
        assert session.queue_token not in repr(session)
        with pytest.raises(SessionConflictError) as err:
            await client.create_session(scale_set.id, "listener-1")
        assert err.value.status == 409
        await client.delete_session(session)
        await client.delete_session(session)  # already gone: fine
        with pytest.raises(SessionGoneError):
            await client.get_messages(session, 0, max_capacity=5)
        again = await client.create_session(scale_set.id, "listener-1")
        assert again.session_id != session.session_id


async def test_long_poll_answers_none_when_nothing_is_new() -> None:
    async with started() as fake, client_for(fake) as client:
        scale_set = await client.create_scale_set("team-a", 1, LABELS)
        session = await client.create_session(scale_set.id, "listener")
        started_at = time.monotonic()
        assert await client.get_messages(session, 0, max_capacity=5) is None
        assert time.monotonic() - started_at >= 0.5, "the server held the poll"
        assert client.requests[("GET messages", 202)] == 1
        assert fake.actions.sessions[session.session_id].max_capacity == 5


async def test_long_poll_read_timeout_is_nothing_new_and_not_retried() -> None:
    async with (
        started(long_poll_timeout=5.0) as fake,
        client_for(fake, long_poll_timeout=0.3) as client,
    ):
        scale_set = await client.create_scale_set("team-a", 1, LABELS)
        session = await client.create_session(scale_set.id, "listener")
        assert await client.get_messages(session, 0, max_capacity=5) is None
        assert client.requests[("GET messages", 0)] == 1


async def test_assigned_job_arrives_as_events_with_statistics() -> None:
    async with started() as fake, client_for(fake) as client:
        scale_set = await client.create_scale_set("team-a", 1, LABELS)
        session = await client.create_session(scale_set.id, "listener")
        job = fake.enqueue_job("acme/app", ["linux"])
        last, events, batch = await next_events(client, session, 0, {"JobAssigned"})
        assigned = next(e for e in events if e.kind == "JobAssigned")
        assert (assigned.repository, assigned.owner) == ("app", "acme")
        assert assigned.job_id
        assert assigned.runner_request_id > 0
        assert assigned.labels == ("linux",)
        assert assigned.queue_time is not None
        assert batch.statistics.assigned == 1
        assert session.statistics == batch.statistics
        assert await client.get_messages(session, last, max_capacity=5) is None, "acknowledged"

        runner = await client.generate_jit(scale_set.id, "team-a-runner-1")
        fake_runner = fake.runner_from_jit(runner.encoded_jit_config)
        assert fake_runner is not None
        fake.go_online(fake_runner)
        assert fake.acquire_job(fake_runner) is not None
        last, events, _ = await next_events(client, session, last, {"JobStarted"})
        started_ev = next(e for e in events if e.kind == "JobStarted")
        assert (started_ev.runner_id, started_ev.runner_name) == (runner.id, runner.name)
        fake.complete_job(fake_runner, "success")
        _, events, batch = await next_events(client, session, last, {"JobCompleted"})
        done = next(e for e in events if e.kind == "JobCompleted")
        assert (done.result, done.runner_name) == ("succeeded", runner.name)
        assert done.job_id == assigned.job_id
        assert batch.statistics.assigned == 0
        assert job.status == "completed"


async def test_expired_queue_token_is_refreshed_in_place() -> None:
    clock = Clock()
    async with started(clock, queue_token_ttl=30) as fake, client_for(fake) as client:
        scale_set = await client.create_scale_set("team-a", 1, LABELS)
        session = await client.create_session(scale_set.id, "listener")
        first_token = session.queue_token
        clock.offset = 31  # the queue token (30 s) expired; the session (120 s) did not
        fake.enqueue_job("acme/app", ["linux"])
        last, _, _ = await next_events(client, session, 0, {"JobAssigned"})
        assert session.queue_token != first_token
        assert client.requests[("GET messages", 401)] == 1
        assert client.requests[("PATCH runnerscalesets/{id}/sessions/{sid}", 200)] == 1
        clock.offset = 62  # and again, now on the acknowledgement path
        await client.ack(session, last)
        assert client.requests[("DELETE messages/{id}", 401)] == 1
        assert client.requests[("DELETE messages/{id}", 204)] >= 1


async def test_acquire_flow_offers_then_assigns() -> None:
    async with started(acquire_flow=True) as fake, client_for(fake) as client:
        scale_set = await client.create_scale_set("team-a", 1, LABELS)
        session = await client.create_session(scale_set.id, "listener")
        fake.enqueue_job("acme/app", ["linux"])
        last, events, batch = await next_events(client, session, 0, {"JobAvailable"})
        offered = [e.runner_request_id for e in events if e.kind == "JobAvailable"]
        assert batch.statistics.available == 1
        assert await client.acquire_jobs(session, offered) == offered
        assert await client.acquire_jobs(session, []) == []
        _, events, batch = await next_events(client, session, last, {"JobAssigned"})
        assert [e.runner_request_id for e in events if e.kind == "JobAssigned"] == offered
        assert (batch.statistics.available, batch.statistics.assigned) == (0, 1)


async def test_reassigned_job_arrives_as_canceled_then_assigned_again() -> None:
    clock = Clock()
    async with started(clock, assignment_timeout=30) as fake, client_for(fake) as client:
        scale_set = await client.create_scale_set("team-a", 1, LABELS)
        session = await client.create_session(scale_set.id, "listener")
        fake.enqueue_job("acme/app", ["linux"])
        last, events, _ = await next_events(client, session, 0, {"JobAssigned"})
        first = next(e for e in events if e.kind == "JobAssigned")
        clock.offset = 31  # nobody took it in time
        _, events, batch = await next_events(client, session, last, {"JobCompleted", "JobAssigned"})
        kinds = [(e.kind, e.result, e.job_id) for e in events]
        assert kinds == [
            ("JobCompleted", "canceled", first.job_id),
            ("JobAssigned", "", first.job_id),
        ]
        assert events[1].runner_request_id != first.runner_request_id
        assert batch.statistics.assigned == 1


# ------------------------------------------------------------------ runners (agents)
async def test_jit_runners_and_agents() -> None:
    async with started() as fake, client_for(fake) as client:
        scale_set = await client.create_scale_set("team-a", 1, LABELS)
        runner = await client.generate_jit(scale_set.id, "team-a-runner-1")
        assert runner.encoded_jit_config not in repr(runner)
        assert runner.encoded_jit_config not in str(runner)
        with pytest.raises(RunnerNameTakenError):
            await client.generate_jit(scale_set.id, "team-a-runner-1")

        agent = await client.get_agent(runner.id)
        assert agent is not None
        assert (agent.name, agent.scale_set_id, agent.busy) == (runner.name, scale_set.id, False)
        assert [a.id for a in await client.agents_named(runner.name)] == [runner.id]
        assert await client.agents_named("nobody") == []

        await client.delete_agent(runner.id)
        assert await client.get_agent(runner.id) is None
        await client.delete_agent(runner.id)  # already gone: fine


async def test_background_reads_never_hold_up_a_rounds_request() -> None:
    """A new leader re-reads every runner's agent at once; those reads queue in their own
    lane, and a JIT config (what a scale-up waits for) goes past them."""
    from runnerfleet.gateways.actions_service import BACKGROUND_IN_FLIGHT

    async with started() as fake, client_for(fake) as client:
        scale_set = await client.create_scale_set("team-a", 1, LABELS)
        runner = await client.generate_jit(scale_set.id, "team-a-runner-1")
        for _ in range(BACKGROUND_IN_FLIGHT):  # the background lane is full
            await client._background.acquire()
        waiting = asyncio.create_task(client.get_agent(runner.id, background=True))
        jit = await asyncio.wait_for(client.generate_jit(scale_set.id, "team-a-runner-2"), 10)
        assert jit.name == "team-a-runner-2"
        assert await client.get_agent(runner.id) is not None, "a round's read is not held"
        assert not waiting.done(), "the background read waits for its own lane"
        client._background.release()
        agent = await asyncio.wait_for(waiting, 10)
        assert agent is not None
        assert agent.id == runner.id


async def test_busy_runner_is_not_deleted() -> None:
    async with started() as fake, client_for(fake) as client:
        scale_set = await client.create_scale_set("team-a", 1, LABELS)
        session = await client.create_session(scale_set.id, "listener")
        fake.enqueue_job("acme/app", ["linux"])
        await next_events(client, session, 0, {"JobAssigned"})
        runner = await client.generate_jit(scale_set.id, "team-a-runner-1")
        fake_runner = fake.runner_from_jit(runner.encoded_jit_config)
        assert fake_runner is not None
        fake.go_online(fake_runner)
        assert fake.acquire_job(fake_runner) is not None
        agent = await client.get_agent(runner.id)
        assert agent is not None
        assert (agent.online, agent.busy) == (True, True)
        with pytest.raises(RunnerBusyError):
            await client.delete_agent(runner.id)
        assert await client.get_agent(runner.id) is not None, "kept"


# ------------------------------------------------------------------ retries, secrets
async def test_5xx_is_retried_until_it_clears() -> None:
    async with started() as fake:
        seen: list[int] = []

        def on_request(endpoint: str, status: int) -> None:
            seen.append(status)
            if status == 503 and seen.count(503) == 2:
                fake.unreachable = False  # GitHub recovers after two failed attempts

        async with client_for(fake, on_request=on_request, retries=4) as client:
            await client.runner_group_id("Default")
            fake.unreachable = True
            assert await client.get_scale_set(1, "nothing") is None
            assert seen[-3:] == [503, 503, 200]


async def test_5xx_gives_up_after_the_retry_budget() -> None:
    async with started() as fake, client_for(fake, retries=3) as client:
        await client.runner_group_id("Default")
        fake.unreachable = True
        with pytest.raises(GitHubUnavailableError):
            await client.get_scale_set(1, "nothing")
        assert client.requests[("GET runnerscalesets", 503)] == 3


async def test_4xx_is_not_retried() -> None:
    async with started() as fake, client_for(fake) as client:
        scale_set = await client.create_scale_set("team-a", 1, LABELS)
        await client.create_session(scale_set.id, "listener")
        with pytest.raises(SessionConflictError):
            await client.create_session(scale_set.id, "other")
        assert client.requests[("POST runnerscalesets/{id}/sessions", 409)] == 1


async def test_no_secret_in_errors_or_reprs() -> None:
    async with started(queue_token_ttl=3600) as fake, client_for(fake) as client:
        scale_set = await client.create_scale_set("team-a", 1, LABELS)
        session = await client.create_session(scale_set.id, "listener")
        runner = await client.generate_jit(scale_set.id, "r-1")
        secrets_ = [session.queue_token, runner.encoded_jit_config]
        admin = client._admin
        assert admin is not None
        secrets_.append(admin.token)
        errors: list[BaseException] = []
        for call in (
            lambda: client.create_session(scale_set.id, "other"),
            lambda: client.generate_jit(scale_set.id, "r-1"),
        ):
            with pytest.raises((SessionConflictError, RunnerNameTakenError)) as err:
                await call()
            errors.append(err.value)
        texts = [repr(session), str(session), repr(runner), repr(admin), repr(client)]
        texts += [str(e) for e in errors] + [repr(e) for e in errors]
        for text in texts:
            for secret in secrets_:
                assert secret not in text
