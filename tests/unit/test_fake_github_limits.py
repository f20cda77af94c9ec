"""The fake GitHub has GitHub's limits by default: pages and `Link`, one primary budget per
installation or token, ETags tied to the token, secondary limits (points per endpoint per
minute, concurrency), and the counters a benchmark reads. Runs the real aiohttp server
in-process; time that matters (the minute, the hour) comes from a fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from multidict import CIMultiDict

from runnerfleet.sim.github import API_PREFIX, FakeGitHub, FakeJob, FakeRunner, GitHubLimits
from tests.support.kube import wait_for

ORG = "acme"
RUNNERS = f"GET {API_PREFIX}/orgs/{{org}}/actions/runners"  # an endpoint: method + route
GOLDEN = Path(__file__).parent / "golden" / "repository_required.json"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


Reply = tuple[int, Any, Mapping[str, str]]


async def call(
    gh: FakeGitHub,
    method: str,
    path: str,
    token: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    session: aiohttp.ClientSession | None = None,
) -> Reply:
    """One request; `path` is under the API prefix unless it is already an absolute URL."""
    url = path if path.startswith("http") else gh.url + API_PREFIX + path
    hdrs = {"Authorization": f"token {token}", **(headers or {})}
    opened = aiohttp.ClientSession() if session is None else contextlib.nullcontext(session)
    async with opened as s, s.request(method, url, json=body, headers=hdrs) as resp:
        data = await resp.json() if resp.status not in (204, 304) else None
        return resp.status, data, CIMultiDict(resp.headers)


def links(headers: Mapping[str, str]) -> dict[str, str]:
    """rel -> URL from a `Link` header."""
    return {rel: url for url, rel in re.findall(r'<([^>]+)>; rel="(\w+)"', headers.get("Link", ""))}


def jit_body(name: str) -> dict[str, Any]:
    return {"name": name, "runner_group_id": 1, "labels": ["linux"]}


@pytest.fixture
async def clock() -> Clock:
    return Clock()


@pytest.fixture
async def fake(clock: Clock) -> AsyncIterator[FakeGitHub]:
    gh = FakeGitHub(tokens={"ghs_test"}, clock=clock)
    await gh.start()
    yield gh
    await gh.stop()


def _runners(gh: FakeGitHub, n: int) -> None:
    for i in range(n):
        gh.runners[5000 + i] = FakeRunner(5000 + i, f"r-{i}", f"org/{ORG}", ["linux"], 1)


def _one_run_with_jobs(gh: FakeGitHub, n: int) -> int:
    first = gh.enqueue_job("acme/app", ["linux"])
    for i in range(1, n):
        gh.jobs[90_000 + i] = FakeJob(90_000 + i, first.run_id, "acme/app", ["linux"], 1.0)
    return first.run_id


def _lists(gh: FakeGitHub, n: int) -> dict[str, str]:
    """Fill every paginated list with n items; list path -> key of the items in the body."""
    _runners(gh, n)
    gh.add_repositories(f"acme/repo-{i:03}" for i in range(n - 1))
    for _ in range(n - 1):
        gh.enqueue_job("acme/app", ["linux"])  # plus acme/app itself: n repositories
    run_id = _one_run_with_jobs(gh, n)  # and the n-th run of acme/app
    return {
        f"/orgs/{ORG}/actions/runners": "runners",
        "/installation/repositories": "repositories",
        "/repos/acme/app/actions/runs": "workflow_runs",
        f"/repos/acme/app/actions/runs/{run_id}/jobs": "jobs",
    }


async def test_every_list_pages_like_github(fake: FakeGitHub) -> None:
    for path, key in _lists(fake, 65).items():
        status, body, headers = await call(fake, "GET", path, "ghs_test")
        assert (status, len(body[key]), body["total_count"]) == (200, 30, 65), path
        first = links(headers)
        assert list(first) == ["next", "last"], (path, headers.get("Link"))
        assert all(url.startswith(fake.url + API_PREFIX + path) for url in first.values())
        assert "page=3" in first["last"]

        status, middle, headers = await call(fake, "GET", first["next"], "ghs_test")
        assert list(links(headers)) == ["prev", "next", "last", "first"], path
        status, last, headers = await call(fake, "GET", first["last"], "ghs_test")
        assert list(links(headers)) == ["prev", "first"], path
        seen = [json.dumps(x, sort_keys=True) for b in (body, middle, last) for x in b[key]]
        assert len(seen) == len(set(seen)) == 65, f"{path}: pages overlap or miss items"

        status, big, headers = await call(fake, "GET", f"{path}?per_page=500", "ghs_test")
        assert (len(big[key]), headers.get("Link")) == (65, None), "all 65 fit in a page of 100"


async def test_per_page_is_capped_at_100_and_links_keep_the_query(fake: FakeGitHub) -> None:
    _runners(fake, 150)
    path = f"/orgs/{ORG}/actions/runners?per_page=500"
    status, body, headers = await call(fake, "GET", path, "ghs_test")
    assert len(body["runners"]) == 100
    nxt = links(headers)["next"]
    assert "per_page=500" in nxt
    assert "page=2" in nxt
    status, body, _ = await call(fake, "GET", nxt, "ghs_test")
    assert (status, len(body["runners"])) == (200, 50)
    status, body, headers = await call(fake, "GET", "/orgs/acme/actions/runner-groups", "ghs_test")
    assert status == 200
    assert len(body["runner_groups"]) == 1
    assert "Link" not in headers


async def test_each_page_has_its_own_etag(fake: FakeGitHub) -> None:
    _runners(fake, 40)
    path = f"/orgs/{ORG}/actions/runners"
    _, _, one = await call(fake, "GET", path, "ghs_test")
    _, _, two = await call(fake, "GET", path + "?page=2", "ghs_test")
    assert one["ETag"] != two["ETag"]
    status, _, _ = await call(fake, "GET", path + "?page=2", "ghs_test", headers={
        "If-None-Match": two["ETag"]})  # fmt: skip
    assert status == 304
    status, _, _ = await call(fake, "GET", path, "ghs_test", headers={
        "If-None-Match": two["ETag"]})  # fmt: skip
    assert status == 200


def _app_key() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public.decode()


async def _installation_token(gh: FakeGitHub, key: rsa.RSAPrivateKey, installation: int) -> str:
    now = int(time.time())
    app_jwt = jwt.encode({"iat": now - 60, "exp": now + 540, "iss": "42"}, key, "RS256")
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{gh.url}{API_PREFIX}/app/installations/{installation}/access_tokens",
            headers={"Authorization": f"Bearer {app_jwt}"},
        ) as resp,
    ):
        assert resp.status == 201
        token: str = (await resp.json())["token"]
        return token


async def test_installation_tokens_share_a_budget_and_a_pat_has_its_own(clock: Clock) -> None:
    key, public = _app_key()
    gh = FakeGitHub(app_public_key=public, limits=GitHubLimits(primary_per_hour=3), clock=clock)
    await gh.start()
    try:
        old, new = [await _installation_token(gh, key, 7) for _ in range(2)]
        other, pat = await _installation_token(gh, key, 8), gh.add_token()
        path = f"/orgs/{ORG}/actions/runners"
        used = [(await call(gh, "GET", path, t))[2]["x-ratelimit-used"] for t in (old, new, pat)]
        assert used == ["1", "2", "1"], "two tokens of installation 7 draw on one budget"
        assert (await call(gh, "GET", path, old))[2]["x-ratelimit-remaining"] == "0"

        status, body, headers = await call(gh, "GET", path, new)
        assert status == 403
        assert body["message"] == "API rate limit exceeded for installation ID 7."
        assert headers["x-ratelimit-remaining"] == "0"
        assert int(headers["retry-after"]) == 3600
        assert int(headers["x-ratelimit-reset"]) == int(clock.now + 3600)
        assert (await call(gh, "GET", path, other))[0] == 200, "installation 8 is separate"
        assert (await call(gh, "GET", path, pat))[0] == 200, "the PAT is a budget of its own"
        assert gh.primary_limited[RUNNERS] == 1
        assert gh.counted_by_budget == {
            "app:42": 3, "installation:7": 3, "installation:8": 1, "user:1": 2}  # fmt: skip

        clock.now += 3600  # the hour is over: a fresh budget
        status, _, headers = await call(gh, "GET", path, new)
        assert (status, headers["x-ratelimit-used"]) == (200, "1")
    finally:
        await gh.stop()


async def test_a_304_is_free_only_for_the_token_that_got_the_etag(fake: FakeGitHub) -> None:
    rotated = fake.add_token()
    fake.enqueue_job("acme/app", ["linux"])
    path = "/repos/acme/app/actions/runs?status=queued"
    _, _, first = await call(fake, "GET", path, "ghs_test")
    etag = {"If-None-Match": first["ETag"]}

    status, _, again = await call(fake, "GET", path, "ghs_test", headers=etag)
    assert (status, again["x-ratelimit-used"]) == (304, "1"), "same token: 304, free"
    status, body, other = await call(fake, "GET", path, rotated, headers=etag)
    assert (status, body["total_count"]) == (200, 1), "another token: a full answer"
    assert other["x-ratelimit-used"] == "1"
    assert other["ETag"] != first["ETag"]

    endpoint = f"GET {API_PREFIX}/repos/{{org}}/{{repo}}/actions/runs"
    assert fake.not_modified[endpoint] == 1
    assert fake.counted_by_endpoint[endpoint] == 2
    assert fake.counted_requests == 2
    assert sum(fake.requests.values()) == 3


async def _jits(gh: FakeGitHub, session: aiohttp.ClientSession, names: range) -> list[int]:
    path = f"/orgs/{ORG}/actions/runners/generate-jitconfig"
    replies = [
        await call(gh, "POST", path, "ghs_test", jit_body(f"r-{i}"), session=session) for i in names
    ]
    return [status for status, _, _ in replies]


async def test_the_181st_jit_config_in_a_minute_is_a_secondary_limit(
    fake: FakeGitHub, clock: Clock
) -> None:
    async with aiohttp.ClientSession() as s:
        assert set(await _jits(fake, s, range(100))) == {201}
        clock.now += 30
        assert set(await _jits(fake, s, range(100, 180))) == {201}
        clock.now += 1
        status, body, headers = await call(
            fake, "POST", f"/orgs/{ORG}/actions/runners/generate-jitconfig", "ghs_test",
            jit_body("r-180"), session=s,
        )  # fmt: skip
        assert status == 403
        assert body["message"].startswith("You have exceeded a secondary rate limit")
        assert headers["retry-after"] == "29", "the first 100 leave the window at t=60"
        assert headers["x-ratelimit-remaining"] != "0", "not the primary limit"
        assert (await call(fake, "GET", "/orgs/acme/actions/runners", "ghs_test", session=s))[
            0
        ] == 200, "other endpoints have their own points"

        clock.now += 29
        assert await _jits(fake, s, range(180, 181)) == [201]
    jit = f"POST {API_PREFIX}/orgs/{{org}}/actions/runners/generate-jitconfig"
    assert fake.secondary_limited[jit] == 1
    assert fake.counted_by_endpoint[jit] == 182, "secondary-limited requests count too"
    assert fake.summary()["secondary_limited"] == 1
    assert len(fake.jit_issued) == 181


async def test_limits_off_issue_jit_configs_without_limit(clock: Clock) -> None:
    gh = FakeGitHub(tokens={"ghs_test"}, limits=GitHubLimits.off(), clock=clock)
    await gh.start()
    try:
        async with aiohttp.ClientSession() as s:
            assert set(await _jits(gh, s, range(200))) == {201}
        assert gh.secondary_limited == {}
    finally:
        await gh.stop()


async def test_over_100_concurrent_requests_is_a_secondary_limit(fake: FakeGitHub) -> None:
    fake.latency = 1.0  # holds each admitted request open for a second
    assert fake.limits.latency == 1.0
    path = f"/orgs/{ORG}/actions/runners"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        held = [
            asyncio.create_task(call(fake, "GET", f"{path}?page={i}", "ghs_test", session=s))
            for i in range(1, 101)
        ]

        async def in_flight() -> int:
            return fake.budgets["user:1"].in_flight

        await wait_for(in_flight, lambda n: n == 100, what="100 requests in flight", within=10)
        status, body, headers = await call(fake, "GET", path, "ghs_test", session=s)
        assert status == 403, body
        assert body["message"].startswith("You have exceeded a secondary rate limit")
        assert int(headers["retry-after"]) >= 1
        assert {status for status, _, _ in await asyncio.gather(*held)} == {200}
    assert fake.secondary_limited[RUNNERS] == 1
    assert fake.counted_requests == 101


async def test_exhaust_rate_limit_spends_every_budget_even_later_ones(
    fake: FakeGitHub, clock: Clock
) -> None:
    fake.exhaust_rate_limit(reset_in=30)
    later = fake.add_token()
    for token in ("ghs_test", later):
        status, _body, headers = await call(fake, "GET", "/orgs/acme/actions/runners", token)
        assert (status, headers["x-ratelimit-remaining"], headers["retry-after"]) == (
            403, "0", "30")  # fmt: skip
    clock.now += 30
    assert (await call(fake, "GET", "/orgs/acme/actions/runners", later))[0] == 200


async def test_repositories_carry_every_field_github_requires(fake: FakeGitHub) -> None:
    golden = json.loads(GOLDEN.read_text())
    assert golden["package"] == "@octokit/openapi"
    assert golden["version"]
    fake.add_repositories(["acme/old", "acme/older"], archived=True)
    fake.add_repositories(["acme/live"])
    fake.enqueue_job("acme/app", ["linux"])  # auto-added, not archived
    _, body, _ = await call(fake, "GET", "/installation/repositories", "ghs_test")
    for repo in body["repositories"]:
        assert set(golden["repository"]) <= set(repo), set(golden["repository"]) - set(repo)
        assert set(golden["simple-user"]) <= set(repo["owner"])
    archived = {r["full_name"]: r["archived"] for r in body["repositories"]}
    assert archived == {"acme/app": False, "acme/live": False, "acme/old": True,
                        "acme/older": True}  # fmt: skip
    ids = [r["id"] for r in body["repositories"]]
    assert len(set(ids)) == 4


async def test_rate_limit_endpoint_is_free_and_counters_reset(fake: FakeGitHub) -> None:
    await call(fake, "GET", "/orgs/acme/actions/runners", "ghs_test")
    status, body, _ = await call(fake, "GET", "/rate_limit", "ghs_test")
    assert status == 200
    assert body["rate"]["used"] == 1
    assert body["rate"]["limit"] == 5000
    summary = fake.summary()
    assert summary["counted_requests"] == 1
    assert summary["requests"] == 2
    assert summary["by_endpoint"][RUNNERS]["counted"] == 1
    fake.reset_counters()
    assert fake.summary()["requests"] == 0
    assert fake.counted_requests == 0
    assert fake.rate.used == 1, "budgets are GitHub's state, not statistics"
