"""The runner scale-set client: every call runnerfleet makes to GitHub's Actions service.

The Actions service is the other half of GitHub that runners and autoscalers talk to (GitHub's
own Go client is actions/scaleset). Access goes in two steps: a runner registration token
(REST, supplied by the caller so it is counted against the one REST budget) is traded at
`{api}/actions/runner-registration` (`RemoteAuth`) for the service's URL and an admin JWT;
that JWT then authorises scale sets, sessions, JIT configs and agents. A message session has
its own queue token for the long-poll, acknowledgements and `acquirejobs`.

Both tokens are refreshed here, transparently: the admin token before it expires (less than a
minute left) and once on a 401; the queue token by PATCHing the session on a 401. Transient
failures (5xx, connection errors, timeouts) are retried with exponential backoff and full
jitter; 4xx are not. A 429 (the service throttling us) is not retried either: its
`Retry-After` is remembered, and until then every call fails at once with `RateLimitedError`
without a request (as actions/scaleset waits out Retry-After), so callers back off and report
it, and a throttled fleet sends nothing. Errors are mapped by status and `typeKey` onto
runnerfleet's GitHub exceptions, so callers never see HTTP. No token or JIT config ever
reaches a log line, an exception message or a repr.

Layer: gateways. Network I/O (httpx, async) to the Actions service and the registration
endpoint; imports models only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Literal, TypeVar, get_args

import httpx
import jwt
from pydantic import BaseModel, ValidationError

from runnerfleet.gateways.github import (
    GitHubAuthError,
    GitHubError,
    GitHubNotFoundError,
    GitHubUnavailableError,
    RateLimitedError,
    RunnerBusyError,
    RunnerNameTakenError,
)
from runnerfleet.models import actions_service as wire
from runnerfleet.models.github import parse_config_url

log = logging.getLogger(__name__)

ADMIN_REFRESH_MARGIN = 60.0  # refresh the admin token when less than this is left (as ARC)
BACKOFF_CAP = 30.0  # seconds: the longest single wait between two attempts
IN_FLIGHT = 32  # ordinary (not long-poll) requests in flight per client; below httpx's 100
# Background evidence reads (the registrars' agent reads) have a lane of their own, so the
# requests a round waits for (JIT configs, scale sets, removals) never queue behind them: a
# new leader re-reads every runner's agent at once (5,000 at issue #10's shape), and a JIT
# config behind those delayed its first new runner by ~30 s. Both lanes stay below httpx's
# 100 connections.
BACKGROUND_IN_FLIGHT = 16
SCALE_SET_NOT_FOUND = "RunnerScaleSetNotFoundException"
THROTTLED_DEFAULT = 60.0  # seconds to hold off after a 429 that names no Retry-After
_JOB_KINDS = frozenset(get_args(wire.JobMessageType))
_M = TypeVar("_M", bound=BaseModel)


# ---------------------------------------------------------------------------------- errors
class ActionsServiceError(GitHubError):
    """The Actions service refused a call; `status` and `type_key` say how (no secrets)."""

    def __init__(self, message: str, status: int = 0, type_key: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.type_key = type_key


class SessionConflictError(ActionsServiceError):
    """Another message session is active on the scale set (409): wait it out, then retry."""


class ScaleSetNotFoundError(ActionsServiceError):
    """The scale set does not exist (any more) (404)."""


class SessionGoneError(ActionsServiceError):
    """The message session was deleted or expired (404 on the queue or the session)."""


# ---------------------------------------------------------------------------------- values
@dataclass(frozen=True)
class ScaleSetInfo:
    """A scale set as GitHub has it registered."""

    id: int
    name: str
    runner_group_id: int
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Statistics:
    """GitHub's counts for one scale set. Scale on `assigned` (it includes running jobs)."""

    available: int
    acquired: int
    assigned: int
    running: int
    registered: int
    busy: int
    idle: int


@dataclass(frozen=True)
class JobEvent:
    """One job message. Fields a kind does not carry are empty/zero/None."""

    kind: Literal["JobAvailable", "JobAssigned", "JobStarted", "JobCompleted"]
    runner_request_id: int
    job_id: str
    repository: str
    owner: str
    labels: tuple[str, ...]
    runner_id: int
    runner_name: str
    result: str
    queue_time: datetime | None
    runner_assign_time: datetime | None
    finish_time: datetime | None
    scale_set_assign_time: datetime | None = None
    workflow_run_id: int = 0
    job_display_name: str = ""


@dataclass(frozen=True)
class MessageBatch:
    """One message of the queue: up to 50 job events and the statistics at that moment."""

    message_id: int
    statistics: Statistics
    events: tuple[JobEvent, ...]


@dataclass
class Session:
    """A message session. Mutable: a queue-token refresh updates it in place."""

    scale_set_id: int
    session_id: str
    owner: str
    queue_url: str
    queue_token: str = field(repr=False)
    statistics: Statistics


@dataclass(frozen=True)
class JitRunner:
    """A runner registered just in time through a scale set, with its (secret) JIT config."""

    id: int
    name: str
    encoded_jit_config: str = field(repr=False)


@dataclass(frozen=True)
class Agent:
    """A runner (agent) as the Actions service reports it; None where it did not say."""

    id: int
    name: str
    scale_set_id: int
    online: bool | None
    busy: bool | None


@dataclass
class _Admin:
    """The Actions service URL and the admin JWT for it (until `expires_at`, epoch s)."""

    actions_url: str
    token: str = field(repr=False)
    expires_at: float


# ---------------------------------------------------------------------------------- parsing
def _statistics(stats: wire.Statistics | None) -> Statistics:
    s = stats or wire.Statistics()
    return Statistics(
        available=s.total_available_jobs, acquired=s.total_acquired_jobs,
        assigned=s.total_assigned_jobs, running=s.total_running_jobs,
        registered=s.total_registered_runners, busy=s.total_busy_runners,
        idle=s.total_idle_runners,
    )  # fmt: skip


def _scale_set(s: wire.RunnerScaleSet) -> ScaleSetInfo:
    return ScaleSetInfo(s.id, s.name, s.runner_group_id, tuple(label.name for label in s.labels))


def _agent(r: wire.RunnerReference) -> Agent:
    online = None if r.status is None else r.status.lower() == "online"
    return Agent(r.id, r.name, r.runner_scale_set_id, online, r.busy)


def _job_event(m: wire.JobMessage) -> JobEvent:
    return JobEvent(
        kind=m.message_type, runner_request_id=m.runner_request_id, job_id=m.job_id,
        repository=m.repository_name, owner=m.owner_name, labels=tuple(m.request_labels),
        runner_id=m.runner_id, runner_name=m.runner_name, result=m.result,
        queue_time=m.queue_time, runner_assign_time=m.runner_assign_time,
        finish_time=m.finish_time, scale_set_assign_time=m.scale_set_assign_time,
        workflow_run_id=m.workflow_run_id, job_display_name=m.job_display_name,
    )  # fmt: skip


def _events(message: wire.Message) -> tuple[JobEvent, ...]:
    """The job events in a message's body (a JSON array in a string).

    Message and job types this version does not know are skipped: GitHub adds types freely
    and a listener must not stall on one. A malformed known job message is an error.
    """
    if message.message_type != wire.MESSAGE_TYPE_JOB_MESSAGES or not message.body:
        return ()
    try:
        items = json.loads(message.body)
    except ValueError:
        raise ActionsServiceError(f"message {message.message_id}: body is not JSON") from None
    if not isinstance(items, list):
        raise ActionsServiceError(f"message {message.message_id}: body is not a JSON array")
    events = []
    for item in items:
        kind = item.get("messageType") if isinstance(item, dict) else None
        if kind not in _JOB_KINDS:
            log.debug("message %d: skipping job message of type %r", message.message_id, kind)
            continue
        try:
            events.append(_job_event(wire.JobMessage.model_validate(item)))
        except ValidationError:
            # `from None`: pydantic's text quotes the input; keep message bodies out of logs.
            raise ActionsServiceError(
                f"message {message.message_id}: malformed {kind} job message"
            ) from None
    return tuple(events)


def _body(resp: httpx.Response) -> bytes:
    # The Actions service may start a JSON body with a byte order mark (actions/scaleset
    # strips it too); pydantic's JSON parser does not accept one.
    return resp.content.removeprefix(b"\xef\xbb\xbf")


def _parse(model: type[_M], resp: httpx.Response, what: str) -> _M:
    try:
        return model.model_validate_json(_body(resp))
    except ValidationError:
        # Never chain the ValidationError: it quotes the body, which may hold tokens.
        raise ActionsServiceError(
            f"{what}: unexpected {resp.status_code} response (not a {model.__name__})",
            resp.status_code,
        ) from None


def _jwt_expiry(token: str, now: float) -> float:
    """When the admin JWT expires, by our clock (epoch s). Not verified: we only need to know
    when to refresh. With `iat` the lifetime (`exp - iat`) counts from `now`, so a skew
    between GitHub's clock and ours does not matter; else `exp` as is. A token without a
    readable `exp` is refreshed only when the service answers 401."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return math.inf
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float):
        return math.inf
    if isinstance(iat, int | float) and iat <= exp:
        return now + (exp - iat)
    return float(exp)


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds a `Retry-After` header asks for (delta seconds or an HTTP date), or None."""
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError, IndexError):
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    return None


def _error(
    resp: httpx.Response, what: str, by_status: Mapping[int, type[GitHubError]] | None = None
) -> GitHubError:
    """A non-success response -> runnerfleet's exception: `typeKey` first, then the status
    (with the caller's meaning of it, `by_status`), then the general classes."""
    try:
        body = wire.ActionsError.model_validate_json(_body(resp))
    except ValidationError:
        body = wire.ActionsError()
    status, key = resp.status_code, body.type_key
    text = f"{what}: Actions service answered {status}" + (f" {key}" if key else "")
    if body.message:
        text += f": {body.message[:200]}"
    by_key: dict[str, type[GitHubError]] = {
        wire.SESSION_CONFLICT: SessionConflictError,
        wire.AGENT_EXISTS: RunnerNameTakenError,
        wire.JOB_STILL_RUNNING: RunnerBusyError,
        SCALE_SET_NOT_FOUND: ScaleSetNotFoundError,
    }
    cls = by_key.get(key) or (by_status or {}).get(status)
    if cls is None and status in (401, 403):
        cls = GitHubAuthError
    if cls is None and status >= 500:
        cls = GitHubUnavailableError
    if cls is None or issubclass(cls, ActionsServiceError):
        return (cls or ActionsServiceError)(text, status, key)
    return cls(text)


# ---------------------------------------------------------------------------------- client
class ActionsServiceClient:
    """The Actions service for one configUrl (org, repo or enterprise). One connection pool;
    safe for concurrent use by many tasks (sessions of many scale sets)."""

    def __init__(
        self,
        config_url: str,
        registration_token: Callable[[], Awaitable[tuple[str, float]]],
        *,
        timeout: float = 10.0,
        long_poll_timeout: float = 70.0,
        retries: int = 4,
        clock: Callable[[], float] = time.time,
        on_request: Callable[[str, int], None] | None = None,
        backoff: float = 0.5,
    ) -> None:
        self._config_url = config_url.strip()
        target = parse_config_url(self._config_url)
        self._registration_url = f"{target.api_base}/actions/runner-registration"
        self._registration_token = registration_token
        self._timeout = timeout
        # Read timeout of the long-poll: longer than the server holds it (GitHub: ~50 s).
        self._long_poll_timeout = long_poll_timeout
        self._attempts = max(1, retries)
        self._backoff = backoff
        self._clock = clock
        self._on_request = on_request
        self._http: httpx.AsyncClient | None = None
        self._admin: _Admin | None = None
        # Held only while a token is refreshed, never across ordinary calls.
        self._admin_lock = asyncio.Lock()
        self._session_locks: dict[str, asyncio.Lock] = {}  # session id -> its refresh lock
        # Ordinary calls in flight at once; the rest wait here, first come first served.
        # (Thousands waiting inside httpx's pool made every release scan them all.)
        self._in_flight = asyncio.Semaphore(IN_FLIGHT)
        self._background = asyncio.Semaphore(BACKGROUND_IN_FLIGHT)
        self._group_ids: dict[str, int] = {}
        self.requests: dict[tuple[str, int], int] = {}  # (endpoint, status) -> count
        self.throttled_until = 0.0  # epoch s: the service answered 429; no calls before then

    async def __aenter__(self) -> ActionsServiceClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool (a later call opens a new one)."""
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    # ------------------------------------------------------------------ transport
    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            # A request waits for a free connection as long as it takes (pool=None): with a
            # thousand scale sets on one installation, reads queue behind the 100 connections
            # instead of failing with PoolTimeout; connect/read/write keep their timeouts.
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout, pool=None),
                headers={"User-Agent": "runnerfleet", "Accept": "application/json"},
                follow_redirects=False,
            )
        return self._http

    def _count(self, endpoint: str, status: int) -> None:
        self.requests[(endpoint, status)] = self.requests.get((endpoint, status), 0) + 1
        if self._on_request is not None:
            self._on_request(endpoint, status)

    def _delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt)] (AWS's backoff advice)."""
        return random.uniform(0.0, min(BACKOFF_CAP, self._backoff * 2**attempt))  # noqa: S311

    async def _send(
        self,
        endpoint: str,
        method: str,
        url: str,
        authorization: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        long_poll: bool = False,
        background: bool = False,
    ) -> httpx.Response:
        """One request with retries on 5xx, connection errors and timeouts (never on 4xx).
        A long-poll's read timeout is raised at once (httpx.ReadTimeout): it means nothing new.
        `background`: in the background lane (BACKGROUND_IN_FLIGHT), not the rounds' one."""
        timeout = (
            httpx.Timeout(self._timeout, read=self._long_poll_timeout, pool=None)
            if long_poll
            else None
        )
        request_headers = {"Authorization": authorization, **(headers or {})}
        failure = ""
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(self._delay(attempt - 1))
            self._check_throttle(endpoint)
            try:
                lane = self._background if background else self._in_flight
                async with contextlib.nullcontext() if long_poll else lane:
                    resp = await self._client().request(
                        method, url, params=params, json=body, headers=request_headers,
                        timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                    )  # fmt: skip
            except httpx.TransportError as err:
                self._count(endpoint, 0)
                if long_poll and isinstance(err, httpx.ReadTimeout):
                    raise
                failure = type(err).__name__
                log.debug("%s: %s (attempt %d/%d)", endpoint, failure, attempt + 1, self._attempts)
                continue
            self._count(endpoint, resp.status_code)
            if resp.status_code == 429:
                self._throttled(resp)
                self._check_throttle(endpoint)
            if resp.status_code < 500:
                return resp
            failure = f"answered {resp.status_code}"
            log.debug("%s: %s (attempt %d/%d)", endpoint, failure, attempt + 1, self._attempts)
        raise GitHubUnavailableError(f"{endpoint}: {failure} ({self._attempts} attempts)")

    def _throttled(self, resp: httpx.Response) -> None:
        """Remember a 429's Retry-After (seconds or an HTTP date; 60 s if it names none)."""
        wait = _retry_after(resp.headers.get("retry-after"), self._clock())
        self.throttled_until = max(
            self.throttled_until,
            self._clock() + (THROTTLED_DEFAULT if wait is None else wait),
        )  # fmt: skip

    def _check_throttle(self, endpoint: str) -> None:
        if self._clock() < self.throttled_until:
            raise RateLimitedError(
                f"{endpoint}: the Actions service is throttling requests", self.throttled_until
            )

    # ------------------------------------------------------------------ admin token
    async def _admin_token(self) -> _Admin:
        admin = self._admin
        if admin is None or admin.expires_at - self._clock() < ADMIN_REFRESH_MARGIN:
            return await self._refresh_admin(admin.token if admin else None)
        return admin

    async def _refresh_admin(self, stale: str | None) -> _Admin:
        """Register again unless another task already replaced the `stale` token."""
        async with self._admin_lock:
            current = self._admin
            if current is not None and current.token != stale:
                return current
            self._admin = await self._register()
            return self._admin

    async def _register(self) -> _Admin:
        """Registration token (caller's REST call) -> runner-registration -> admin JWT."""
        reg_token, _ = await self._registration_token()
        what = "POST actions/runner-registration"
        resp = await self._send(
            what, "POST", self._registration_url, f"RemoteAuth {reg_token}",
            body={"url": self._config_url, "runner_event": "register"},
        )  # fmt: skip
        if resp.status_code != 200:
            raise _error(resp, "runner registration", {404: GitHubNotFoundError})
        reg = _parse(wire.RunnerRegistration, resp, "runner registration")
        url = reg.url if reg.url.endswith("/") else reg.url + "/"
        return _Admin(url, reg.token, _jwt_expiry(reg.token, self._clock()))

    async def _call(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        background: bool = False,
    ) -> httpx.Response:
        """An Actions service call with the admin token; a 401 refreshes it and retries once."""
        query = {**(params or {}), "api-version": wire.API_VERSION}
        admin = await self._admin_token()
        for refreshed in (False, True):
            resp = await self._send(
                endpoint, method, admin.actions_url + path, f"Bearer {admin.token}",
                params=query, body=body, background=background,
            )  # fmt: skip
            if resp.status_code != 401 or refreshed:
                break
            admin = await self._refresh_admin(admin.token)
        return resp

    # ------------------------------------------------------------------ queue token
    async def _queue_call(
        self,
        session: Session,
        endpoint: str,
        method: str,
        url: Callable[[Session], str],
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        long_poll: bool = False,
    ) -> httpx.Response:
        """A call with the session's queue token; a 401 refreshes the session and retries once."""
        query = {**(params or {}), "api-version": wire.API_VERSION}
        for refreshed in (False, True):
            token = session.queue_token
            resp = await self._send(
                endpoint, method, url(session), f"Bearer {token}",
                params=query, body=body, headers=headers, long_poll=long_poll,
            )  # fmt: skip
            if resp.status_code != 401 or refreshed:
                break
            await self._refresh_session(session, token)
        return resp

    async def _refresh_session(self, session: Session, stale: str) -> None:
        """PATCH the session for a fresh queue token, in place (once for concurrent callers)."""
        lock = self._session_locks.setdefault(session.session_id, asyncio.Lock())
        async with lock:
            if session.queue_token != stale:
                return
            resp = await self._call(
                "PATCH runnerscalesets/{id}/sessions/{sid}", "PATCH",
                f"{wire.SCALE_SETS_PATH}/{session.scale_set_id}/sessions/{session.session_id}",
            )  # fmt: skip
            if resp.status_code != 200:
                raise _error(resp, "refresh message session", {404: SessionGoneError})
            fresh = _parse(wire.Session, resp, "refresh message session")
            session.queue_url = fresh.message_queue_url or session.queue_url
            session.queue_token = fresh.message_queue_access_token
            if fresh.statistics is not None:
                session.statistics = _statistics(fresh.statistics)

    # ------------------------------------------------------------------ runner groups
    async def runner_group_id(self, name: str) -> int:
        """The id of runner group `name` (looked up once, then cached)."""
        if name in self._group_ids:
            return self._group_ids[name]
        resp = await self._call(
            "GET runnergroups", "GET", wire.RUNNER_GROUPS_PATH, params={"groupName": name}
        )
        if resp.status_code != 200:
            raise _error(resp, f"runner group {name!r}")
        groups = _parse(wire.RunnerGroupList, resp, "runner groups")
        for group in groups.value:
            if group.name.lower() == name.lower():
                self._group_ids[name] = group.id
                return group.id
        raise GitHubNotFoundError(f"runner group {name!r} does not exist")

    # ------------------------------------------------------------------ scale sets
    async def get_scale_set(self, group_id: int, name: str) -> ScaleSetInfo | None:
        """The scale set called `name` in runner group `group_id`, or None."""
        resp = await self._call(
            "GET runnerscalesets", "GET", wire.SCALE_SETS_PATH,
            params={"runnerGroupId": str(group_id), "name": name},
        )  # fmt: skip
        if resp.status_code != 200:
            raise _error(resp, f"find scale set {name!r}")
        found = _parse(wire.RunnerScaleSetList, resp, "scale sets")
        for s in found.value:
            if s.name == name:
                return _scale_set(s)
        return None

    async def get_scale_set_by_id(self, scale_set_id: int) -> ScaleSetInfo | None:
        """Scale set `scale_set_id`, or None if it does not exist."""
        resp = await self._call(
            "GET runnerscalesets/{id}", "GET", f"{wire.SCALE_SETS_PATH}/{scale_set_id}"
        )
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise _error(resp, f"read scale set {scale_set_id}")
        return _scale_set(_parse(wire.RunnerScaleSet, resp, "scale set"))

    @staticmethod
    def _scale_set_body(name: str, group_id: int, labels: Sequence[str]) -> dict[str, Any]:
        body = wire.RunnerScaleSet(
            name=name,
            runner_group_id=group_id,
            labels=[wire.Label(name=label) for label in labels],
            runner_setting=wire.RunnerSetting(ephemeral=True, is_elastic=True),
        )
        return body.model_dump(by_alias=True, exclude_defaults=True, mode="json")

    async def create_scale_set(
        self, name: str, group_id: int, labels: Sequence[str]
    ) -> ScaleSetInfo:
        """Register a scale set; if one by that name exists in the group (409), adopt it as is."""
        resp = await self._call(
            "POST runnerscalesets", "POST", wire.SCALE_SETS_PATH,
            body=self._scale_set_body(name, group_id, labels),
        )  # fmt: skip
        if resp.status_code == 409:
            existing = await self.get_scale_set(group_id, name)
            if existing is None:  # deleted between the two calls: the caller tries again
                raise ActionsServiceError(f"scale set {name!r}: conflict, then not found", 409)
            return existing
        if resp.status_code != 200:
            raise _error(resp, f"create scale set {name!r}")
        return _scale_set(_parse(wire.RunnerScaleSet, resp, "scale set"))

    async def update_scale_set(
        self, scale_set_id: int, name: str, group_id: int, labels: Sequence[str]
    ) -> ScaleSetInfo:
        """Set a scale set's name, group and labels."""
        resp = await self._call(
            "PATCH runnerscalesets/{id}", "PATCH", f"{wire.SCALE_SETS_PATH}/{scale_set_id}",
            body=self._scale_set_body(name, group_id, labels),
        )  # fmt: skip
        if resp.status_code != 200:
            raise _error(resp, f"change scale set {scale_set_id}", {404: ScaleSetNotFoundError})
        return _scale_set(_parse(wire.RunnerScaleSet, resp, "scale set"))

    async def delete_scale_set(self, scale_set_id: int) -> None:
        """Remove a scale set (with its sessions and idle runners); already gone is fine."""
        resp = await self._call(
            "DELETE runnerscalesets/{id}", "DELETE", f"{wire.SCALE_SETS_PATH}/{scale_set_id}"
        )
        if resp.status_code not in (200, 204, 404):
            raise _error(resp, f"delete scale set {scale_set_id}")

    # ------------------------------------------------------------------ sessions
    async def create_session(self, scale_set_id: int, owner: str) -> Session:
        """Open the message session of a scale set; SessionConflictError while another is."""
        resp = await self._call(
            "POST runnerscalesets/{id}/sessions", "POST",
            f"{wire.SCALE_SETS_PATH}/{scale_set_id}/sessions", body={"ownerName": owner},
        )  # fmt: skip
        if resp.status_code != 200:
            raise _error(
                resp, f"create session on scale set {scale_set_id}",
                {409: SessionConflictError, 404: ScaleSetNotFoundError},
            )  # fmt: skip
        s = _parse(wire.Session, resp, "session")
        return Session(
            scale_set_id=scale_set_id, session_id=s.session_id, owner=s.owner_name or owner,
            queue_url=s.message_queue_url, queue_token=s.message_queue_access_token,
            statistics=_statistics(s.statistics),
        )  # fmt: skip

    async def delete_session(self, session: Session) -> None:
        """Close a session (on shutdown, so the next owner gets no 409); gone is fine."""
        resp = await self._call(
            "DELETE runnerscalesets/{id}/sessions/{sid}", "DELETE",
            f"{wire.SCALE_SETS_PATH}/{session.scale_set_id}/sessions/{session.session_id}",
        )  # fmt: skip
        if resp.status_code not in (200, 204, 404):
            raise _error(resp, f"delete session on scale set {session.scale_set_id}")

    # ------------------------------------------------------------------ messages
    async def get_messages(
        self, session: Session, last_message_id: int, max_capacity: int
    ) -> MessageBatch | None:
        """Long-poll the next message after `last_message_id` (which acknowledges everything up
        to it); None when nothing new arrived. Updates `session.statistics`."""
        try:
            resp = await self._queue_call(
                session, "GET messages", "GET", lambda s: s.queue_url,
                params={"lastMessageId": str(last_message_id)},
                headers={wire.MAX_CAPACITY_HEADER: str(max(0, max_capacity))},
                long_poll=True,
            )  # fmt: skip
        except httpx.ReadTimeout:
            return None  # the server held the poll longer than we wait: nothing new
        if resp.status_code == 202:
            return None
        if resp.status_code != 200:
            raise _error(
                resp, f"get messages of scale set {session.scale_set_id}", {404: SessionGoneError}
            )
        message = _parse(wire.Message, resp, "message")
        stats = _statistics(message.statistics) if message.statistics else session.statistics
        session.statistics = stats
        return MessageBatch(message.message_id, stats, _events(message))

    async def ack(self, session: Session, message_id: int) -> None:
        """Acknowledge (delete) a message; one already gone is fine."""
        resp = await self._queue_call(
            session, "DELETE messages/{id}", "DELETE",
            lambda s: f"{s.queue_url.rstrip('/')}/{message_id}",
        )  # fmt: skip
        if resp.status_code not in (200, 204, 404):
            raise _error(resp, f"acknowledge message {message_id}")

    async def acquire_jobs(self, session: Session, runner_request_ids: Sequence[int]) -> list[int]:
        """Acquire offered jobs (GHES flow, JobAvailable); returns the ids actually acquired."""
        if not runner_request_ids:
            return []
        base = (await self._admin_token()).actions_url  # the queue token authorises this call
        resp = await self._queue_call(
            session, "POST runnerscalesets/{id}/acquirejobs", "POST",
            lambda s: f"{base}{wire.SCALE_SETS_PATH}/{s.scale_set_id}/acquirejobs",
            body=[int(i) for i in runner_request_ids],
        )  # fmt: skip
        if resp.status_code != 200:
            raise _error(
                resp, f"acquire jobs for scale set {session.scale_set_id}",
                {404: ScaleSetNotFoundError},
            )  # fmt: skip
        return list(_parse(wire.AcquireJobsResult, resp, "acquired jobs").value)

    # ------------------------------------------------------------------ runners (agents)
    async def generate_jit(
        self, scale_set_id: int, name: str, work_folder: str = "_work"
    ) -> JitRunner:
        """Register runner `name` through the scale set; RunnerNameTakenError if it exists."""
        body = wire.JitRunnerSetting(name=name, work_folder=work_folder)
        resp = await self._call(
            "POST runnerscalesets/{id}/generatejitconfig", "POST",
            f"{wire.SCALE_SETS_PATH}/{scale_set_id}/generatejitconfig",
            body=body.model_dump(by_alias=True),
        )  # fmt: skip
        if resp.status_code != 200:
            raise _error(
                resp, f"register runner {name}",
                {409: RunnerNameTakenError, 404: ScaleSetNotFoundError},
            )  # fmt: skip
        jit = _parse(wire.JitRunnerConfig, resp, "JIT runner config")
        return JitRunner(jit.runner.id, jit.runner.name, jit.encoded_jit_config)

    async def get_agent(self, runner_id: int, background: bool = False) -> Agent | None:
        """Runner `runner_id`, or None if it is not registered. `background`: a read for
        evidence nobody waits on (the background lane)."""
        resp = await self._call(
            "GET agents/{id}", "GET", f"{wire.AGENTS_PATH}/{runner_id}", background=background
        )
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise _error(resp, f"read runner {runner_id}")
        return _agent(_parse(wire.RunnerReference, resp, "runner"))

    async def agents_named(self, name: str) -> list[Agent]:
        """The runners called `name` (zero or one)."""
        resp = await self._call("GET agents", "GET", wire.AGENTS_PATH, params={"agentName": name})
        if resp.status_code != 200:
            raise _error(resp, f"find runner {name}")
        return [_agent(r) for r in _parse(wire.RunnerReferenceList, resp, "runners").value]

    async def delete_agent(self, runner_id: int) -> None:
        """Remove a runner; gone is fine; RunnerBusyError while it runs a job (keep it)."""
        resp = await self._call("DELETE agents/{id}", "DELETE", f"{wire.AGENTS_PATH}/{runner_id}")
        if resp.status_code not in (200, 204, 404):
            raise _error(resp, f"delete runner {runner_id}")
