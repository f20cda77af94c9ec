"""A fake GitHub (REST, GHES-style under /api/v3) for tests, the demo and benchmarks.

It implements the endpoints runnerfleet calls with GitHub's status codes: App installation
tokens, runner groups, JIT runner configuration (org and repo scope), list/get/delete runners
(`422` while busy), installation repositories, queued workflow runs and their jobs.

It has GitHub's limits, on by default (sim/github_limits.py, `GitHubLimits`): a primary budget
per App installation and per plain token with x-ratelimit-* headers; ETags tied to the token
that got them, so a 304 is free only for that token; secondary limits (concurrency, points per
endpoint per minute); every list paginated with `per_page`/`page` and a `Link` header. Every
request is counted, by endpoint and budget. The rate limit can also be exhausted on purpose,
and the whole API made unreachable (503), to test retries.

Response bodies are shaped after githubkit's models (generated from GitHub's OpenAPI
description); tests/unit/test_fake_github_contract.py validates each one against them.

Simulated runners (sim/runners.py) drive the other side in-process: a runner goes online with
its JIT config, takes one matching queued job, and completes it.

Layer: tooling. Network server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import jwt
from aiohttp import web

from runnerfleet.sim.actions_service import ActionsServiceOptions, FakeActionsService
from runnerfleet.sim.faults import GitHubFaults, answered
from runnerfleet.sim.github_limits import GitHubLimits, Limiter, RateLimit, paginate
from runnerfleet.sim.webhook_replay import WebhookReplay

API_PREFIX = "/api/v3"
MAX_APP_KEYS = 25  # private keys a GitHub App may have at once
_DOCS = "https://docs.github.com/rest"
_CREDENTIAL = web.RequestKey("credential", str)  # the caller's token (ETags are tied to it)
_BUDGET = web.RequestKey("budget", RateLimit)  # the caller's primary budget
_LIMITS_DOCS = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"
_PRIMARY = _LIMITS_DOCS + "#about-primary-rate-limits"
_SECONDARY = _LIMITS_DOCS + "#about-secondary-rate-limits"
_SECONDARY_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FakeRunner:
    id: int
    name: str
    scope: str  # "org/acme" or "repo/acme/app"
    labels: list[str]
    runner_group_id: int
    status: str = "offline"
    busy: bool = False
    job_id: int | None = None
    created_at: float = field(default_factory=time.time)
    scale_set_id: int | None = None  # registered through this scale set's JIT config

    def body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "os": "Linux",
            "status": self.status,
            "busy": self.busy,
            "ephemeral": True,
            "runner_group_id": self.runner_group_id,
            "labels": [
                {"id": i + 1, "name": label, "type": "custom"}
                for i, label in enumerate(self.labels)
            ],
        }


@dataclass
class FakeJob:
    id: int
    run_id: int
    repo: str  # "acme/app"
    labels: list[str]
    duration: float
    status: str = "queued"
    conclusion: str | None = None
    runner_name: str | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    completed_at: float | None = None
    # Routing to a runner scale set (sim/actions_service.py); None: a job for REST runners.
    scale_set_id: int | None = None
    scale_set_state: str | None = None  # "available" (GHES offer), "acquired", "assigned"
    runner_request_id: int | None = None  # changes at each re-assignment
    scale_set_assigned_at: float | None = None  # by the fake's clock
    reassignments: int = 0


class FakeGitHub:
    """State and HTTP surface of the fake. Start with `await start()`, stop with `await stop()`."""

    def __init__(
        self,
        tokens: set[str] | None = None,
        app_public_key: str | None = None,
        limits: GitHubLimits | None = None,
        clock: Callable[[], float] = time.time,
        actions: ActionsServiceOptions | None = None,
        faults: GitHubFaults | None = None,
    ) -> None:
        self.limits = limits or GitHubLimits()
        # Injected faults (latency, errors, outages, throttling, bad pages): sim/faults.py.
        self.faults = faults or GitHubFaults(clock=clock)
        self.clock = clock  # budgets' hours, the secondary windows, reset times
        self._limiter = Limiter(self.limits, clock)
        self._token_budget: dict[str, tuple[str, str]] = {}  # token -> (budget key, name)
        self._user_ids = itertools.count(1)
        self.tokens: set[str] = set()
        for token in tokens or set():
            self._add_user_token(token)
        # The App's public keys (GitHub keeps up to 25): a JWT signed with any of them is
        # accepted; a deleted one's JWTs are refused (401), while the installation tokens
        # minted with it stay valid until they expire, as GitHub's docs say.
        self.app_public_keys: list[str] = [app_public_key] if app_public_key else []
        self.app_jwts: Counter[str] = Counter()  # key_id(public key) -> JWTs accepted
        self.installation_token_ttl = 3600.0  # seconds an installation token lives
        self._token_expiry: dict[str, float] = {}  # installation token -> expiry (clock)
        self.runners: dict[int, FakeRunner] = {}
        self.jobs: dict[int, FakeJob] = {}
        self.repositories: list[str] = []
        self.archived: set[str] = set()  # full names of archived repositories
        self.orgs: set[str] = set()  # orgs besides the owners of `repositories`
        self._repo_ids: dict[str, int] = {}
        self.unreachable = False
        # Request statistics (reset_counters() clears them; budgets are GitHub's state, not stats).
        self.requests: Counter[tuple[str, str, int]] = Counter()  # (method, route, status)
        self.counted_by_budget: Counter[str] = Counter()  # counted against the primary limit
        self.counted_by_endpoint: Counter[str] = Counter()  # "GET /api/v3/..." -> counted
        self.not_modified: Counter[str] = Counter()  # endpoint -> 304s (free)
        self.primary_limited: Counter[str] = Counter()  # endpoint -> 403 (primary budget spent)
        self.secondary_limited: Counter[str] = Counter()  # endpoint -> 403 (secondary limit)
        self.jit_issued: list[str] = []
        self.jit_configs: list[str] = []  # every encoded JIT config handed out (log scans)
        self.deleted_runners: list[str] = []
        self._ids = itertools.count(1000)
        # Webhook subscription (as an org webhook for `workflow_job`): URL and secret.
        self.webhook_url: str | None = None
        self.webhook_secret: bytes = b""
        self.deliveries: Counter[int] = Counter()  # HTTP status -> count
        self.webhook_replay: WebhookReplay | None = None  # replays and reorders (chaos tests)
        self._pending: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0
        # The Actions service (runner scale sets), served by this host: always on.
        self.actions = FakeActionsService(self, actions)

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """Base URL as a GHES host: configUrl `{url}/ORG` maps to API `{url}/api/v3`."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        app = web.Application(middlewares=[self._middleware])
        self._routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.actions.start()

    async def stop(self) -> None:
        self.actions.close()  # ends long-polls, so the server's shutdown does not wait on them
        for task in list(self._pending):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ limits (in-process)
    @property
    def latency(self) -> float:
        """Seconds every admitted API request takes (an alias of `limits.latency`)."""
        return self.limits.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self.limits = replace(self.limits, latency=seconds)
        self._limiter.limits = self.limits

    @property
    def rate(self) -> RateLimit:
        """The primary budget when there is one; with several, all of them summed."""
        return self._limiter.aggregate()

    @property
    def budgets(self) -> dict[str, RateLimit]:
        """Primary budgets by key: "installation:7", "user:1", "app:42"."""
        return dict(self._limiter.budgets)

    @property
    def counted_requests(self) -> int:
        """Requests counted against a primary limit since the last reset_counters()."""
        return sum(self.counted_by_budget.values())

    def exhaust_rate_limit(self, reset_in: float) -> None:
        """Spend every budget (also ones created later) until reset_in seconds from now."""
        self._limiter.exhaust(reset_in)

    def reset_counters(self) -> None:
        """Zero the request statistics (not the budgets: those are GitHub's, not ours)."""
        for counter in (
            self.requests,
            self.counted_by_budget,
            self.counted_by_endpoint,
            self.not_modified,
            self.primary_limited,
            self.secondary_limited,
            self.actions.requests,
        ):
            counter.clear()  # fmt: skip

    # ------------------------------------------------------------------ App keys (in-process)
    @property
    def app_public_key(self) -> str | None:
        """The newest App public key (None: the App has none)."""
        return self.app_public_keys[-1] if self.app_public_keys else None

    @app_public_key.setter
    def app_public_key(self, public: str | None) -> None:
        self.app_public_keys = [public] if public else []

    def rotate_app_key(self, public: str) -> None:
        """A new private key generated for the App (its public half given): JWTs signed with
        it are accepted from now on, alongside the older keys'."""
        if len(self.app_public_keys) >= MAX_APP_KEYS:
            raise ValueError(f"an App has at most {MAX_APP_KEYS} private keys")
        self.app_public_keys.append(public)

    def revoke_app_key(self, public: str) -> None:
        """The key deleted from the App: JWTs signed with it are refused (401) from now on;
        installation tokens minted with it stay valid until they expire."""
        self.app_public_keys.remove(public)

    @staticmethod
    def key_id(public: str) -> str:
        """A short, non-secret name for a public key (the keys of `app_jwts`)."""
        return hashlib.sha256(public.encode()).hexdigest()[:12]

    # ------------------------------------------------------------------ control (in-process)
    def add_token(self) -> str:
        """A new plain token (a user's PAT): a budget of its own."""
        token = "ghs_" + secrets.token_hex(18)
        self._add_user_token(token)
        return token

    def _add_user_token(self, token: str) -> None:
        user = next(self._user_ids)
        self.tokens.add(token)
        self._token_budget[token] = (f"user:{user}", f"user ID {user}")
        self._limiter.budget(*self._token_budget[token])

    def add_repositories(self, names: Iterable[str], archived: bool = False) -> None:
        """Repositories ("acme/app") the installation can see; `archived` marks them archived."""
        for name in names:
            if name not in self._repo_ids:
                self._repo_ids[name] = len(self._repo_ids) + 1
                self.repositories.append(name)
            if archived:
                self.archived.add(name)
            else:
                self.archived.discard(name)

    def enqueue_job(self, repo: str, labels: list[str], duration: float = 1.0) -> FakeJob:
        job = FakeJob(next(self._ids), next(self._ids), repo, list(labels), duration)
        self.jobs[job.id] = job
        if repo not in self._repo_ids:
            self.add_repositories([repo])
        self._deliver("queued", job)
        self.actions.route(job)  # to a scale set whose labels cover the job's, if any
        return job

    def known_orgs(self) -> set[str]:
        """Orgs this GitHub has: `orgs` plus every repository's owner."""
        return self.orgs | {name.partition("/")[0] for name in self.repositories}

    def register_runner(
        self,
        name: str,
        scope: str,
        labels: list[str],
        group: int,
        scale_set_id: int | None = None,
    ) -> FakeRunner:
        """A new registration (REST JIT or a scale set's generatejitconfig), counted as issued."""
        runner = FakeRunner(next(self._ids), name, scope, list(labels), group)
        runner.scale_set_id = scale_set_id
        self.runners[runner.id] = runner
        self.jit_issued.append(name)
        return runner

    def runner_by_name(self, name: str) -> FakeRunner | None:
        return next((r for r in self.runners.values() if r.name == name), None)

    def runner_from_jit(self, encoded: str) -> FakeRunner | None:
        """What a real runner does with `--jitconfig`: find its registration, or None."""
        try:
            data = json.loads(base64.b64decode(encoded))
            if ".runner" in data:  # a scale set's JIT config: the runner's files, base64 each
                files = json.loads(base64.b64decode(data[".runner"]))
                data = {"runner_id": files["agentId"], "runner_name": files["agentName"]}
        except (ValueError, KeyError, TypeError):
            return None
        runner = self.runners.get(int(data.get("runner_id", -1)))
        if runner is None or runner.name != data.get("runner_name"):
            return None
        return runner

    def go_online(self, runner: FakeRunner) -> None:
        runner.status = "online"

    def acquire_job(self, runner: FakeRunner) -> FakeJob | None:
        """Assign the oldest queued job whose labels are all on the runner (GitHub's rule).

        A scale-set runner takes only jobs assigned to its scale set; a REST runner never
        takes a job routed to a scale set."""
        if runner.status != "online" or runner.busy:
            return None
        have = {label.lower() for label in runner.labels}
        for job in sorted(self.jobs.values(), key=lambda j: j.id):
            if job.status != "queued" or not self.actions.may_take(runner, job):
                continue
            if runner.scale_set_id is not None or {lb.lower() for lb in job.labels} <= have:
                job.status, job.runner_name, job.started_at = (
                    "in_progress",
                    runner.name,
                    time.time(),
                )
                runner.busy, runner.job_id = True, job.id
                self._deliver("in_progress", job)
                self.actions.job_started(runner, job)
                return job
        return None

    def complete_job(self, runner: FakeRunner, conclusion: str = "success") -> None:
        """The job ends; an ephemeral (JIT) runner then unregisters itself, as on GitHub."""
        job = self.jobs.get(runner.job_id or -1)
        if job is not None:
            job.status, job.conclusion, job.completed_at = "completed", conclusion, time.time()
            self._deliver("completed", job)
            self.actions.job_finished(runner, job)
        self.runners.pop(runner.id, None)

    def runner_lost(self, runner: FakeRunner) -> None:
        """GitHub noticed that a runner died mid-job: the job fails (JobCompleted "failed" for
        a scale set) and the registration stays, offline. No webhook, as before."""
        job = self.jobs.get(runner.job_id or -1)
        if job is not None and job.status != "completed":
            job.status, job.conclusion, job.completed_at = "completed", "failure", time.time()
            self.actions.job_finished(runner, job)
        runner.busy, runner.status, runner.job_id = False, "offline", None

    def _deliver(self, action: str, job: FakeJob) -> None:
        """POST a signed `workflow_job` delivery, as GitHub does, without blocking the caller."""
        if self.webhook_url is None:
            return
        payload = {
            "action": action,
            "workflow_job": _job(self.url, job),
            "repository": self._repository(job.repo),
            "sender": _user("github-actions", self.url),
        }
        body = json.dumps(payload).encode()
        digest = hmac.new(self.webhook_secret, body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "workflow_job",
            "X-GitHub-Delivery": secrets.token_hex(8),
            "X-Hub-Signature-256": f"sha256={digest}",
        }
        delays = [0.0]
        if self.webhook_replay is not None:  # copies with one X-GitHub-Delivery, reordered
            delays = self.webhook_replay.delays(
                headers["X-GitHub-Delivery"], job.id, action, time.time()
            )
        for delay in delays:
            post = self._post(self.webhook_url, body, headers, delay)
            task = asyncio.get_running_loop().create_task(post)
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _post(self, url: str, body: bytes, headers: dict[str, str], delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)  # the injected delivery delay (WebhookReplay)
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
                ) as resp,
            ):
                self.deliveries[resp.status] += 1
        except (aiohttp.ClientError, TimeoutError):
            self.deliveries[0] += 1  # GitHub records a failed delivery and moves on

    def summary(self) -> dict[str, Any]:
        states = Counter(j.status for j in self.jobs.values())
        endpoints = set(self.counted_by_endpoint) | set(self.not_modified)
        endpoints |= set(self.primary_limited) | set(self.secondary_limited)
        return {
            "jobs": dict(states),
            "runners": len(self.runners),
            "online": sum(1 for r in self.runners.values() if r.status == "online"),
            "busy": sum(1 for r in self.runners.values() if r.busy),
            "requests": sum(self.requests.values()),
            "rate_limited_requests": self.counted_requests,  # old name of counted_requests
            "counted_requests": self.counted_requests,
            "counted_by_budget": dict(self.counted_by_budget),
            "not_modified": sum(self.not_modified.values()),
            "primary_limited": sum(self.primary_limited.values()),
            "secondary_limited": sum(self.secondary_limited.values()),
            "by_endpoint": {
                endpoint: {
                    "counted": self.counted_by_endpoint[endpoint],
                    "not_modified": self.not_modified[endpoint],
                    "primary_limited": self.primary_limited[endpoint],
                    "secondary_limited": self.secondary_limited[endpoint],
                }
                for endpoint in sorted(endpoints)
            },
            "actions_service": self.actions.summary(),  # never counted against REST limits
        }

    # ------------------------------------------------------------------ HTTP plumbing
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/_sim"):
            sim: web.StreamResponse = await handler(request)
            return sim
        if self.actions.handles(request.path):  # its own auth and counters, no REST limits
            return await self.actions.serve(request, handler)
        route = request.match_info.route.resource
        template = route.canonical if route is not None else request.path
        resp = await self._answer(request, handler, f"{request.method} {template}")
        self.requests[(request.method, template, answered(request, resp))] += 1
        return resp

    async def _answer(
        self, request: web.Request, handler: Any, endpoint: str
    ) -> web.StreamResponse:
        """GitHub's order: reachable, authenticated, primary budget, secondary limits, handler."""
        if self.unreachable:
            await self._network()
            return self._error(503, "Service unavailable (fake GitHub set unreachable)")
        if (fault := self.faults.draw("rest")) is not None:  # before auth, as an outage is
            await self._network()
            return await self.faults.apply(request, fault, "rest")
        caller = self._caller(request)
        if isinstance(caller, web.Response):
            await self._network()
            return caller
        key, budget = caller
        resp: web.StreamResponse
        if (retry := self._limiter.primary_retry_after(budget)) is not None:
            self.primary_limited[endpoint] += 1
            resp = self._refusal(f"API rate limit exceeded for {budget.name}.", retry, _PRIMARY)
        elif (retry := self._limiter.secondary_retry_after(key, budget, endpoint)) is not None:
            self.secondary_limited[endpoint] += 1
            self._count(key, budget, endpoint)  # GitHub counts these against the primary too
            resp = self._refusal(_SECONDARY_MESSAGE, retry, _SECONDARY)
        else:
            budget.in_flight += 1
            try:
                await self._network()
                resp = await handler(request)
            finally:
                budget.in_flight -= 1
            if resp.status == 304:
                self.not_modified[endpoint] += 1
            elif endpoint != f"GET {API_PREFIX}/rate_limit":  # free on GitHub
                self._count(key, budget, endpoint)
        resp.headers.update(budget.headers())
        return resp

    async def _network(self) -> None:
        if seconds := self.limits.latency + self.faults.delay():
            await asyncio.sleep(seconds)  # simulated network and server time

    def _count(self, key: str, budget: RateLimit, endpoint: str) -> None:
        budget.used += 1
        self.counted_by_budget[key] += 1
        self.counted_by_endpoint[endpoint] += 1

    def _caller(self, request: web.Request) -> tuple[str, RateLimit] | web.Response:
        """The caller's budget (also kept on the request), or the 401 GitHub would answer."""
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        if request.path.startswith(f"{API_PREFIX}/app/"):
            app_id = self._app_id(credential) if scheme.lower() == "bearer" else None
            if app_id is None:
                return self._error(401, "A JSON web token could not be decoded")
            key, name = f"app:{app_id}", f"app ID {app_id}"
        elif scheme.lower() not in ("token", "bearer") or credential not in self.tokens:
            return self._error(401, "Bad credentials")
        elif self._token_expiry.get(credential, float("inf")) < self.clock():
            return self._error(401, "Bad credentials")  # GitHub's answer to an expired token
        else:
            if credential not in self._token_budget:  # put into `tokens` directly
                self._add_user_token(credential)
            key, name = self._token_budget[credential]
        budget = self._limiter.budget(key, name)
        request[_CREDENTIAL], request[_BUDGET] = credential, budget
        return key, budget

    def _refusal(self, message: str, retry: int, docs: str) -> web.Response:
        resp = web.json_response({"message": message, "documentation_url": docs}, status=403)
        resp.headers["retry-after"] = str(retry)
        return resp

    def _app_id(self, token: str) -> str | None:
        """The App id (`iss`) of a JWT valid under one of the App's keys, else None."""
        for public in self.app_public_keys:
            try:
                claims = jwt.decode(token, public, algorithms=["RS256"])
            except jwt.PyJWTError:
                continue
            if not claims.get("iss") or claims.get("exp", 0) - claims.get("iat", 0) > 660:
                return None
            self.app_jwts[self.key_id(public)] += 1
            return str(claims["iss"])
        return None

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response(
            {"message": message, "documentation_url": _DOCS, "status": str(status)},
            status=status,
        )

    def _json(
        self, request: web.Request, body: Any, headers: dict[str, str] | None = None
    ) -> web.Response:
        """JSON with a strong ETag tied to the caller's token, as on GitHub: `If-None-Match`
        with the same token on an unchanged body gets a (free) 304; another token's ETag never
        matches, so after a token rotation the first request per URL is paid again."""
        text = json.dumps(body, sort_keys=True)
        seed = f"{request.get(_CREDENTIAL, '')}\n{text}".encode()
        etag = '"' + hashlib.sha256(seed).hexdigest()[:32] + '"'
        headers = {"ETag": etag, **(headers or {})}
        if request.method == "GET" and request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(text=text, content_type="application/json", headers=headers)

    def _list(
        self, request: web.Request, key: str, items: list[Any], extra: dict[str, Any] | None = None
    ) -> web.Response:
        """One page of `items` under `key`, with `total_count` and GitHub's `Link` header."""
        page = paginate(items, request.query, self.limits)
        served, linked = self.faults.page(key, page.items)  # a stale or truncated page
        body = {"total_count": len(items), key: served, **(extra or {})}
        links = [
            f'<{request.url.update_query(page=str(number))}>; rel="{rel}"'
            for rel, number in page.links().items()
            if linked
        ]
        return self._json(request, body, {"Link": ", ".join(links)} if links else None)

    def _routes(self, app: web.Application) -> None:
        p = API_PREFIX
        r = app.router
        r.add_post(p + "/app/installations/{installation_id}/access_tokens", self._access_token)
        r.add_get(p + "/orgs/{org}/actions/runner-groups", self._runner_groups)
        for scope in ("/orgs/{org}", "/repos/{org}/{repo}", "/enterprises/{enterprise}"):
            r.add_post(p + scope + "/actions/runners/generate-jitconfig", self._jitconfig)
            r.add_get(p + scope + "/actions/runners", self._list_runners)
            r.add_get(p + scope + "/actions/runners/{runner_id}", self._get_runner)
            r.add_delete(p + scope + "/actions/runners/{runner_id}", self._delete_runner)
            r.add_post(p + scope + "/actions/runners/registration-token", self._registration_token)
        r.add_get(p + "/installation/repositories", self._installation_repos)
        r.add_get(p + "/repos/{org}/{repo}/actions/runs", self._list_runs)
        r.add_get(p + "/repos/{org}/{repo}/actions/runs/{run_id}/jobs", self._list_jobs)
        r.add_get(p + "/rate_limit", self._rate_limit)
        self.actions.add_routes(r)
        r.add_get("/_sim/summary", self._sim_summary)
        r.add_post("/_sim/jobs", self._sim_enqueue)
        r.add_get("/_sim/jobs", self._sim_jobs)

    @staticmethod
    def _scope(request: web.Request) -> str:
        info = request.match_info
        if "enterprise" in info:
            return f"enterprise/{info['enterprise']}"
        return f"repo/{info['org']}/{info['repo']}" if "repo" in info else f"org/{info['org']}"

    # ------------------------------------------------------------------ handlers
    async def _access_token(self, request: web.Request) -> web.Response:
        """Every token minted for one installation draws on that installation's one budget."""
        installation = request.match_info["installation_id"]
        token = "ghs_" + secrets.token_hex(18)
        self.tokens.add(token)
        self._token_budget[token] = (f"installation:{installation}",
                                     f"installation ID {installation}")  # fmt: skip
        expires_at = self._token_expiry[token] = self.clock() + self.installation_token_ttl
        body = {
            "token": token,
            "expires_at": _iso(expires_at),
            "permissions": {"organization_self_hosted_runners": "write", "actions": "read"},
            "repository_selection": "all",
        }
        return web.json_response(body, status=201)

    async def _runner_groups(self, request: web.Request) -> web.Response:
        org = request.match_info["org"]
        group = {
            "id": 1,
            "name": "Default",
            "visibility": "all",
            "default": True,
            "runners_url": f"{self.url}{API_PREFIX}/orgs/{org}/actions/runner-groups/1/runners",
            "inherited": False,
            "allows_public_repositories": False,
        }
        return self._list(request, "runner_groups", [group])

    async def _jitconfig(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "Problems parsing JSON")
        name, labels = body.get("name"), body.get("labels")
        group = body.get("runner_group_id")
        if not isinstance(name, str) or not name or not isinstance(group, int):
            return self._error(422, "Invalid request: name and runner_group_id are required.")
        if not isinstance(labels, list) or not 1 <= len(labels) <= 100:
            return self._error(422, "Invalid request: labels must have 1 to 100 entries.")
        if self.runner_by_name(name) is not None:
            return self._error(409, "Already exists - A runner with the same name already exists.")
        runner = self.register_runner(name, self._scope(request), list(labels), group)
        payload = {"runner_id": runner.id, "runner_name": name, "nonce": secrets.token_hex(8)}
        encoded = base64.b64encode(json.dumps(payload).encode()).decode()
        self.jit_configs.append(encoded)  # for log scans in tests
        return web.json_response(
            {"runner": runner.body(), "encoded_jit_config": encoded}, status=201
        )

    async def _registration_token(self, request: web.Request) -> web.Response:
        """A runner registration token (1 h) for this scope: the scale-set protocol's first
        step (sim/actions_service.py takes it at /api/v3/actions/runner-registration)."""
        token, expires_at = self.actions.issue_registration_token(self._scope(request))
        return web.json_response({"token": token, "expires_at": _iso(expires_at)}, status=201)

    async def _list_runners(self, request: web.Request) -> web.Response:
        scope = self._scope(request)
        wanted = request.query.get("name")
        runners = [
            r.body()
            for r in sorted(self.runners.values(), key=lambda r: r.id)
            if r.scope == scope and (wanted is None or r.name == wanted)
        ]
        return self._list(request, "runners", runners)

    def _find(self, request: web.Request) -> FakeRunner | None:
        with contextlib.suppress(ValueError):
            runner = self.runners.get(int(request.match_info["runner_id"]))
            if runner is not None and runner.scope == self._scope(request):
                return runner
        return None

    async def _get_runner(self, request: web.Request) -> web.Response:
        runner = self._find(request)
        if runner is None:
            return self._error(404, "Not Found")
        return self._json(request, runner.body())

    async def _delete_runner(self, request: web.Request) -> web.Response:
        runner = self._find(request)
        if runner is None:
            return self._error(404, "Not Found")
        if runner.busy:
            return web.json_response(
                {
                    "message": f'Bad request - Runner "{runner.name}" is still running a job',
                    "documentation_url": _DOCS,
                },
                status=422,
            )
        del self.runners[runner.id]
        self.deleted_runners.append(runner.name)
        return web.Response(status=204)

    async def _installation_repos(self, request: web.Request) -> web.Response:
        repos = [self._repository(full) for full in sorted(self.repositories)]
        return self._list(request, "repositories", repos, {"repository_selection": "all"})

    def _repository(self, full_name: str) -> dict[str, Any]:
        repo_id = self._repo_ids.setdefault(full_name, len(self._repo_ids) + 1)
        return _repository(repo_id, full_name, self.url, full_name in self.archived)

    async def _list_runs(self, request: web.Request) -> web.Response:
        repo = f"{request.match_info['org']}/{request.match_info['repo']}"
        status = request.query.get("status")
        runs = {}
        for job in self.jobs.values():
            if job.repo == repo and (status is None or job.status == status):
                runs[job.run_id] = job
        ordered = sorted(runs.values(), key=lambda j: j.run_id)
        body = [_run(self.url, job, self._repository(repo)) for job in ordered]
        return self._list(request, "workflow_runs", body)

    async def _list_jobs(self, request: web.Request) -> web.Response:
        run_id = int(request.match_info["run_id"])
        jobs = sorted((j for j in self.jobs.values() if j.run_id == run_id), key=lambda j: j.id)
        return self._list(request, "jobs", [_job(self.url, j) for j in jobs])

    async def _rate_limit(self, request: web.Request) -> web.Response:
        """The caller's own budget (this request is free, as on GitHub)."""
        budget = request[_BUDGET]
        core = {
            "limit": budget.limit,
            "remaining": budget.remaining,
            "used": budget.used,
            "reset": int(budget.reset_at),
        }
        return web.json_response({"resources": {"core": core}, "rate": core})

    async def _sim_summary(self, request: web.Request) -> web.Response:
        return web.json_response(self.summary())

    async def _sim_enqueue(self, request: web.Request) -> web.Response:
        """Control API: {"repo": "acme/app", "labels": [...], "duration": 2.0, "count": 1}."""
        body = await request.json()
        jobs = [
            self.enqueue_job(body["repo"], body["labels"], float(body.get("duration", 1.0)))
            for _ in range(int(body.get("count", 1)))
        ]
        return web.json_response({"ids": [j.id for j in jobs]}, status=201)

    async def _sim_jobs(self, request: web.Request) -> web.Response:
        return web.json_response([
            {"id": j.id, "repo": j.repo, "labels": j.labels, "status": j.status,
             "conclusion": j.conclusion, "runner_name": j.runner_name}
            for j in self.jobs.values()
        ])  # fmt: skip


_REPO_LINKS = (
    "archive", "assignees", "blobs", "branches", "collaborators", "comments", "commits",
    "compare", "contents", "contributors", "deployments", "downloads", "events", "forks",
    "git_commits", "git_refs", "git_tags", "issue_comment", "issue_events", "issues", "keys",
    "labels", "languages", "merges", "milestones", "notifications", "pulls", "releases",
    "stargazers", "statuses", "subscribers", "subscription", "tags", "teams", "trees", "hooks",
)  # fmt: skip
_USER_LINKS = (
    "followers", "following", "gists", "starred", "subscriptions", "organizations", "repos",
    "events", "received_events",
)  # fmt: skip
_EPOCH = "2026-01-01T00:00:00Z"


def _repository(
    repo_id: int, full_name: str, base: str = "https://github.example", archived: bool = False
) -> dict[str, Any]:
    """A repository as GitHub lists it: every field the `repository` schema requires
    (tests/unit/golden/repository_required.json)."""
    owner, name = full_name.split("/", 1)
    api = f"{base}{API_PREFIX}/repos/{full_name}"
    body: dict[str, Any] = {
        "id": repo_id,
        "node_id": f"R_{repo_id}",
        "name": name,
        "full_name": full_name,
        "private": True,
        "owner": _user(owner, base),
        "html_url": f"{base}/{full_name}",
        "description": None,
        "fork": False,
        "url": api,
        "git_url": f"git://github.example/{full_name}.git",
        "ssh_url": f"git@github.example:{full_name}.git",
        "clone_url": f"{base}/{full_name}.git",
        "svn_url": f"{base}/{full_name}",
        "mirror_url": None,
        "homepage": None,
        "language": None,
        "license": None,
        "forks": 0,
        "forks_count": 0,
        "stargazers_count": 0,
        "watchers_count": 0,
        "watchers": 0,
        "size": 0,
        "default_branch": "main",
        "open_issues_count": 0,
        "open_issues": 0,
        "has_issues": True,
        "has_projects": True,
        "has_wiki": True,
        "has_pages": False,
        "has_downloads": True,
        "archived": archived,
        "disabled": False,
        "pushed_at": _EPOCH,
        "created_at": _EPOCH,
        "updated_at": _EPOCH,
    }
    body.update({f"{link}_url": f"{api}/{link}" for link in _REPO_LINKS})
    return body


def _user(login: str, base: str) -> dict[str, Any]:
    api = f"{base}{API_PREFIX}/users/{login}"
    body: dict[str, Any] = {
        "login": login,
        "id": 1,
        "node_id": "O_1",
        "type": "Organization",
        "site_admin": False,
        "avatar_url": f"{base}/avatars/{login}",
        "gravatar_id": "",
        "url": api,
        "html_url": f"{base}/{login}",
    }
    body.update({f"{link}_url": f"{api}/{link}" for link in _USER_LINKS})
    return body


def _run(base: str, job: FakeJob, repo: dict[str, Any]) -> dict[str, Any]:
    run_api = f"{base}{API_PREFIX}/repos/{job.repo}/actions/runs/{job.run_id}"
    return {
        "id": job.run_id,
        "name": "ci",
        "display_title": "ci",
        "node_id": f"WFR_{job.run_id}",
        "head_branch": "main",
        "head_sha": "0" * 40,
        "path": ".github/workflows/ci.yml",
        "run_number": job.run_id,
        "event": "push",
        "status": job.status,
        "conclusion": job.conclusion,
        "workflow_id": 1,
        "url": run_api,
        "html_url": f"{base}/{job.repo}/actions/runs/{job.run_id}",
        "jobs_url": f"{run_api}/jobs",
        "logs_url": f"{run_api}/logs",
        "check_suite_url": f"{base}{API_PREFIX}/repos/{job.repo}/check-suites/{job.run_id}",
        "artifacts_url": f"{run_api}/artifacts",
        "cancel_url": f"{run_api}/cancel",
        "rerun_url": f"{run_api}/rerun",
        "workflow_url": f"{base}{API_PREFIX}/repos/{job.repo}/actions/workflows/1",
        "pull_requests": [],
        "head_commit": None,
        "repository": repo,
        "head_repository": repo,
        "created_at": _iso(job.created_at),
        "updated_at": _iso(job.completed_at or job.started_at or job.created_at),
    }


def _job(base: str, job: FakeJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "run_id": job.run_id,
        "run_url": f"{base}{API_PREFIX}/repos/{job.repo}/actions/runs/{job.run_id}",
        "node_id": f"CR_{job.id}",
        "head_sha": "0" * 40,
        "head_branch": "main",
        "url": f"{base}{API_PREFIX}/repos/{job.repo}/actions/jobs/{job.id}",
        "html_url": f"{base}/{job.repo}/actions/runs/{job.run_id}/job/{job.id}",
        "status": job.status,
        "conclusion": job.conclusion,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at or job.created_at),
        "completed_at": _iso(job.completed_at) if job.completed_at else None,
        "name": "build",
        "steps": [],
        "check_run_url": f"{base}{API_PREFIX}/repos/{job.repo}/check-runs/{job.id}",
        "labels": job.labels,
        "runner_id": None,
        "runner_name": job.runner_name,
        "runner_group_id": 1 if job.runner_name else None,
        "runner_group_name": "Default" if job.runner_name else None,
        "workflow_name": "ci",
        "run_attempt": 1,
    }


__all__ = [
    "API_PREFIX",
    "ActionsServiceOptions",
    "FakeGitHub",
    "FakeJob",
    "FakeRunner",
    "GitHubLimits",
    "RateLimit",
]
