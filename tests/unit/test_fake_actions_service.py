"""The fake Actions service speaks the runner scale-set protocol of the contract (docs/testing.md):
registration, scale sets, sessions, the long-poll queue, both assignment flows, re-assignment,
agents, statistics; every body it sends validates against models/actions_service.py. Runs the
real aiohttp server in-process; deadlines (session expiry, token lifetimes, re-assignment)
come from a clock the test moves, the long-poll from short real timeouts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, TypeVar, get_args

import aiohttp
import jwt
import pytest
from pydantic import BaseModel

from runnerfleet.models import actions_service as m
from runnerfleet.sim.github import API_PREFIX, ActionsServiceOptions, FakeGitHub, FakeRunner
from tests.support.kube import wait_for

ORG = "acme"
REST_TOKEN = "ghs_test"
OPTIONS = ActionsServiceOptions(
    long_poll_timeout=0.3,
    session_timeout=120.0,
    queue_token_ttl=600.0,
    admin_token_ttl=900.0,
    assignment_timeout=60.0,
)
T = TypeVar("T", bound=BaseModel)


def wire(model: type[T], data: Any) -> T:
    """Validate a body, and check it sends no key the model does not name: the models ignore
    unknown fields (GitHub adds some), so a misspelt key would otherwise pass unnoticed."""
    assert isinstance(data, dict)
    names = set()
    for name, field in model.model_fields.items():
        key = field.alias or name
        names.add(key)
        inner = next(
            (t for t in (field.annotation, *get_args(field.annotation)) if _is_model(t)), None
        )
        value = data.get(key)
        for item in value if isinstance(value, list) else [value]:
            if inner is not None and isinstance(item, dict):
                wire(inner, item)
    assert set(data) <= names, f"{model.__name__}: unknown keys {set(data) - names}"
    return model.model_validate(data)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


class Clock:
    """The fake's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Protocol:
    """A minimal listener-side client: every answer is checked against the contract's models."""

    def __init__(self, gh: FakeGitHub, http: aiohttp.ClientSession) -> None:
        self.gh, self.http = gh, http
        self.service = ""
        self.admin = ""

    async def registration_token(self, scope: str = f"orgs/{ORG}") -> str:
        url = f"{self.gh.url}{API_PREFIX}/{scope}/actions/runners/registration-token"
        headers = {"Authorization": f"token {REST_TOKEN}"}
        async with self.http.post(url, headers=headers) as resp:
            assert resp.status == 201
            return wire(m.RegistrationToken, await resp.json()).token

    async def register(self, config: str = ORG, reg_token: str | None = None) -> tuple[int, Any]:
        token = reg_token or await self.registration_token()
        url = f"{self.gh.url}{API_PREFIX}/actions/runner-registration"
        body = {"url": f"{self.gh.url}/{config}", "runner_event": "register"}
        headers = {"Authorization": f"RemoteAuth {token}"}
        async with self.http.post(url, json=body, headers=headers) as resp:
            data = await resp.json()
        if resp.status == 200:
            reply = wire(m.RunnerRegistration, data)
            self.service, self.admin = reply.url, reply.token
        else:
            wire(m.ActionsError, data)
        return resp.status, data

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One call with the admin token (or `token`); error bodies must be ActionsErrors."""
        url = path if path.startswith("http") else self.service + path
        params = {"api-version": m.API_VERSION, **(query or {})}
        hdrs = {"Authorization": f"Bearer {token or self.admin}", **(headers or {})}
        async with self.http.request(method, url, json=body, headers=hdrs, params=params) as resp:
            data = await resp.json() if resp.status not in (202, 204) else None
        if resp.status >= 400:
            wire(m.ActionsError, data)
        return resp.status, data

    async def ok(self, model: type[T], method: str, path: str, body: Any = None, **kw: Any) -> T:
        status, data = await self.call(method, path, body, **kw)
        assert status == 200, (status, data)
        return wire(model, data)

    async def scale_set(
        self, name: str = "linux-set", labels: tuple[str, ...] = ("linux",)
    ) -> m.RunnerScaleSet:
        body = {
            "name": name,
            "runnerGroupId": 1,
            "labels": [{"name": label, "type": "System"} for label in labels],
            "RunnerSetting": {"ephemeral": True, "isElastic": True},
        }
        return await self.ok(m.RunnerScaleSet, "POST", m.SCALE_SETS_PATH, body)

    async def session(self, scale_set_id: int) -> m.Session:
        path = f"{m.SCALE_SETS_PATH}/{scale_set_id}/sessions"
        return await self.ok(m.Session, "POST", path, {"ownerName": "listener-a"})

    async def poll(self, session: m.Session, last: int = 0) -> tuple[int, m.Message | None]:
        status, data = await self.call(
            "GET",
            session.message_queue_url,
            token=session.message_queue_access_token,
            headers={m.MAX_CAPACITY_HEADER: "10"},
            query={"lastMessageId": str(last)},
        )
        return status, wire(m.Message, data) if status == 200 else None

    async def runner(self, scale_set_id: int, name: str) -> FakeRunner:
        """generatejitconfig, then what the runner does with the JIT config: go online."""
        path = f"{m.SCALE_SETS_PATH}/{scale_set_id}/generatejitconfig"
        config = await self.ok(
            m.JitRunnerConfig, "POST", path, {"name": name, "workFolder": "_work"}
        )
        assert config.runner.runner_scale_set_id == scale_set_id
        runner = self.gh.runner_from_jit(config.encoded_jit_config)
        assert runner is not None
        assert runner.scale_set_id == scale_set_id
        self.gh.go_online(runner)
        return runner


def jobs_of(message: m.Message) -> list[m.JobMessage]:
    items = json.loads(message.body)
    assert isinstance(items, list)
    assert len(items) <= m.MAX_MESSAGES_PER_RESPONSE
    return [wire(m.JobMessage, item) for item in items]


async def next_jobs(
    proto: Protocol, session: m.Session, last: int
) -> tuple[int, list[m.JobMessage], m.Statistics]:
    """Poll (acknowledging `last`) until a message comes; its id, job messages, statistics."""
    for _ in range(20):
        status, message = await proto.poll(session, last)
        if message is not None:
            assert message.message_type == m.MESSAGE_TYPE_JOB_MESSAGES
            assert message.statistics is not None
            return message.message_id, jobs_of(message), message.statistics
        assert status == 202
    raise AssertionError("no message came")


async def polling(gh: FakeGitHub, session: m.Session) -> None:
    """Wait until the session's long-poll is in flight in the server."""

    async def probe() -> int:
        return gh.actions.sessions[session.session_id].polling

    await wait_for(probe, lambda n: n > 0, what="a long-poll in flight", within=5, interval=0.01)


def kinds(jobs: list[m.JobMessage]) -> list[str]:
    return [job.message_type for job in jobs]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def gh(clock: Clock) -> AsyncIterator[FakeGitHub]:
    fake = FakeGitHub(tokens={REST_TOKEN}, clock=clock, actions=OPTIONS)
    fake.orgs.add(ORG)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def proto(gh: FakeGitHub) -> AsyncIterator[Protocol]:
    async with aiohttp.ClientSession() as http:
        client = Protocol(gh, http)
        status, _ = await client.register()
        assert status == 200
        yield client


# ---------------------------------------------------------------------- registration, auth
async def test_registration_gives_the_service_url_and_an_expiring_admin_jwt(
    gh: FakeGitHub, clock: Clock, proto: Protocol
) -> None:
    assert proto.service == f"{gh.url}/_services/pipelines/"
    claims = jwt.decode(proto.admin, options={"verify_signature": False})
    assert claims["exp"] == pytest.approx(clock.now + OPTIONS.admin_token_ttl)

    assert (await proto.register(reg_token="not-a-token"))[0] == 401
    assert (await proto.register(config="nobody"))[0] == 404  # an unknown org
    token = await proto.registration_token()
    clock.now += 3601  # registration tokens live an hour
    assert (await proto.register(reg_token=token))[0] == 401

    status, data = await proto.call("GET", m.RUNNER_GROUPS_PATH, token="forged")
    assert status == 401
    assert data["typeKey"]
    status, _ = await proto.register()  # a fresh admin token, then let it expire
    assert status == 200
    assert (await proto.call("GET", m.RUNNER_GROUPS_PATH))[0] == 200
    clock.now += OPTIONS.admin_token_ttl
    assert (await proto.call("GET", m.RUNNER_GROUPS_PATH))[0] == 401


async def test_actions_calls_are_not_counted_against_rest_but_the_registration_token_is(
    gh: FakeGitHub, proto: Protocol
) -> None:
    before_rest, before_actions = gh.counted_requests, sum(gh.actions.requests.values())
    await proto.registration_token()
    assert gh.counted_requests == before_rest + 1  # a REST call with the installation token
    scale_set = await proto.scale_set()
    session = await proto.session(scale_set.id)
    await proto.poll(session)
    await proto.register()
    assert gh.counted_requests == before_rest + 2  # only the second registration token
    assert sum(gh.actions.requests.values()) == before_actions + 4
    summary = gh.summary()["actions_service"]
    assert summary["scale_sets"] == 1
    assert summary["sessions"] == 1
    assert any(key.endswith("/messages") for key in summary["by_endpoint"])
    assert not any("_services" in endpoint for endpoint in gh.counted_by_endpoint)


# ---------------------------------------------------------------------- groups, scale sets
async def test_runner_groups_and_scale_set_crud(proto: Protocol) -> None:
    groups = await proto.ok(
        m.RunnerGroupList, "GET", m.RUNNER_GROUPS_PATH, query={"groupName": "Default"}
    )
    assert [(g.id, g.name, g.is_default) for g in groups.value] == [(1, "Default", True)]
    none = await proto.ok(m.RunnerGroupList, "GET", m.RUNNER_GROUPS_PATH, query={"groupName": "x"})
    assert none.count == 0

    created = await proto.scale_set("team-a", ("linux", "x64"))
    assert created.id
    assert created.runner_jit_config_url.endswith(f"/{created.id}/generatejitconfig")
    assert created.statistics == m.Statistics()
    status, data = await proto.call(
        "POST", m.SCALE_SETS_PATH, {"name": "team-a", "runnerGroupId": 1}
    )
    assert status == 409
    assert data["typeKey"] == "RunnerScaleSetExistsException"

    query = {"runnerGroupId": "1", "name": "team-a"}
    found = await proto.ok(m.RunnerScaleSetList, "GET", m.SCALE_SETS_PATH, query=query)
    assert [s.id for s in found.value] == [created.id]
    path = f"{m.SCALE_SETS_PATH}/{created.id}"
    patched = await proto.ok(m.RunnerScaleSet, "PATCH", path, {"labels": [{"name": "arm64"}]})
    assert [label.name for label in patched.labels] == ["arm64"]
    assert patched.name == "team-a"
    assert (await proto.ok(m.RunnerScaleSet, "GET", path)).labels == patched.labels
    assert (await proto.call("DELETE", path))[0] == 204
    status, data = await proto.call("GET", path)
    assert status == 404
    assert data["typeKey"] in m.NOT_FOUND_KEYS
    assert (await proto.call("DELETE", path))[0] == 404


# ---------------------------------------------------------------------- sessions, queue
async def test_second_session_conflicts_until_the_first_expires_or_is_deleted(
    gh: FakeGitHub, clock: Clock, proto: Protocol
) -> None:
    scale_set = await proto.scale_set()
    first = await proto.session(scale_set.id)
    path = f"{m.SCALE_SETS_PATH}/{scale_set.id}/sessions"
    status, data = await proto.call("POST", path, {"ownerName": "listener-b"})
    assert status == 409
    assert data["typeKey"] == m.SESSION_CONFLICT

    clock.now += OPTIONS.session_timeout - 1
    assert (await proto.poll(first))[0] == 202  # polling keeps it alive
    clock.now += OPTIONS.session_timeout - 1
    assert (await proto.call("POST", path, {"ownerName": "listener-b"}))[0] == 409
    clock.now += 2  # no poll for session_timeout: gone
    second = await proto.session(scale_set.id)
    assert second.session_id != first.session_id
    assert gh.actions.sessions.keys() == {second.session_id}
    assert (await proto.poll(first))[0] == 404  # the stale listener learns its session ended

    assert (await proto.call("PATCH", f"{path}/{first.session_id}"))[0] == 404
    assert (await proto.call("DELETE", f"{path}/{second.session_id}"))[0] == 204
    assert (await proto.call("DELETE", f"{path}/{second.session_id}"))[0] == 404
    await proto.session(scale_set.id)


async def test_long_poll_answers_202_after_its_timeout_and_wakes_for_a_job(
    gh: FakeGitHub, proto: Protocol
) -> None:
    scale_set = await proto.scale_set()
    session = await proto.session(scale_set.id)
    gh.actions.options = replace(gh.actions.options, long_poll_timeout=0.5)
    started = time.monotonic()
    status, _ = await proto.poll(session)
    assert status == 202
    assert time.monotonic() - started >= 0.5

    gh.actions.options = replace(gh.actions.options, long_poll_timeout=10.0)
    poll = asyncio.create_task(proto.poll(session))
    await polling(gh, session)
    # The server keeps answering other requests while the poll waits.
    path = f"{m.SCALE_SETS_PATH}/{scale_set.id}"
    await proto.ok(m.RunnerScaleSet, "GET", path)
    assert not poll.done()
    started = time.monotonic()
    gh.enqueue_job(f"{ORG}/app", ["linux"])
    status, message = await asyncio.wait_for(poll, 5)
    assert status == 200
    assert message is not None
    assert time.monotonic() - started < 2
    assert kinds(jobs_of(message)) == ["JobAssigned"]
    assert gh.actions.sessions[session.session_id].max_capacity == 10


async def test_at_most_50_job_messages_per_response_and_acknowledgement(
    gh: FakeGitHub, proto: Protocol
) -> None:
    scale_set = await proto.scale_set()
    session = await proto.session(scale_set.id)
    for _ in range(120):
        gh.enqueue_job(f"{ORG}/app", ["linux"])
    first, jobs, stats = await next_jobs(proto, session, 0)
    assert len(jobs) == 50
    assert stats.total_assigned_jobs == 120
    again, _, _ = await next_jobs(proto, session, 0)  # not acknowledged: sent again
    assert again == first
    second, jobs, _ = await next_jobs(proto, session, first)  # lastMessageId acknowledges
    assert second > first
    assert len(jobs) == 50
    ack = f"{session.message_queue_url}/{second}"
    assert (await proto.call("DELETE", ack, token=session.message_queue_access_token))[0] == 204
    third, jobs, _ = await next_jobs(proto, session, 0)  # DELETE acknowledged the second
    assert third > second
    assert len(jobs) == 20
    assert (await proto.poll(session, third))[0] == 202
    assert {j.runner_request_id for j in jobs} <= {j.runner_request_id for j in gh.jobs.values()}


async def test_expired_queue_token_is_401_until_the_session_is_refreshed(
    gh: FakeGitHub, clock: Clock, proto: Protocol
) -> None:
    gh.actions.options = replace(gh.actions.options, queue_token_ttl=60.0)
    scale_set = await proto.scale_set()
    session = await proto.session(scale_set.id)
    clock.now += 60.0  # the session lives on (session_timeout 120 s), its token does not
    assert (await proto.poll(session))[0] == 401
    path = f"{m.SCALE_SETS_PATH}/{scale_set.id}/sessions/{session.session_id}"
    refreshed = await proto.ok(m.Session, "PATCH", path)
    assert refreshed.session_id == session.session_id
    assert refreshed.message_queue_access_token != session.message_queue_access_token
    assert refreshed.statistics is not None
    assert (await proto.poll(refreshed))[0] == 202


# ---------------------------------------------------------------------- flows
async def test_direct_assignment_flow_with_a_simulated_runner(
    gh: FakeGitHub, proto: Protocol
) -> None:
    scale_set = await proto.scale_set()
    session = await proto.session(scale_set.id)
    job = gh.enqueue_job(f"{ORG}/app", ["Linux"])  # labels match case-insensitively
    last, jobs, stats = await next_jobs(proto, session, 0)
    assert kinds(jobs) == ["JobAssigned"]
    assert jobs[0].job_id == str(job.id)
    assert jobs[0].repository_name == "app"
    assert jobs[0].owner_name == ORG
    assert (stats.total_assigned_jobs, stats.total_running_jobs) == (1, 0)

    runner = await proto.runner(scale_set.id, "runner-1")
    assert gh.acquire_job(runner) is job
    last, jobs, stats = await next_jobs(proto, session, last)
    assert kinds(jobs) == ["JobStarted"]
    assert (jobs[0].runner_id, jobs[0].runner_name) == (
        runner.id,
        "runner-1",
    )
    assert (stats.total_assigned_jobs, stats.total_running_jobs, stats.total_busy_runners) == (
        1,
        1,
        1,
    )

    gh.complete_job(runner)
    last, jobs, stats = await next_jobs(proto, session, last)
    assert kinds(jobs) == ["JobCompleted"]
    assert jobs[0].result == "succeeded"
    assert stats == m.Statistics()  # the ephemeral runner unregistered after its job
    assert runner.id not in gh.runners
    assert gh.summary()["jobs"] == {"completed": 1}

    for conclusion, result in (("failure", "failed"), ("cancelled", "canceled")):
        gh.enqueue_job(f"{ORG}/app", ["linux"])
        other = await proto.runner(scale_set.id, f"runner-{conclusion}")
        assert gh.acquire_job(other) is not None
        gh.complete_job(other, conclusion)
        last, jobs, _ = await next_jobs(proto, session, last)
        assert kinds(jobs) == ["JobAssigned", "JobStarted", "JobCompleted"]
        assert jobs[-1].result == result

    gh.enqueue_job(f"{ORG}/app", ["linux"])
    lost = await proto.runner(scale_set.id, "runner-lost")
    assert gh.acquire_job(lost) is not None
    gh.runner_lost(lost)  # what sim/runners.py does when a pod dies mid-job
    last, jobs, stats = await next_jobs(proto, session, last)
    assert jobs[-1].message_type == "JobCompleted"
    assert jobs[-1].result == "failed"
    assert (stats.total_registered_runners, stats.total_busy_runners) == (1, 0)


async def test_acquire_flow_offers_jobs_until_the_listener_acquires_them(
    gh: FakeGitHub, proto: Protocol
) -> None:
    gh.actions.options = replace(gh.actions.options, acquire_flow=True)
    scale_set = await proto.scale_set()
    session = await proto.session(scale_set.id)
    job = gh.enqueue_job(f"{ORG}/app", ["linux"])
    runner = await proto.runner(scale_set.id, "runner-1")
    last, jobs, stats = await next_jobs(proto, session, 0)
    assert kinds(jobs) == ["JobAvailable"]
    assert "/acquirejobs" in jobs[0].acquire_job_url
    assert (stats.total_available_jobs, stats.total_assigned_jobs) == (1, 0)
    assert gh.acquire_job(runner) is None  # not acquired, not assigned: no runner takes it

    request_id = jobs[0].runner_request_id
    path = f"{m.SCALE_SETS_PATH}/{scale_set.id}/acquirejobs"
    assert (await proto.call("POST", path, [request_id]))[0] == 401  # needs the queue token
    queue = session.message_queue_access_token
    acquired = await proto.ok(m.AcquireJobsResult, "POST", path, [request_id, 999_999], token=queue)
    assert (acquired.count, acquired.value) == (1, [request_id])
    again = await proto.ok(m.AcquireJobsResult, "POST", path, [request_id], token=queue)
    assert again.count == 0

    last, jobs, stats = await next_jobs(proto, session, last)
    assert kinds(jobs) == ["JobAssigned"]
    assert jobs[0].runner_request_id == request_id
    assert (stats.total_available_jobs, stats.total_assigned_jobs) == (0, 1)
    assert gh.acquire_job(runner) is job
    gh.complete_job(runner)
    _, jobs, stats = await next_jobs(proto, session, last)
    assert kinds(jobs) == ["JobStarted", "JobCompleted"]
    assert stats.total_assigned_jobs == 0


async def test_a_job_no_runner_takes_is_reassigned_at_most_max_times(
    gh: FakeGitHub, clock: Clock, proto: Protocol
) -> None:
    scale_set = await proto.scale_set()
    session = await proto.session(scale_set.id)
    job = gh.enqueue_job(f"{ORG}/app", ["linux"])
    last, jobs, _ = await next_jobs(proto, session, 0)
    request_ids = [jobs[0].runner_request_id]
    for _ in range(OPTIONS.max_reassignments):
        clock.now += OPTIONS.assignment_timeout
        last, jobs, stats = await next_jobs(proto, session, last)
        assert kinds(jobs) == ["JobCompleted", "JobAssigned"]
        assert jobs[0].result == "canceled"
        assert jobs[0].runner_request_id == request_ids[-1]
        assert jobs[1].job_id == str(job.id)
        request_ids.append(jobs[1].runner_request_id)
        assert stats.total_assigned_jobs == 1  # a re-assignment is not a second job
    assert len(set(request_ids)) == OPTIONS.max_reassignments + 1
    clock.now += OPTIONS.assignment_timeout * 1.5  # (less than session_timeout)
    assert (await proto.poll(session, last))[0] == 202  # it stays assigned now
    runner = await proto.runner(scale_set.id, "late")
    assert gh.acquire_job(runner) is job
    assert gh.actions.stats[scale_set.id]["reassigned"] == OPTIONS.max_reassignments


async def test_label_routing_and_rest_runners_never_take_scale_set_jobs(
    gh: FakeGitHub, proto: Protocol
) -> None:
    early = gh.enqueue_job(f"{ORG}/app", ["linux"])  # queued before any scale set exists
    wide = await proto.scale_set("wide", ("linux", "x64", "gpu"))
    narrow = await proto.scale_set("narrow", ("LINUX", "x64"))
    twin = await proto.scale_set("twin", ("linux", "x64"))
    assert early.scale_set_id == wide.id  # routed when a scale set came
    assert (
        gh.enqueue_job(f"{ORG}/app", ["linux", "X64"]).scale_set_id == narrow.id
    )  # fewest, lowest id
    assert gh.enqueue_job(f"{ORG}/app", ["gpu"]).scale_set_id == wide.id
    assert gh.enqueue_job("other-org/app", ["linux"]).scale_set_id is None  # not its org
    windows = gh.enqueue_job(f"{ORG}/app", ["windows"])
    assert windows.scale_set_id is None

    rest = gh.register_runner("rest-1", f"org/{ORG}", ["linux", "x64", "gpu", "windows"], 1)
    gh.go_online(rest)
    taken = gh.acquire_job(rest)
    assert taken is not None
    assert taken.scale_set_id is None
    gh.complete_job(rest)

    assert (await proto.call("DELETE", f"{m.SCALE_SETS_PATH}/{narrow.id}"))[0] == 204
    rerouted = [j for j in gh.jobs.values() if j.labels == ["linux", "X64"]]
    assert [j.scale_set_id for j in rerouted] == [twin.id]  # back to the queue, routed again
    session = await proto.session(twin.id)
    _, jobs, stats = await next_jobs(proto, session, 0)
    assert kinds(jobs) == ["JobAssigned"]
    assert stats.total_assigned_jobs == 1


async def test_agents_get_by_name_and_delete_only_when_idle(
    gh: FakeGitHub, proto: Protocol
) -> None:
    scale_set = await proto.scale_set()
    runner = await proto.runner(scale_set.id, "runner-1")
    jit = f"{m.SCALE_SETS_PATH}/{scale_set.id}/generatejitconfig"
    status, data = await proto.call("POST", jit, {"name": "runner-1"})
    assert status == 409
    assert data["typeKey"] == m.AGENT_EXISTS

    agent = await proto.ok(m.RunnerReference, "GET", f"{m.AGENTS_PATH}/{runner.id}")
    assert (agent.name, agent.status, agent.busy) == ("runner-1", "online", False)
    named = await proto.ok(
        m.RunnerReferenceList, "GET", m.AGENTS_PATH, query={"agentName": "runner-1"}
    )
    assert [a.id for a in named.value] == [runner.id]
    gh.enqueue_job(f"{ORG}/app", ["linux"])
    assert gh.acquire_job(runner) is not None

    status, data = await proto.call("DELETE", f"{m.AGENTS_PATH}/{runner.id}")
    assert status == 400
    assert data["typeKey"] == m.JOB_STILL_RUNNING
    assert runner.id in gh.runners  # kept
    idle = await proto.runner(scale_set.id, "runner-2")
    assert (await proto.call("DELETE", f"{m.AGENTS_PATH}/{idle.id}"))[0] == 204
    status, data = await proto.call("GET", f"{m.AGENTS_PATH}/{idle.id}")
    assert status == 404
    assert data["typeKey"] == "AgentNotFoundException"
    assert (await proto.call("DELETE", f"{m.AGENTS_PATH}/{idle.id}"))[0] == 404


async def test_deleting_a_scale_set_ends_its_sessions_and_idle_runners(
    gh: FakeGitHub, proto: Protocol
) -> None:
    scale_set = await proto.scale_set()
    session = await proto.session(scale_set.id)
    idle = await proto.runner(scale_set.id, "idle")
    busy = await proto.runner(scale_set.id, "busy")
    job = gh.enqueue_job(f"{ORG}/app", ["linux"])
    assert gh.acquire_job(busy) is job
    gh.actions.options = replace(gh.actions.options, long_poll_timeout=10.0)
    _, _jobs, _ = await next_jobs(proto, session, 0)
    poll = asyncio.create_task(proto.poll(session, 10**6))
    await polling(gh, session)
    assert (await proto.call("DELETE", f"{m.SCALE_SETS_PATH}/{scale_set.id}"))[0] == 204
    assert (await asyncio.wait_for(poll, 5))[0] == 404  # the waiting poll ends at once
    assert idle.id not in gh.runners
    assert busy.id in gh.runners
    assert not gh.actions.sessions
    gh.complete_job(busy)
    assert job.status == "completed"
    assert not gh.runners


async def test_every_error_is_an_actions_error_and_the_server_stops_during_a_poll(
    gh: FakeGitHub, proto: Protocol
) -> None:
    """(Bodies of every success kind are validated by the tests above, through Protocol.)"""
    status, data = await proto.call("POST", m.SCALE_SETS_PATH, {"runnerGroupId": 1})
    assert status == 400
    assert m.ActionsError.model_validate(data).type_key == "ArgumentException"
    status, _ = await proto.call("POST", m.SCALE_SETS_PATH, {"name": "x", "runnerGroupId": 42})
    assert status == 404
    scale_set = await proto.scale_set()
    session = await proto.session(scale_set.id)
    gh.actions.options = replace(gh.actions.options, long_poll_timeout=30.0)
    poll = asyncio.create_task(proto.poll(session))
    await polling(gh, session)
    started = time.monotonic()
    await gh.stop()  # does not wait for the long-poll's 30 s
    assert time.monotonic() - started < 5
    assert (await poll)[0] == 202
