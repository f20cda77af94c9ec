"""The fake Actions service: GitHub's runner scale-set protocol, served by the fake GitHub.

A GHES host serves the REST API and the Actions service from one base URL; so does the fake
(sim/github.py mounts these routes on its own aiohttp app). What it implements is the contract
in models/actions_service.py, with GitHub's status codes and JSON names: runner registration
(`RemoteAuth` registration token → admin JWT), runner groups, scale sets, message sessions, the
long-poll message queue (≤ 50 job messages per response, 202 when nothing came), acquirejobs,
JIT configs and agents. Jobs queued in the fake are routed to the scale set whose labels cover
theirs; github.com's flow assigns them at once (`JobAssigned`), the GHES flow
(`acquire_flow=True`) offers them first (`JobAvailable`) and assigns what the listener acquires.
A job no runner takes within `assignment_timeout` is re-assigned (canceled + new JobAssigned),
at most `max_reassignments` times.

Requests here are not counted against the REST budgets (GitHub does not either); they are
counted in `FakeActionsService.requests` and reported under `summary()["actions_service"]`.
Timers (session expiry, re-assignment) are checked against the fake's clock at every request
and by one background ticker; the only wait in a handler is the long-poll, on an asyncio.Event.

Layer: tooling (sim). Network server (through sim/github.py's app) on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import secrets
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import jwt
from aiohttp import web
from pydantic import BaseModel, ValidationError

from runnerfleet.models import actions_service as m
from runnerfleet.sim.faults import answered

if TYPE_CHECKING:
    from runnerfleet.sim.github import FakeGitHub, FakeJob, FakeRunner

SERVICE_PATH = "/_services/pipelines/"  # the Actions service URL is {fake.url}{SERVICE_PATH}
REGISTRATION_PATH = "/api/v3/actions/runner-registration"
REGISTRATION_TOKEN_TTL = 3600.0  # seconds, as on GitHub
TOKEN_SCHEMA = "OAuthAccessToken"  # noqa: S105 (a scheme name, not a secret)
_SS = SERVICE_PATH + m.SCALE_SETS_PATH
_SS_ONE = _SS + r"/{scale_set_id:\d+}"
_SESSION = _SS_ONE + "/sessions/{session_id}"
_AGENTS = SERVICE_PATH + m.AGENTS_PATH
_ADMIN_SECRET_BYTES = 32
M = TypeVar("M", bound=BaseModel)
RESULTS = {"success": "succeeded", "failure": "failed", "cancelled": "canceled"}
"""REST job conclusion → JobCompleted `result`."""


@dataclass(frozen=True)
class ActionsServiceOptions:
    """How the fake Actions service behaves; GitHub's figures by default, short ones in tests."""

    long_poll_timeout: float = 50.0
    """Seconds a message GET waits for something before answering 202."""
    session_timeout: float = 120.0
    """A session that has not polled for this long is gone (its scale set can be retaken)."""
    queue_token_ttl: float = 3600.0
    """Lifetime of a messageQueueAccessToken; past it the queue answers 401."""
    admin_token_ttl: float = 3600.0
    """Lifetime (`exp`) of the admin JWT from runner-registration; past it every call is 401."""
    assignment_timeout: float = 300.0
    """Seconds an assigned job may wait for a runner before it is re-assigned."""
    max_reassignments: int = 3
    """Re-assignments per job at most; after them the job stays assigned."""
    acquire_flow: bool = False
    """False: github.com assigns directly. True: GHES offers (JobAvailable), then acquirejobs."""


@dataclass
class FakeScaleSet:
    id: int
    name: str
    scope: str  # "org/acme", "repo/acme/app", "enterprise/e": as FakeRunner.scope
    runner_group_id: int
    labels: list[m.Label]
    setting: m.RunnerSetting
    created_at: float
    outbox: list[dict[str, Any]] = field(default_factory=list)  # job messages not yet sent
    unacked: deque[tuple[int, list[dict[str, Any]]]] = field(default_factory=deque)
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # wakes long-polls

    def label_names(self) -> set[str]:
        return {label.name.lower() for label in self.labels}


@dataclass
class FakeSession:
    id: str
    scale_set_id: int
    owner_name: str
    last_seen: float
    polling: int = 0  # long-polls in flight: a polling session is active
    max_capacity: int | None = None  # the last X-ScaleSetMaxCapacity it sent


@dataclass(frozen=True)
class _QueueToken:
    session_id: str
    scale_set_id: int
    expires_at: float


def _ts(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _wire(model: BaseModel) -> Any:
    return model.model_dump(mode="json", by_alias=True)


def _ok(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(_wire(model), status=status)


def error(status: int, type_key: str, message: str) -> web.Response:
    """An ActionsError; `typeName` holds the exception's full name, as GitHub sends it."""
    body = m.ActionsError(
        message=message,
        type_name=f"GitHub.DistributedTask.WebApi.{type_key}, GitHub.DistributedTask.WebApi",
        type_key=type_key,
        error_code=0,
    )
    return _ok(body, status)


def in_scope(scope: str, repo: str) -> bool:
    """Whether a job of `repo` ("acme/app") can run on a scale set registered at `scope`."""
    kind, _, rest = scope.partition("/")
    if kind == "enterprise":
        return True
    if kind == "org":
        return repo.partition("/")[0].lower() == rest.lower()
    return repo.lower() == rest.lower()


class FakeActionsService:
    """State and handlers of the Actions service. Reach it as `FakeGitHub.actions`.

    Inspect `scale_sets`, `sessions`, `stats` (per scale set: job messages by type,
    "reassigned", "polls", "empty_polls"), `requests` (method, route, status) and
    `statistics(scale_set_id)`. `options` may be replaced at any time.
    """

    def __init__(self, host: FakeGitHub, options: ActionsServiceOptions | None = None) -> None:
        self.host = host
        self.options = options or ActionsServiceOptions()
        self.runner_groups: dict[str, int] = {"Default": 1}
        self.scale_sets: dict[int, FakeScaleSet] = {}
        self.sessions: dict[str, FakeSession] = {}
        self.stats: dict[int, Counter[str]] = {}
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.registration_tokens: dict[str, tuple[str, float]] = {}  # token -> (scope, expiry)
        self._queue_tokens: dict[str, _QueueToken] = {}
        self._waiting: dict[int, FakeJob] = {}  # assigned, not yet taken: re-assignment watch
        self._secret = secrets.token_bytes(_ADMIN_SECRET_BYTES)  # signs admin JWTs
        self._ids = itertools.count(1)  # scale sets
        self._request_ids = itertools.count(1)  # runnerRequestIds
        self._message_ids = itertools.count(1)
        self._ticker: asyncio.Task[None] | None = None
        self._closing = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """The Actions service base URL, as runner-registration returns it."""
        return self.host.url + SERVICE_PATH

    def start(self) -> None:
        self._closing = False
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def close(self) -> None:
        """Stop the ticker and end every long-poll now (so the server can shut down)."""
        self._closing = True
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for scale_set in self.scale_sets.values():
            scale_set.changed.set()

    async def _tick(self) -> None:
        """Session expiry and re-assignment without waiting for a request (an asyncio timer)."""
        while True:
            period = min(self.options.assignment_timeout, self.options.session_timeout) / 10
            await asyncio.sleep(max(0.01, min(0.5, period)))
            self.sweep()

    def sweep(self) -> None:
        """Apply every deadline that has passed by the fake's clock."""
        now = self.host.clock()
        for session in list(self.sessions.values()):
            if session.polling == 0 and now - session.last_seen >= self.options.session_timeout:
                self._end_session(session)
        for token, entry in list(self._queue_tokens.items()):
            if now >= entry.expires_at and entry.session_id not in self.sessions:
                del self._queue_tokens[token]
        for job in list(self._waiting.values()):
            assigned_at = job.scale_set_assigned_at or now
            if now - assigned_at >= self.options.assignment_timeout:
                self._reassign(job)

    # ------------------------------------------------------------------ requests
    @staticmethod
    def handles(path: str) -> bool:
        return path.startswith(SERVICE_PATH) or path == REGISTRATION_PATH

    async def serve(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Middleware part for this service: reachability, latency, deadlines, counting."""
        route = request.match_info.route.resource
        template = route.canonical if route is not None else request.path
        status = 500
        faults = self.host.faults  # sim/faults.py: outages, errors, throttling (429), latency
        try:
            resp: web.StreamResponse
            if self.host.unreachable:
                resp = error(503, "ServiceUnavailableException", "Service unavailable")
            else:
                self.sweep()
                fault = faults.draw("actions")
                if seconds := self.host.limits.latency + faults.delay():
                    await asyncio.sleep(seconds)  # simulated network time
                if fault is not None:
                    resp = await faults.apply(request, fault, "actions")
                else:
                    resp = await handler(request)
            status = answered(request, resp)
            return resp
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.requests[(request.method, template, status)] += 1

    def queue_tokens(self) -> list[str]:
        """Message-queue access tokens still valid (for log scans in tests)."""
        return list(self._queue_tokens)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        r = router
        r.add_post(REGISTRATION_PATH, self._register)
        r.add_get(SERVICE_PATH + m.RUNNER_GROUPS_PATH, self._runner_groups)
        r.add_get(_SS, self._list_scale_sets)
        r.add_post(_SS, self._create_scale_set)
        r.add_get(_SS_ONE, self._get_scale_set)
        r.add_patch(_SS_ONE, self._update_scale_set)
        r.add_delete(_SS_ONE, self._delete_scale_set)
        r.add_post(_SS_ONE + "/sessions", self._create_session)
        r.add_patch(_SESSION, self._refresh_session)
        r.add_delete(_SESSION, self._delete_session)
        r.add_get(_SESSION + "/messages", self._get_message)
        r.add_delete(_SESSION + r"/messages/{message_id:\d+}", self._delete_message)
        r.add_post(_SS_ONE + "/generatejitconfig", self._generate_jit_config)
        r.add_post(_SS_ONE + "/acquirejobs", self._acquire_jobs)
        r.add_get(_AGENTS, self._list_agents)
        r.add_get(_AGENTS + r"/{runner_id:\d+}", self._get_agent)
        r.add_delete(_AGENTS + r"/{runner_id:\d+}", self._delete_agent)

    # ------------------------------------------------------------------ registration, auth
    def issue_registration_token(self, scope: str) -> tuple[str, float]:
        """A runner registration token for `scope` (REST: POST .../registration-token)."""
        token = secrets.token_urlsafe(24)
        expires_at = self.host.clock() + REGISTRATION_TOKEN_TTL
        self.registration_tokens[token] = (scope, expires_at)
        return token, expires_at

    def _config_scope(self, config_url: str) -> str | None:
        """`{url}/acme` → "org/acme", `{url}/acme/app` → "repo/acme/app",
        `{url}/enterprises/e` → "enterprise/e"; None when it names nothing on this host."""
        base = self.host.url + "/"
        if not config_url.startswith(base):
            return None
        parts = [part for part in config_url[len(base) :].split("/") if part]
        if len(parts) == 2 and parts[0] == "enterprises":
            return f"enterprise/{parts[1]}"
        if len(parts) in (1, 2):
            return "/".join(["org" if len(parts) == 1 else "repo", *parts])
        return None

    async def _register(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        issued = self.registration_tokens.get(token) if scheme == "RemoteAuth" else None
        if issued is None or self.host.clock() >= issued[1]:
            return error(401, "UnauthorizedException", "Bad or expired registration token")
        body = await _json_body(request)
        url = body.get("url") if isinstance(body, dict) else None
        scope = self._config_scope(url) if isinstance(url, str) else None
        if scope is None or not self._known(scope):
            return error(404, "NotFoundException", "No organization, repository or enterprise")
        if scope != issued[0]:
            return error(401, "UnauthorizedException", "The token was issued for another scope")
        now = self.host.clock()
        claims = {
            "sub": scope,
            "iss": "fake-actions",
            "iat": now,
            "exp": now + self.options.admin_token_ttl,
        }
        admin = jwt.encode(claims, self._secret, algorithm="HS256")
        reply = m.RunnerRegistration(url=self.url, token=admin, token_schema=TOKEN_SCHEMA)
        return _ok(reply)

    def _known(self, scope: str) -> bool:
        kind, _, rest = scope.partition("/")
        return kind == "enterprise" or rest.partition("/")[0] in self.host.known_orgs()

    def _admin(self, request: web.Request) -> str | web.Response:
        """The caller's scope from a valid, unexpired admin JWT, or a 401."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError:
            claims = {}
        if scheme.lower() != "bearer" or not claims.get("sub"):
            return error(401, "UnauthorizedException", "Invalid access token")
        if self.host.clock() >= float(claims.get("exp", 0)):
            return error(401, "UnauthorizedException", "The access token has expired")
        return str(claims["sub"])

    def _queue(self, request: web.Request, scale_set_id: int) -> _QueueToken | web.Response:
        """The caller's valid queue token for this scale set, or a 401."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        entry = self._queue_tokens.get(token) if scheme.lower() == "bearer" else None
        if entry is None or entry.scale_set_id != scale_set_id:
            return error(401, "UnauthorizedException", "Invalid message queue token")
        if self.host.clock() >= entry.expires_at:
            return error(401, "UnauthorizedException", "The message queue token has expired")
        return entry

    def _scale_set(self, request: web.Request) -> FakeScaleSet | web.Response:
        """The scale set in the path, visible to the admin token's scope, else 401/404."""
        scope = self._admin(request)
        if isinstance(scope, web.Response):
            return scope
        return self._scale_set_in(request, scope)

    def _scale_set_in(self, request: web.Request, scope: str) -> FakeScaleSet | web.Response:
        scale_set = self.scale_sets.get(int(request.match_info["scale_set_id"]))
        if scale_set is None or scale_set.scope != scope:
            return error(404, "RunnerScaleSetNotFoundException", "Runner scale set not found")
        return scale_set

    # ------------------------------------------------------------------ groups, scale sets
    async def _runner_groups(self, request: web.Request) -> web.Response:
        if isinstance(scope := self._admin(request), web.Response):
            return scope
        wanted = request.query.get("groupName")
        groups = [
            m.RunnerGroup(id=gid, name=name, is_default=gid == 1)
            for name, gid in sorted(self.runner_groups.items(), key=lambda item: item[1])
            if wanted is None or name.lower() == wanted.lower()
        ]
        return _ok(m.RunnerGroupList(count=len(groups), value=groups))

    def scale_set_body(self, scale_set: FakeScaleSet) -> m.RunnerScaleSet:
        group = next(
            (n for n, i in self.runner_groups.items() if i == scale_set.runner_group_id), ""
        )
        return m.RunnerScaleSet(
            id=scale_set.id,
            name=scale_set.name,
            runner_group_id=scale_set.runner_group_id,
            runner_group_name=group,
            labels=scale_set.labels,
            runner_setting=scale_set.setting,
            created_on=_ts(scale_set.created_at),
            runner_jit_config_url=f"{self.url}{m.SCALE_SETS_PATH}/{scale_set.id}/generatejitconfig",
            statistics=self.statistics(scale_set.id),
        )

    async def _list_scale_sets(self, request: web.Request) -> web.Response:
        if isinstance(scope := self._admin(request), web.Response):
            return scope
        group, name = request.query.get("runnerGroupId"), request.query.get("name")
        found = [
            self.scale_set_body(s)
            for s in sorted(self.scale_sets.values(), key=lambda s: s.id)
            if s.scope == scope
            and (group is None or str(s.runner_group_id) == group)
            and (name is None or s.name == name)
        ]
        return _ok(m.RunnerScaleSetList(count=len(found), value=found))

    def _validate(self, scope: str, wanted: m.RunnerScaleSet, own_id: int) -> web.Response | None:
        """400/404/409 for a scale set body that cannot be stored, else None."""
        if not wanted.name:
            return error(400, "ArgumentException", "The scale set needs a name")
        if wanted.runner_group_id not in self.runner_groups.values():
            return error(404, "RunnerGroupNotFoundException", "Runner group not found")
        for other in self.scale_sets.values():
            if (other.id != own_id and other.scope == scope and other.name == wanted.name
                    and other.runner_group_id == wanted.runner_group_id):  # fmt: skip
                return error(
                    409,
                    "RunnerScaleSetExistsException",
                    f"A runner scale set named {wanted.name} already exists in the group",
                )
        return None

    async def _create_scale_set(self, request: web.Request) -> web.Response:
        if isinstance(scope := self._admin(request), web.Response):
            return scope
        wanted = await _model_body(request, m.RunnerScaleSet)
        if isinstance(wanted, web.Response):
            return wanted
        if wanted.runner_group_id == 0:
            wanted.runner_group_id = 1  # no group given: the default group
        if (refused := self._validate(scope, wanted, 0)) is not None:
            return refused
        scale_set = FakeScaleSet(
            id=next(self._ids),
            name=wanted.name,
            scope=scope,
            runner_group_id=wanted.runner_group_id,
            labels=list(wanted.labels),
            setting=wanted.runner_setting,
            created_at=self.host.clock(),
        )
        self.scale_sets[scale_set.id] = scale_set
        self.stats[scale_set.id] = Counter()
        self.route_all()  # jobs queued before it existed are routed now
        return _ok(self.scale_set_body(scale_set))

    async def _get_scale_set(self, request: web.Request) -> web.Response:
        if isinstance(scale_set := self._scale_set(request), web.Response):
            return scale_set
        return _ok(self.scale_set_body(scale_set))

    async def _update_scale_set(self, request: web.Request) -> web.Response:
        if isinstance(scale_set := self._scale_set(request), web.Response):
            return scale_set
        raw = await _json_body(request)
        if not isinstance(raw, dict):
            return error(400, "ArgumentException", "The body must be a JSON object")
        current = _wire(self.scale_set_body(scale_set))
        try:
            wanted = m.RunnerScaleSet.model_validate({**current, **raw})
        except ValidationError:
            return error(400, "ArgumentException", "The body is not a runner scale set")
        if (refused := self._validate(scale_set.scope, wanted, scale_set.id)) is not None:
            return refused
        scale_set.name, scale_set.runner_group_id = wanted.name, wanted.runner_group_id
        scale_set.labels, scale_set.setting = list(wanted.labels), wanted.runner_setting
        self.route_all()  # its new labels may take jobs nobody could take before
        return _ok(self.scale_set_body(scale_set))

    async def _delete_scale_set(self, request: web.Request) -> web.Response:
        if isinstance(scale_set := self._scale_set(request), web.Response):
            return scale_set
        self.remove_scale_set(scale_set.id)
        return web.Response(status=204)

    def remove_scale_set(self, scale_set_id: int) -> None:
        """Its sessions end, its idle runners go, its waiting jobs are routed again."""
        scale_set = self.scale_sets.pop(scale_set_id)
        for session in [s for s in self.sessions.values() if s.scale_set_id == scale_set_id]:
            self._end_session(session)
        scale_set.changed.set()
        for runner in list(self.host.runners.values()):
            if runner.scale_set_id == scale_set_id and not runner.busy:
                del self.host.runners[runner.id]
                self.host.deleted_runners.append(runner.name)
        for job in self.host.jobs.values():
            if job.scale_set_id == scale_set_id and job.status == "queued":
                self._waiting.pop(job.id, None)
                job.scale_set_id = job.runner_request_id = job.scale_set_state = None
                job.scale_set_assigned_at, job.reassignments = None, 0
        self.route_all()

    # ------------------------------------------------------------------ sessions
    def _session_body(self, session: FakeSession) -> m.Session:
        token = secrets.token_urlsafe(32)
        expires_at = self.host.clock() + self.options.queue_token_ttl
        self._queue_tokens[token] = _QueueToken(session.id, session.scale_set_id, expires_at)
        base = f"{self.url}{m.SCALE_SETS_PATH}/{session.scale_set_id}/sessions/{session.id}"
        return m.Session(
            session_id=session.id,
            owner_name=session.owner_name,
            runner_scale_set=self.scale_set_body(self.scale_sets[session.scale_set_id]),
            message_queue_url=base + "/messages",
            message_queue_access_token=token,
            statistics=self.statistics(session.scale_set_id),
        )

    async def _create_session(self, request: web.Request) -> web.Response:
        if isinstance(scale_set := self._scale_set(request), web.Response):
            return scale_set
        body = await _json_body(request)
        owner = body.get("ownerName", "") if isinstance(body, dict) else ""
        if any(s.scale_set_id == scale_set.id for s in self.sessions.values()):
            return error(
                409,
                m.SESSION_CONFLICT,
                f"The scale set {scale_set.name} already has an active session",
            )
        session = FakeSession(str(uuid.uuid4()), scale_set.id, str(owner), self.host.clock())
        self.sessions[session.id] = session
        return _ok(self._session_body(session))

    def _session(self, request: web.Request) -> FakeSession | web.Response:
        if isinstance(scale_set := self._scale_set(request), web.Response):
            return scale_set
        session = self.sessions.get(request.match_info["session_id"])
        if session is None or session.scale_set_id != scale_set.id:
            return error(404, "TaskAgentSessionNotFoundException", "Session not found")
        return session

    async def _refresh_session(self, request: web.Request) -> web.Response:
        if isinstance(session := self._session(request), web.Response):
            return session
        session.last_seen = self.host.clock()
        return _ok(self._session_body(session))

    async def _delete_session(self, request: web.Request) -> web.Response:
        if isinstance(session := self._session(request), web.Response):
            return session
        self._end_session(session)
        return web.Response(status=204)

    def _end_session(self, session: FakeSession) -> None:
        self.sessions.pop(session.id, None)
        scale_set = self.scale_sets.get(session.scale_set_id)
        if scale_set is not None:
            scale_set.changed.set()  # a long-poll of this session answers at once

    # ------------------------------------------------------------------ message queue
    def _queue_session(
        self, request: web.Request
    ) -> tuple[FakeScaleSet, FakeSession] | web.Response:
        scale_set_id = int(request.match_info["scale_set_id"])
        entry = self._queue(request, scale_set_id)
        if isinstance(entry, web.Response):
            return entry
        if entry.session_id != request.match_info["session_id"]:
            return error(401, "UnauthorizedException", "The token is for another session")
        session = self.sessions.get(entry.session_id)
        scale_set = self.scale_sets.get(scale_set_id)
        if session is None or scale_set is None:
            return error(404, "TaskAgentSessionExpiredException", "The session has expired")
        return scale_set, session

    async def _get_message(self, request: web.Request) -> web.Response:
        found = self._queue_session(request)
        if isinstance(found, web.Response):
            return found
        scale_set, session = found
        try:
            last_id = int(request.query.get("lastMessageId", "0"))
        except ValueError:
            return error(400, "ArgumentException", "lastMessageId must be a number")
        with contextlib.suppress(ValueError):
            session.max_capacity = int(request.headers.get(m.MAX_CAPACITY_HEADER, ""))
        session.polling += 1
        try:
            return await self._long_poll(scale_set, session, last_id)
        finally:
            session.polling -= 1
            session.last_seen = self.host.clock()

    async def _long_poll(
        self, scale_set: FakeScaleSet, session: FakeSession, last_id: int
    ) -> web.Response:
        """The next message, waiting for one up to long_poll_timeout (then 202)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.long_poll_timeout
        stats = self.stats[scale_set.id]
        stats["polls"] += 1
        while True:
            if session.id not in self.sessions or scale_set.id not in self.scale_sets:
                return error(404, "TaskAgentSessionExpiredException", "The session has ended")
            scale_set.changed.clear()
            message = self._next_message(scale_set, last_id)
            if message is not None:
                return _ok(message)
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closing:
                stats["empty_polls"] += 1
                return web.Response(status=202)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(scale_set.changed.wait(), remaining)

    def _next_message(self, scale_set: FakeScaleSet, last_id: int) -> m.Message | None:
        """Drop what `last_id` acknowledges; re-send the oldest unacknowledged message, or pack
        up to 50 new job messages into a new one."""
        while scale_set.unacked and scale_set.unacked[0][0] <= last_id:
            scale_set.unacked.popleft()
        if not scale_set.unacked and scale_set.outbox:
            batch = scale_set.outbox[: m.MAX_MESSAGES_PER_RESPONSE]
            del scale_set.outbox[: m.MAX_MESSAGES_PER_RESPONSE]
            scale_set.unacked.append((next(self._message_ids), batch))
        if not scale_set.unacked:
            return None
        message_id, batch = scale_set.unacked[0]
        return m.Message(
            message_id=message_id,
            message_type=m.MESSAGE_TYPE_JOB_MESSAGES,
            body=json.dumps(batch),
            statistics=self.statistics(scale_set.id),
        )

    async def _delete_message(self, request: web.Request) -> web.Response:
        found = self._queue_session(request)
        if isinstance(found, web.Response):
            return found
        scale_set, _ = found
        message_id = int(request.match_info["message_id"])
        scale_set.unacked = deque(item for item in scale_set.unacked if item[0] != message_id)
        return web.Response(status=204)

    async def _acquire_jobs(self, request: web.Request) -> web.Response:
        scale_set = self.scale_sets.get(int(request.match_info["scale_set_id"]))
        if scale_set is None:
            return error(404, "RunnerScaleSetNotFoundException", "Runner scale set not found")
        if isinstance(entry := self._queue(request, scale_set.id), web.Response):
            return entry
        wanted = await _json_body(request)
        if not isinstance(wanted, list) or not all(isinstance(i, int) for i in wanted):
            return error(400, "ArgumentException", "The body must be a list of runnerRequestIds")
        acquired = []
        for job in sorted(self.host.jobs.values(), key=lambda j: j.id):
            if (job.scale_set_id == scale_set.id and job.scale_set_state == "available"
                    and job.runner_request_id in wanted and job.status == "queued"):  # fmt: skip
                job.scale_set_state = "acquired"
                acquired.append(job.runner_request_id or 0)
                self._assign(scale_set, job)
        return _ok(m.AcquireJobsResult(count=len(acquired), value=acquired))

    # ------------------------------------------------------------------ runners (agents)
    async def _generate_jit_config(self, request: web.Request) -> web.Response:
        if isinstance(scale_set := self._scale_set(request), web.Response):
            return scale_set
        wanted = await _model_body(request, m.JitRunnerSetting)
        if isinstance(wanted, web.Response):
            return wanted
        if self.host.runner_by_name(wanted.name) is not None:
            return error(409, m.AGENT_EXISTS, f"A runner named {wanted.name} already exists")
        runner = self.host.register_runner(
            wanted.name,
            scale_set.scope,
            [label.name for label in scale_set.labels],
            scale_set.runner_group_id,
            scale_set_id=scale_set.id,
        )
        encoded = self._jit_config(runner, scale_set, wanted.work_folder)
        self.host.jit_configs.append(encoded)  # for log scans in tests
        return _ok(m.JitRunnerConfig(runner=self._agent(runner), encoded_jit_config=encoded))

    def _jit_config(self, runner: FakeRunner, scale_set: FakeScaleSet, work_folder: str) -> str:
        """As actions/runner reads `--jitconfig`: base64 of a JSON object of its files, each
        base64 too (`.runner`, `.credentials`, `.credentials_rsaparams`)."""
        files = {
            ".runner": {
                "agentId": runner.id,
                "agentName": runner.name,
                "poolId": 0,
                "poolName": "Default",
                "serverUrl": self.url,
                "gitHubUrl": f"{self.host.url}/{scale_set.scope.partition('/')[2]}",
                "workFolder": work_folder,
                "ephemeral": "true",
            },
            ".credentials": {
                "scheme": "OAuth",
                "data": {
                    "clientId": str(uuid.uuid4()),
                    "authorizationUrl": self.url + "_apis/oauth2/token",
                },
            },
            ".credentials_rsaparams": {"modulus": secrets.token_urlsafe(32), "exponent": "AQAB"},
        }
        encoded = {
            name: base64.b64encode(json.dumps(f).encode()).decode() for name, f in files.items()
        }
        return base64.b64encode(json.dumps(encoded).encode()).decode()

    def _agent(self, runner: FakeRunner) -> m.RunnerReference:
        return m.RunnerReference(
            id=runner.id,
            name=runner.name,
            runner_scale_set_id=runner.scale_set_id or 0,
            status=runner.status,
            busy=runner.busy,
        )

    def _agent_in(self, request: web.Request) -> FakeRunner | web.Response:
        if isinstance(scope := self._admin(request), web.Response):
            return scope
        runner = self.host.runners.get(int(request.match_info["runner_id"]))
        if runner is None or runner.scale_set_id is None or runner.scope != scope:
            return error(404, "AgentNotFoundException", "Runner not found")
        return runner

    async def _list_agents(self, request: web.Request) -> web.Response:
        if isinstance(scope := self._admin(request), web.Response):
            return scope
        name = request.query.get("agentName")
        found = [
            self._agent(r)
            for r in sorted(self.host.runners.values(), key=lambda r: r.id)
            if r.scale_set_id is not None and r.scope == scope and (name is None or r.name == name)
        ]
        return _ok(m.RunnerReferenceList(count=len(found), value=found))

    async def _get_agent(self, request: web.Request) -> web.Response:
        if isinstance(runner := self._agent_in(request), web.Response):
            return runner
        return _ok(self._agent(runner))

    async def _delete_agent(self, request: web.Request) -> web.Response:
        if isinstance(runner := self._agent_in(request), web.Response):
            return runner
        if runner.busy:
            return error(400, m.JOB_STILL_RUNNING, f"Runner {runner.name} is running a job")
        del self.host.runners[runner.id]
        self.host.deleted_runners.append(runner.name)
        return web.Response(status=204)

    # ------------------------------------------------------------------ jobs
    def route_all(self) -> None:
        for job in sorted(self.host.jobs.values(), key=lambda j: j.id):
            self.route(job)

    def route(self, job: FakeJob) -> None:
        """Offer (GHES) or assign (github.com) a queued, unrouted job to the scale set whose
        labels cover the job's (case-insensitive): fewest labels first, then lowest id."""
        if job.status != "queued" or job.scale_set_id is not None:
            return
        wanted = {label.lower() for label in job.labels}
        candidates = [
            s
            for s in self.scale_sets.values()
            if wanted <= s.label_names() and in_scope(s.scope, job.repo)
        ]
        if not candidates:
            return  # REST runners (or a scale set created later) may take it
        scale_set = min(candidates, key=lambda s: (len(s.label_names()), s.id))
        job.scale_set_id, job.runner_request_id = scale_set.id, next(self._request_ids)
        job.reassignments = 0
        if self.options.acquire_flow:
            job.scale_set_state = "available"
            self._emit(scale_set, "JobAvailable", job)
        else:
            self._assign(scale_set, job)

    def _assign(self, scale_set: FakeScaleSet, job: FakeJob) -> None:
        job.scale_set_state, job.scale_set_assigned_at = "assigned", self.host.clock()
        self._waiting[job.id] = job
        self._emit(scale_set, "JobAssigned", job)

    def _reassign(self, job: FakeJob) -> None:
        """No runner took it in time: canceled, then assigned again under a new request id."""
        scale_set = self.scale_sets.get(job.scale_set_id or -1)
        if scale_set is None or job.reassignments >= self.options.max_reassignments:
            self._waiting.pop(job.id, None)  # it stays assigned from now on
            return
        self._emit(scale_set, "JobCompleted", job, result="canceled")
        job.reassignments += 1
        job.runner_request_id = next(self._request_ids)
        self.stats[scale_set.id]["reassigned"] += 1
        self._assign(scale_set, job)

    def may_take(self, runner: FakeRunner, job: FakeJob) -> bool:
        """Scale-set runners take only assigned jobs of their scale set; REST runners never
        take a job routed to a scale set."""
        if runner.scale_set_id is None:
            return job.scale_set_id is None
        return job.scale_set_id == runner.scale_set_id and job.scale_set_state == "assigned"

    def job_started(self, runner: FakeRunner, job: FakeJob) -> None:
        self._waiting.pop(job.id, None)
        scale_set = self.scale_sets.get(job.scale_set_id or -1)
        if scale_set is not None:
            self._emit(scale_set, "JobStarted", job, runner)

    def job_finished(self, runner: FakeRunner, job: FakeJob) -> None:
        """JobCompleted with GitHub's result for the REST conclusion."""
        scale_set = self.scale_sets.get(job.scale_set_id or -1)
        if scale_set is not None:
            result = RESULTS.get(job.conclusion or "", job.conclusion or "")
            self._emit(scale_set, "JobCompleted", job, runner, result)

    def _emit(
        self,
        scale_set: FakeScaleSet,
        kind: m.JobMessageType,
        job: FakeJob,
        runner: FakeRunner | None = None,
        result: str = "",
    ) -> None:
        owner, _, repo = job.repo.partition("/")
        acquire = (
            f"{self.url}{m.SCALE_SETS_PATH}/{scale_set.id}/acquirejobs?api-version={m.API_VERSION}"
        )
        message = m.JobMessage(
            message_type=kind,
            runner_request_id=job.runner_request_id or 0,
            repository_name=repo,
            owner_name=owner,
            job_id=str(job.id),
            job_workflow_ref=f"{job.repo}/.github/workflows/ci.yml@refs/heads/main",
            job_display_name="build",
            workflow_run_id=job.run_id,
            event_name="push",
            request_labels=list(job.labels),
            queue_time=_ts(job.created_at),
            scale_set_assign_time=_ts(job.scale_set_assigned_at),
            runner_assign_time=_ts(job.started_at),
            finish_time=_ts(job.completed_at) if kind == "JobCompleted" else None,
            acquire_job_url=acquire if kind == "JobAvailable" else "",
            runner_id=runner.id if runner is not None else 0,
            runner_name=runner.name if runner is not None else "",
            result=result,
        )
        scale_set.outbox.append(_wire(message))
        self.stats[scale_set.id][kind] += 1
        scale_set.changed.set()

    # ------------------------------------------------------------------ inspection
    def statistics(self, scale_set_id: int) -> m.Statistics:
        """What GitHub reports for the scale set now (jobs routed to it, runners it registered)."""
        jobs = [
            j for j in self.host.jobs.values()
            if j.scale_set_id == scale_set_id and j.status != "completed"
        ]  # fmt: skip
        states = Counter(j.scale_set_state for j in jobs)
        runners = [r for r in self.host.runners.values() if r.scale_set_id == scale_set_id]
        busy = sum(1 for r in runners if r.busy)
        return m.Statistics(
            total_available_jobs=states["available"],
            total_acquired_jobs=states["acquired"],
            total_assigned_jobs=states["assigned"],
            total_running_jobs=sum(1 for j in jobs if j.status == "in_progress"),
            total_registered_runners=len(runners),
            total_busy_runners=busy,
            total_idle_runners=len(runners) - busy,
        )

    def summary(self) -> dict[str, Any]:
        by_endpoint: Counter[str] = Counter()
        by_status: Counter[str] = Counter()
        for (method, route, status), count in self.requests.items():
            by_endpoint[f"{method} {route}"] += count
            by_status[str(status)] += count
        messages: Counter[str] = Counter()
        for counter in self.stats.values():
            messages.update(counter)
        return {
            "requests": sum(self.requests.values()),
            "by_endpoint": dict(sorted(by_endpoint.items())),
            "by_status": dict(sorted(by_status.items())),
            "scale_sets": len(self.scale_sets),
            "sessions": len(self.sessions),
            "job_messages": {
                k: messages[k]
                for k in ("JobAvailable", "JobAssigned", "JobStarted", "JobCompleted")
            },
            "reassigned": messages["reassigned"],
        }


async def _json_body(request: web.Request) -> Any:
    if not request.can_read_body:
        return None
    try:
        return await request.json()
    except ValueError:
        return None


async def _model_body(request: web.Request, model: type[M]) -> M | web.Response:
    body = await _json_body(request)
    try:
        return model.model_validate(body)
    except ValidationError:
        return error(400, "ArgumentException", f"The body is not a valid {model.__name__}")


__all__ = [
    "REGISTRATION_PATH",
    "SERVICE_PATH",
    "ActionsServiceOptions",
    "FakeActionsService",
    "FakeScaleSet",
    "FakeSession",
]
