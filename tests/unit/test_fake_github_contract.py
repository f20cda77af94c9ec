"""Every body the fake GitHub returns validates against githubkit's models for that endpoint.

githubkit's models are generated from GitHub's published OpenAPI description, so a fake that
passes here cannot drift from GitHub's schema for the fields runnerfleet relies on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from githubkit_schemas.latest import models as m
from multidict import CIMultiDict
from pydantic import BaseModel

from runnerfleet.sim.github import API_PREFIX, FakeGitHub, FakeJob, FakeRunner

ORG = "acme"


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    gh = FakeGitHub(tokens={"ghs_test"})
    await gh.start()
    yield gh
    await gh.stop()


async def _call(
    gh: FakeGitHub, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, Mapping[str, str]]:
    hdrs = {"Authorization": "token ghs_test", **(headers or {})}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, gh.url + API_PREFIX + path, json=body, headers=hdrs) as resp,
    ):
        data = await resp.json() if resp.status not in (204, 304) else None
        return resp.status, data, CIMultiDict(resp.headers)


def _valid(model: type[BaseModel], body: Any) -> BaseModel:
    return model.model_validate(body)


async def _jit(gh: FakeGitHub, name: str, labels: list[str] | None = None) -> dict[str, Any]:
    status, body, _ = await _call(
        gh,
        "POST",
        f"/orgs/{ORG}/actions/runners/generate-jitconfig",
        {"name": name, "runner_group_id": 1, "labels": labels or ["linux"]},
    )
    assert status == 201, body
    result: dict[str, Any] = body
    return result


async def test_jitconfig_runner_list_get_delete(fake: FakeGitHub) -> None:
    created = await _jit(fake, "r-1")
    _valid(m.OrgsOrgActionsRunnersGenerateJitconfigPostResponse201, created)
    runner_id = created["runner"]["id"]

    status, body, _ = await _call(fake, "GET", f"/orgs/{ORG}/actions/runners?per_page=100")
    assert status == 200
    listed = _valid(m.OrgsOrgActionsRunnersGetResponse200, body)
    assert [r.name for r in listed.runners] == ["r-1"]  # type: ignore[attr-defined]

    status, body, _ = await _call(fake, "GET", f"/orgs/{ORG}/actions/runners/{runner_id}")
    assert status == 200
    _valid(m.Runner, body)

    status, body, _ = await _call(fake, "DELETE", f"/orgs/{ORG}/actions/runners/{runner_id}")
    assert status == 204
    status, body, _ = await _call(fake, "GET", f"/orgs/{ORG}/actions/runners/{runner_id}")
    assert status == 404
    _valid(m.BasicError, body)


async def test_duplicate_name_is_409_and_bad_body_422(fake: FakeGitHub) -> None:
    await _jit(fake, "r-1")
    path = f"/orgs/{ORG}/actions/runners/generate-jitconfig"
    status, body, _ = await _call(
        fake, "POST", path, {"name": "r-1", "runner_group_id": 1, "labels": ["x"]}
    )
    assert status == 409
    _valid(m.BasicError, body)
    status, body, _ = await _call(fake, "POST", path, {"name": "r-2", "labels": []})
    assert status == 422
    _valid(m.ValidationErrorSimple, body)


async def test_busy_runner_cannot_be_deleted(fake: FakeGitHub) -> None:
    created = await _jit(fake, "r-1", ["self-hosted", "linux"])
    runner = fake.runner_from_jit(created["encoded_jit_config"])
    assert runner is not None
    fake.go_online(runner)
    fake.enqueue_job("acme/app", ["self-hosted"])
    assert fake.acquire_job(runner) is not None
    status, body, _ = await _call(fake, "DELETE", f"/orgs/{ORG}/actions/runners/{runner.id}")
    assert status == 422
    _valid(m.ValidationErrorSimple, body)


async def test_runner_groups_repos_runs_jobs(fake: FakeGitHub) -> None:
    job = fake.enqueue_job("acme/app", ["self-hosted", "linux"])
    status, body, _ = await _call(fake, "GET", f"/orgs/{ORG}/actions/runner-groups")
    assert status == 200
    _valid(m.OrgsOrgActionsRunnerGroupsGetResponse200, body)

    status, body, _ = await _call(fake, "GET", "/installation/repositories")
    assert status == 200
    _valid(m.InstallationRepositoriesGetResponse200, body)

    status, body, _ = await _call(fake, "GET", "/repos/acme/app/actions/runs?status=queued")
    assert status == 200
    runs = _valid(m.ReposOwnerRepoActionsRunsGetResponse200, body)
    assert [r.id for r in runs.workflow_runs] == [job.run_id]  # type: ignore[attr-defined]

    status, body, _ = await _call(fake, "GET", f"/repos/acme/app/actions/runs/{job.run_id}/jobs")
    assert status == 200
    jobs = _valid(m.ReposOwnerRepoActionsRunsRunIdJobsGetResponse200, body)
    assert jobs.jobs[0].labels == ["self-hosted", "linux"]  # type: ignore[attr-defined]


async def test_every_page_of_every_list_validates(fake: FakeGitHub) -> None:
    first = fake.enqueue_job("acme/app", ["linux"])
    for i in range(1, 35):
        fake.runners[i] = FakeRunner(i, f"r-{i}", f"org/{ORG}", ["linux"], 1)
        fake.jobs[90_000 + i] = FakeJob(90_000 + i, first.run_id, "acme/app", ["linux"], 1.0)
        fake.enqueue_job(f"acme/repo-{i}", ["linux"])
    fake.add_repositories(["acme/old"], archived=True)
    lists: dict[str, type[BaseModel]] = {
        f"/orgs/{ORG}/actions/runners": m.OrgsOrgActionsRunnersGetResponse200,
        f"/orgs/{ORG}/actions/runner-groups": m.OrgsOrgActionsRunnerGroupsGetResponse200,
        "/installation/repositories": m.InstallationRepositoriesGetResponse200,
        "/repos/acme/app/actions/runs": m.ReposOwnerRepoActionsRunsGetResponse200,
        f"/repos/acme/app/actions/runs/{first.run_id}/jobs": (
            m.ReposOwnerRepoActionsRunsRunIdJobsGetResponse200
        ),
    }
    pages = 0
    for path, model in lists.items():
        url: str | None = path
        while url is not None:
            status, body, headers = await _call(
                fake, "GET", url.removeprefix(fake.url + API_PREFIX)
            )
            assert status == 200, (url, body)
            _valid(model, body)
            pages += 1
            link = headers.get("Link", "")
            url = next((u for u, rel in _links(link) if rel == "next"), None)
    assert pages == 2 + 1 + 2 + 1 + 2  # 34 runners, 1 group, 36 repositories, 1 run, 35 jobs


def _links(header: str) -> list[tuple[str, str]]:
    parts = (part.split(";") for part in header.split(",") if part.strip())
    return [
        (u.strip().strip("<>"), rel.strip().removeprefix("rel=").strip('"')) for u, rel in parts
    ]


async def test_app_jwt_exchanges_for_installation_token() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    gh = FakeGitHub(app_public_key=public)
    await gh.start()
    try:
        now = int(time.time())
        token = jwt.encode({"iat": now - 60, "exp": now + 540, "iss": "42"}, key, algorithm="RS256")
        status, body, _ = await _call(
            gh,
            "POST",
            "/app/installations/7/access_tokens",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert status == 201
        issued = _valid(m.InstallationToken, body)
        assert issued.token in gh.tokens  # type: ignore[attr-defined]
        status, _, _ = await _call(
            gh,
            "POST",
            "/app/installations/7/access_tokens",
            headers={"Authorization": "Bearer not-a-jwt"},
        )
        assert status == 401
    finally:
        await gh.stop()


async def test_etag_304_costs_nothing_and_exhaustion_is_403_with_reset(fake: FakeGitHub) -> None:
    path = f"/orgs/{ORG}/actions/runners"
    status, _, headers = await _call(fake, "GET", path)
    assert status == 200
    used = fake.rate.used
    status, _, again = await _call(fake, "GET", path, headers={"If-None-Match": headers["ETag"]})
    assert status == 304
    assert fake.rate.used == used
    assert again["x-ratelimit-remaining"] == str(fake.rate.limit - used)

    fake.exhaust_rate_limit(reset_in=30)
    status, body, headers = await _call(fake, "GET", path)
    assert status == 403
    _valid(m.BasicError, body)
    assert headers["x-ratelimit-remaining"] == "0"
    assert 0 < int(headers["retry-after"]) <= 30
    assert int(headers["x-ratelimit-reset"]) >= int(time.time())


async def test_bad_token_is_401_and_unreachable_is_503(fake: FakeGitHub) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            fake.url + API_PREFIX + f"/orgs/{ORG}/actions/runners",
            headers={"Authorization": "token nope"},
        ) as resp,
    ):
        assert resp.status == 401
    fake.unreachable = True
    status, _, _ = await _call(fake, "GET", f"/orgs/{ORG}/actions/runners")
    assert status == 503


async def test_enterprise_scope_and_control_api(fake: FakeGitHub) -> None:
    status, body, _ = await _call(
        fake, "POST", "/enterprises/big/actions/runners/generate-jitconfig",
        {"name": "e-1", "runner_group_id": 1, "labels": ["linux"]},
    )  # fmt: skip
    assert status == 201
    _valid(m.OrgsOrgActionsRunnersGenerateJitconfigPostResponse201, body)
    status, body, _ = await _call(fake, "GET", "/enterprises/big/actions/runners")
    assert [r["name"] for r in body["runners"]] == ["e-1"]
    status, body, _ = await _call(fake, "GET", f"/orgs/{ORG}/actions/runners")
    assert body["runners"] == []

    async with aiohttp.ClientSession() as session:
        async with session.post(
            fake.url + "/_sim/jobs", json={"repo": "acme/app", "labels": ["linux"], "count": 2}
        ) as resp:
            assert resp.status == 201
        async with session.get(fake.url + "/_sim/jobs") as resp:
            jobs = await resp.json()
    assert [j["status"] for j in jobs] == ["queued", "queued"]


async def test_webhook_deliveries_are_signed_and_valid() -> None:
    from aiohttp import web

    from runnerfleet.listener.signature import verify

    received: list[tuple[bytes, str]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers["X-Hub-Signature-256"]))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    gh = FakeGitHub(tokens={"ghs_test"})
    await gh.start()
    try:
        gh.webhook_url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        gh.webhook_secret = b"s3cret"
        job = gh.enqueue_job("acme/app", ["linux"])
        created = await _jit(gh, "r-1", ["linux"])
        registered = gh.runner_from_jit(created["encoded_jit_config"])
        assert registered is not None
        gh.go_online(registered)
        gh.acquire_job(registered)
        gh.complete_job(registered)
        for _ in range(100):
            if len(received) == 3:
                break
            await asyncio.sleep(0.02)  # deliveries are asynchronous, as on GitHub
    finally:
        await gh.stop()
        await runner.cleanup()
    assert len(received) == 3, (gh.deliveries, [json.loads(b)["action"] for b, _ in received])
    models = [m.WebhookWorkflowJobQueued, m.WebhookWorkflowJobInProgress,
              m.WebhookWorkflowJobCompleted]  # fmt: skip
    for (body, signature), model in zip(received, models, strict=True):
        assert verify(b"s3cret", body, signature)
        event = _valid(model, json.loads(body))
        assert event.workflow_job.id == job.id  # type: ignore[attr-defined]
    assert gh.deliveries[200] == 3
