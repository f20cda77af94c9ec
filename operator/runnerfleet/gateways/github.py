"""The GitHub gateway: every call runnerfleet makes to GitHub goes through here (githubkit, async).

githubkit errors are mapped onto runnerfleet's own exceptions so upper layers never import
githubkit: `GitHubUnavailableError` (network, 5xx: retry with backoff), `RateLimitedError`
(403/429 with a reset: wait until then), `RunnerBusyError` (422 on delete: keep the runner),
`RunnerNameTakenError` (409), `GitHubAuthError` (401/403 otherwise: fix the credentials).

Layer: gateways. Network I/O to GitHub only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from githubkit import AppInstallationAuthStrategy, GitHub, TokenAuthStrategy
from githubkit.cache import MemCacheStrategy
from githubkit.exception import RateLimitExceeded, RequestError, RequestFailed
from githubkit_schemas.latest.models import (
    AuthenticationToken,
    OrgsOrgActionsRunnersGenerateJitconfigPostResponse201,
    OrgsOrgActionsRunnersGetResponse200,
    Runner,
)

from runnerfleet.gateways.github_budget import Budget, MeteredTransport, endpoint_of
from runnerfleet.models.github import GitHubCredentials, GitHubTarget

RUNNERS_PER_PAGE = 100
# githubkit keeps an App's JWT (by App id, 8 min) and its installation tokens (by App and
# installation id) in one process-wide cache. After a key rotation, a gateway made with the
# new key then sent the old key's cached JWT, refused (401) once the old key was deleted, for
# up to 8 minutes. One cache per private key (by digest): the gateways of one key still share
# one installation token, and a new key mints its own at once.
_APP_AUTH_CACHES: dict[str, MemCacheStrategy] = {}


def _app_auth_cache(private_key: str) -> MemCacheStrategy:
    digest = hashlib.sha256(private_key.encode()).hexdigest()
    return _APP_AUTH_CACHES.setdefault(digest, MemCacheStrategy())


class GitHubError(Exception):
    """Base of everything the gateway raises. Messages never contain credentials."""


class GitHubUnavailableError(GitHubError):
    """GitHub could not be reached or answered 5xx: transient."""


class RateLimitedError(GitHubError):
    """The rate limit is exhausted until `reset_at` (epoch seconds)."""

    def __init__(self, message: str, reset_at: float) -> None:
        super().__init__(message)
        self.reset_at = reset_at


class GitHubAuthError(GitHubError):
    """Credentials were refused (401) or lack permission (403 without rate limiting)."""


class RunnerBusyError(GitHubError):
    """GitHub refused to remove a runner because it is running a job (422)."""


class RunnerNameTakenError(GitHubError):
    """A runner with that name is already registered (409)."""


class GitHubNotFoundError(GitHubError):
    """The org, repo or enterprise does not exist or is not visible (404)."""


@dataclass(frozen=True)
class Registration:
    """A self-hosted runner as GitHub reports it."""

    id: int
    name: str
    online: bool
    busy: bool
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunnerPage:
    """One page of a conditional runner listing: its ETag and the registrations on it."""

    etag: str | None
    runners: tuple[Registration, ...]


@dataclass(frozen=True)
class RunnerSweep:
    """Every registration in the target scope, read page by page with ETags."""

    runners: tuple[Registration, ...]
    pages: dict[int, RunnerPage]
    paid: int  # pages GitHub answered in full (counted against the rate limit); 304s are free


@dataclass(frozen=True)
class RepositoryInfo:
    """An installation repository as the listener needs it."""

    owner: str
    name: str
    archived: bool  # an archived repository is read-only: it can have no new jobs
    pushed_at: float | None  # epoch seconds of the last push: a hint that runs may follow


@dataclass(frozen=True)
class QueuedJob:
    """A workflow job as the listener needs it."""

    id: int
    run_id: int
    labels: tuple[str, ...]
    status: str
    created_at: float | None
    started_at: float | None
    runner_name: str | None = None  # the runner running it (in_progress)


def _registration(runner: Any) -> Registration:
    return Registration(
        id=int(runner.id),
        name=str(runner.name),
        online=runner.status == "online",
        busy=bool(runner.busy),
        labels=tuple(str(label.name) for label in runner.labels),
    )


def _map_error(err: Exception, what: str) -> GitHubError:
    """githubkit/httpx error -> runnerfleet's GitHubError subclass (no credentials in text)."""
    if isinstance(err, RateLimitExceeded):
        return RateLimitedError(
            f"{what}: GitHub rate limit exceeded", time.time() + err.retry_after.total_seconds()
        )
    if isinstance(err, RequestFailed):
        status = err.response.status_code
        headers = err.response.headers
        if status in (403, 429) and headers.get("x-ratelimit-remaining") == "0":
            reset = float(headers.get("x-ratelimit-reset", time.time() + 60))
            return RateLimitedError(f"{what}: GitHub rate limit exceeded", reset)
        if status == 401 or status == 403:
            return GitHubAuthError(f"{what}: GitHub answered {status} (check the credentials)")
        if status == 404:
            return GitHubNotFoundError(f"{what}: GitHub answered 404")
        if status == 409:
            return RunnerNameTakenError(f"{what}: name already registered")
        if status >= 500:
            return GitHubUnavailableError(f"{what}: GitHub answered {status}")
        return GitHubError(f"{what}: GitHub answered {status}")
    if isinstance(err, RequestError):
        if isinstance(err.exc, RequestFailed | RateLimitExceeded):
            # GitHub refused the App's installation-token request (githubkit makes it inside
            # the auth flow and wraps its answer): a 401 there is a deleted or wrong key, not
            # an outage; it read as one, so the Secret was not re-read for 5 minutes.
            return _map_error(err.exc, what)
        return GitHubUnavailableError(f"{what}: {type(err.exc).__name__}")
    if isinstance(err, httpx.HTTPError):
        return GitHubUnavailableError(f"{what}: {type(err).__name__}")
    return GitHubError(f"{what}: {type(err).__name__}")


class GitHubGateway:
    """GitHub for one target (org, repo or enterprise) with one set of credentials."""

    def __init__(
        self,
        target: GitHubTarget,
        credentials: GitHubCredentials,
        on_request: Callable[[str, int], None] | None = None,
        budget: Budget | None = None,
        transport: MeteredTransport | None = None,
    ) -> None:
        self.target = target
        self._on_request = on_request  # (endpoint, status) of every queue read, for metrics
        # One budget and one connection pool per installation, shared by every gateway on it
        # (the caller passes them); a gateway made alone gets its own.
        self.budget = budget or (transport.budget if transport else Budget())
        self._transport = transport or MeteredTransport(self.budget)
        auth: TokenAuthStrategy | AppInstallationAuthStrategy
        cache: MemCacheStrategy | None = None  # githubkit's process-wide one
        if credentials.token:
            auth = TokenAuthStrategy(credentials.token)
        else:
            assert credentials.private_key
            assert credentials.installation_id is not None
            auth = AppInstallationAuthStrategy(
                credentials.app_id, credentials.private_key, credentials.installation_id
            )
            cache = _app_auth_cache(credentials.private_key)
        self._gh: GitHub[Any] = GitHub(
            auth,
            cache_strategy=cache,
            base_url=target.api_base,
            timeout=httpx.Timeout(10.0),
            http_cache=False,
            auto_retry=False,
            user_agent="runnerfleet",
            async_transport=self._transport,
        )
        self._group_ids: dict[str, int] = {}
        self.rate_limit_remaining: int | None = None
        # URL key -> (ETag, parsed value): conditional GETs answered 304 cost no rate limit.
        self._etag_cache: dict[str, tuple[str, Any]] = {}
        self.requests: dict[tuple[str, int], int] = {}  # (endpoint, status) -> count

    @property
    def rate_limited_until(self) -> float:
        """Epoch seconds until which GitHub said this budget is exhausted (0: it is not)."""
        return self.budget.limited_until

    async def close(self) -> None:
        """Close the connection pool (only for a gateway that owns it)."""
        await self._transport.close()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """Share one HTTP connection pool among the calls made inside (one reconcile round).

        Without it githubkit opens a client per request; it keeps the shared one per asyncio
        context, so concurrent rounds of different scale sets each get their own.
        """
        async with self._gh:
            yield

    def _fail(self, err: Exception, what: str) -> GitHubError:
        mapped = _map_error(err, what)
        if isinstance(mapped, RateLimitedError):
            self.budget.limited_until = max(self.budget.limited_until, mapped.reset_at)
        return mapped

    @property
    def _actions(self) -> Any:
        return self._gh.rest.actions

    async def runner_group_id(self, name: str) -> int:
        """The id of runner group `name` (Default is 1 everywhere; others are looked up once)."""
        if name == "Default":
            return 1
        if name in self._group_ids:
            return self._group_ids[name]
        if self.target.scope != "org":
            raise GitHubError(f"runner group {name!r}: only organisation scopes have named groups")
        try:
            resp = await self._actions.async_list_self_hosted_runner_groups_for_org(
                self.target.owner, per_page=100
            )
        except Exception as err:
            raise self._fail(err, "list runner groups") from err
        for group in resp.parsed_data.runner_groups:
            self._group_ids[group.name] = int(group.id)
        if name not in self._group_ids:
            raise GitHubNotFoundError(f"runner group {name!r} does not exist")
        return self._group_ids[name]

    async def registration_token(self) -> tuple[str, float]:
        """A runner registration token for the target scope and when it expires (epoch s).

        The runner scale-set client trades it for an Actions service admin token; it is a REST
        call, so it goes through this gateway's budget like every other.
        """
        t = self.target
        try:
            if t.scope == "repo":
                resp = await self._actions.async_create_registration_token_for_repo(t.owner, t.repo)
            elif t.scope == "enterprise":
                # No enterprise endpoint in githubkit's description (see create_jit_runner).
                resp = await self._gh.arequest(
                    "POST",
                    f"/enterprises/{t.owner}/actions/runners/registration-token",
                    response_model=AuthenticationToken,
                )
            else:
                resp = await self._actions.async_create_registration_token_for_org(t.owner)
        except Exception as err:
            raise self._fail(err, "create a registration token") from err
        data = resp.parsed_data
        return str(data.token), data.expires_at.timestamp()

    async def create_jit_runner(
        self, name: str, labels: list[str], group_id: int
    ) -> tuple[Registration, str]:
        """Register runner `name` just in time; returns it and its encoded JIT config."""
        t = self.target
        body = {"name": name, "runner_group_id": group_id, "labels": labels, "work_folder": "_work"}
        try:
            if t.scope == "repo":
                resp = await self._actions.async_generate_runner_jitconfig_for_repo(
                    t.owner, t.repo, data=body
                )
            elif t.scope == "enterprise":
                # githubkit's api.github.com description has no enterprise runner endpoints
                # (they are GHEC-only), so these go through its generic request with the
                # org-scope models, whose shapes are the same.
                resp = await self._gh.arequest(
                    "POST",
                    f"/enterprises/{t.owner}/actions/runners/generate-jitconfig",
                    json=body,
                    response_model=OrgsOrgActionsRunnersGenerateJitconfigPostResponse201,
                )
            else:
                resp = await self._actions.async_generate_runner_jitconfig_for_org(
                    t.owner, data=body
                )
        except Exception as err:
            raise self._fail(err, f"register runner {name}") from err
        data = resp.parsed_data
        return _registration(data.runner), str(data.encoded_jit_config)

    async def sweep_runners(self, previous: dict[int, RunnerPage] | None = None) -> RunnerSweep:
        """Every runner registered in the target scope: all pages, each a conditional GET
        against the ETag it had in `previous`, so an unchanged page costs no rate limit."""
        previous = previous or {}
        pages: dict[int, RunnerPage] = {}
        paid = 0
        page = 1
        while True:
            cached = previous.get(page)
            headers = {"If-None-Match": cached.etag} if cached and cached.etag else {}
            try:
                resp = await self._list_page(page, headers)
            except Exception as err:
                raise self._fail(err, "list runners") from err
            if resp.status_code == 304 and cached is not None:
                current = cached
            else:
                paid += 1
                data = resp.parsed_data
                regs = tuple(_registration(r) for r in data.runners)
                current = RunnerPage(resp.headers.get("etag"), regs)
            pages[page] = current
            if len(current.runners) < RUNNERS_PER_PAGE:
                break
            page += 1
        runners = tuple(r for p in pages.values() for r in p.runners)
        return RunnerSweep(runners, pages, paid)

    @property
    def _jit_endpoint(self) -> str:
        t = self.target
        path = {
            "repo": f"/repos/{t.owner}/{t.repo}/actions/runners/generate-jitconfig",
            "enterprise": f"/enterprises/{t.owner}/actions/runners/generate-jitconfig",
        }.get(t.scope, f"/orgs/{t.owner}/actions/runners/generate-jitconfig")
        return endpoint_of("POST", path)

    def jit_writes_available(self) -> int:
        """JIT registrations that fit in this minute under GitHub's secondary limit."""
        return self.budget.writes_available(self._jit_endpoint)

    def jit_free_at(self) -> float:
        """When the next JIT registration fits under the secondary limit (epoch seconds)."""
        return self.budget.write_free_at(self._jit_endpoint)

    async def runners_named(self, name: str) -> list[Registration]:
        """Registrations called `name` (one request: GitHub filters by name)."""
        try:
            resp = await self._list_page(1, {}, name=name)
        except Exception as err:
            raise self._fail(err, f"find runner {name}") from err
        return [_registration(r) for r in resp.parsed_data.runners]

    async def get_runner(self, runner_id: int) -> Registration | None:
        """One registration by id, or None if GitHub no longer has it (404)."""
        t = self.target
        path = {
            "repo": f"/repos/{t.owner}/{t.repo}/actions/runners/{runner_id}",
            "enterprise": f"/enterprises/{t.owner}/actions/runners/{runner_id}",
        }.get(t.scope, f"/orgs/{t.owner}/actions/runners/{runner_id}")
        try:
            resp = await self._gh.arequest("GET", path, response_model=Runner)
        except RequestFailed as err:
            if err.response.status_code == 404:
                return None
            raise self._fail(err, f"read runner {runner_id}") from err
        except Exception as err:
            raise self._fail(err, f"read runner {runner_id}") from err
        return _registration(resp.parsed_data)

    async def _list_page(self, page: int, headers: dict[str, str], name: str | None = None) -> Any:
        t = self.target
        params: dict[str, Any] = {"per_page": RUNNERS_PER_PAGE, "page": page}
        if name is not None:
            params["name"] = name
        path = {
            "repo": f"/repos/{t.owner}/{t.repo}/actions/runners",
            "enterprise": f"/enterprises/{t.owner}/actions/runners",
        }.get(t.scope, f"/orgs/{t.owner}/actions/runners")
        return await self._gh.arequest(
            "GET", path, params=params, headers=headers,
            response_model=OrgsOrgActionsRunnersGetResponse200,
        )  # fmt: skip

    async def delete_runner(self, runner_id: int, name: str) -> None:
        """Remove a registration. Already gone (404) counts as done; busy raises RunnerBusyError."""
        t = self.target
        try:
            if t.scope == "repo":
                await self._actions.async_delete_self_hosted_runner_from_repo(
                    t.owner, t.repo, runner_id
                )
            elif t.scope == "enterprise":
                await self._gh.arequest(
                    "DELETE", f"/enterprises/{t.owner}/actions/runners/{runner_id}"
                )
            else:
                await self._actions.async_delete_self_hosted_runner_from_org(t.owner, runner_id)
        except RequestFailed as err:
            if err.response.status_code == 404:
                return
            if err.response.status_code == 422:
                raise RunnerBusyError(f"runner {name} is running a job") from err
            raise self._fail(err, f"delete runner {name}") from err
        except Exception as err:
            raise self._fail(err, f"delete runner {name}") from err

    # ------------------------------------------------------------------ queue (listener)
    # Every list on the listener's path is read whole (all pages, following `Link: rel="next"`),
    # and every page is its own conditional GET: an unchanged page is a free 304. The ETag
    # cache is bounded (QUEUE_ETAG_CACHE_MAX entries, least recently used evicted).
    async def _pages(self, key: str, endpoint: str, call: Any, parse: Any) -> list[Any]:
        """All items of a paged list. `call(page, headers)` GETs one page of QUEUE_PER_PAGE;
        `parse(data)` returns that page's items and GitHub's `total_count` (or None)."""
        items: list[Any] = []
        for page in range(1, QUEUE_MAX_PAGES + 1):
            got, more = await self._page(
                f"{key}?page={page}", endpoint,
                lambda h, p=page: call(p, h), parse, len(items),
            )  # fmt: skip
            items.extend(got)
            if not more:
                break
        return items

    async def _page(
        self, key: str, endpoint: str, call: Any, parse: Any, seen: int
    ) -> tuple[list[Any], bool]:
        """One page: GET with If-None-Match; a 304 returns what that ETag was cached with.

        A transient failure (5xx, connection reset, timeout) is retried, QUEUE_ATTEMPTS in
        all with full-jitter backoff: a poll reads every page of every active run, and one
        failed page discards the repository's read, so at GitHub's usual few percent of
        errors a busy repository (a hundred runs) was almost never read whole."""
        cached = self._etag_cache.get(key)
        headers = {"If-None-Match": cached[0]} if cached else {}
        for attempt in range(QUEUE_ATTEMPTS):
            if attempt:
                await asyncio.sleep(random.uniform(0, min(5.0, 0.5 * 2**attempt)))  # noqa: S311
            try:
                resp = await call(headers)
                break
            except Exception as err:
                status = getattr(getattr(err, "response", None), "status_code", 0)
                self._count(endpoint, status)
                failure = self._fail(err, endpoint)
                if not isinstance(failure, GitHubUnavailableError) or attempt + 1 == QUEUE_ATTEMPTS:
                    raise failure from err
        self._count(endpoint, resp.status_code)
        remaining = resp.headers.get("x-ratelimit-remaining")
        if remaining is not None:
            self.rate_limit_remaining = int(remaining)
        if resp.status_code == 304 and cached is not None:
            self._remember(key, cached)
            value: tuple[list[Any], bool] = cached[1]
            return value
        items, total = parse(resp.parsed_data)
        value = (items, _has_next(resp, len(items), seen + len(items), total))
        etag = resp.headers.get("etag")
        if etag:
            self._remember(key, (etag, value))
        return value

    def _remember(self, key: str, entry: tuple[str, Any]) -> None:
        """Insert as most recently used; evict the least recently used beyond the bound."""
        self._etag_cache.pop(key, None)
        self._etag_cache[key] = entry
        while len(self._etag_cache) > QUEUE_ETAG_CACHE_MAX:
            del self._etag_cache[next(iter(self._etag_cache))]

    @property
    def etag_cache_size(self) -> int:
        return len(self._etag_cache)

    def _count(self, endpoint: str, status: int) -> None:
        self.requests[(endpoint, status)] = self.requests.get((endpoint, status), 0) + 1
        if self._on_request is not None:
            self._on_request(endpoint, status)

    async def installation_repositories(self) -> list[RepositoryInfo]:
        """Every repository the App installation can see (all pages)."""

        def parse(data: Any) -> tuple[list[RepositoryInfo], int | None]:
            return [
                RepositoryInfo(
                    owner=str(r.full_name).split("/", 1)[0], name=str(r.name),
                    archived=bool(getattr(r, "archived", False)),
                    pushed_at=r.pushed_at.timestamp() if r.pushed_at else None,
                )
                for r in data.repositories
            ], int(data.total_count)  # fmt: skip

        return await self._pages(
            "installation/repositories", "installation/repositories",
            lambda page, h: self._gh.rest.apps.async_list_repos_accessible_to_installation(
                per_page=QUEUE_PER_PAGE, page=page, headers=h),
            parse,
        )  # fmt: skip

    async def active_run_ids(self, owner: str, repo: str) -> list[int]:
        """Ids of the repo's queued and in-progress workflow runs (all pages of both lists)."""
        ids: list[int] = []
        for status in ("queued", "in_progress"):
            ids += await self._pages(
                f"runs/{owner}/{repo}/{status}", "repos/actions/runs",
                lambda page, h, st=status: self._actions.async_list_workflow_runs_for_repo(
                    owner, repo, status=st, per_page=QUEUE_PER_PAGE, page=page, headers=h),
                lambda data: ([int(r.id) for r in data.workflow_runs], int(data.total_count)),
            )  # fmt: skip
        return sorted(set(ids))

    async def run_jobs(self, owner: str, repo: str, run_id: int) -> list[QueuedJob]:
        """The latest attempt's jobs of one run (all pages)."""

        def parse(data: Any) -> tuple[list[QueuedJob], int | None]:
            return [
                QueuedJob(
                    id=int(j.id), run_id=int(j.run_id), labels=tuple(j.labels),
                    status=str(j.status),
                    created_at=j.created_at.timestamp() if j.created_at else None,
                    started_at=j.started_at.timestamp() if j.started_at else None,
                    runner_name=str(j.runner_name) if j.runner_name else None,
                )
                for j in data.jobs
            ], int(data.total_count)  # fmt: skip

        return await self._pages(
            f"jobs/{owner}/{repo}/{run_id}", "repos/actions/runs/jobs",
            lambda page, h: self._actions.async_list_jobs_for_workflow_run(
                owner, repo, run_id, filter_="latest", per_page=QUEUE_PER_PAGE, page=page,
                headers=h),
            parse,
        )  # fmt: skip


QUEUE_PER_PAGE = 100  # GitHub's maximum
QUEUE_MAX_PAGES = 1000  # a safety stop; 100,000 items of one list
QUEUE_ATTEMPTS = 3  # tries of one queue page on a transient failure (5xx, network)
QUEUE_ETAG_CACHE_MAX = 20_000  # pages; ~2 per repository plus one per active run


def _has_next(resp: Any, count: int, seen: int, total: int | None) -> bool:
    """GitHub's `Link: <...>; rel="next"` decides; without a Link header (one page only, or a
    server that does not page) a full page means more only while `total_count` says so."""
    if resp.headers.get("link") is not None:
        return "next" in resp.raw_response.links
    return count >= QUEUE_PER_PAGE and (total is None or seen < total)
