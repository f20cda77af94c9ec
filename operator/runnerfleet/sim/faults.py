"""GitHub faults on demand: what the fake GitHub and its Actions service do wrong, and when.

The chaos suite (issue 12, scenario 3) runs a stream of jobs while GitHub misbehaves as it
does in real outages. `GitHubFaults` is consulted by the fake for every request, REST
(`FakeGitHub._answer`) and Actions service (`FakeActionsService.serve`) alike:

- latency: seconds added to every request, optionally jittered (uniform in ± `jitter`);
- errors: a share of requests (`error_rate`) fails with one of `error_kinds`: 500, 502 or 503
  with GitHub's bodies, `reset` (the connection is closed without an answer) or `timeout`
  (the request is held `timeout_hold` seconds, longer than the clients' 10 s, then closed);
- an outage window (`outage(seconds)`): every request answers 503, or has its connection
  reset (`outage_kind`), until the window ends;
- Actions-service throttling (`throttle_actions(seconds)`): every Actions-service request is
  answered 429 with `Retry-After`, as GitHub's pipelines service does when it throttles (the
  REST side's rate limit is `FakeGitHub.exhaust_rate_limit`, reused as it is);
- stale or truncated pages (`page_fault_rate`) for the REST lists named in `paged_lists`
  (the runner list by default): a page missing one of its items, or its `Link` header
  dropped, so a client reading it believes it has seen the last page.

Every random choice comes from one seeded `random.Random`, so a run replays with its seed.
`injected` counts what was injected, by kind; `seen` counts every request consulted, by
service ("rest", "actions"), which a test diffs around a window to bound a request storm.

Layer: tooling (sim). The decisions are pure (time from an injected clock, chance from the
seeded RNG); `apply` does the network part (sleep, close the transport).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from aiohttp import web

Service = Literal["rest", "actions"]
ERROR_KINDS = ("500", "502", "503", "reset", "timeout")
PAGE_FAULT_KINDS = ("truncated", "unlinked")
_DOCS = "https://docs.github.com/rest"
# GitHub's bodies for its 5xx answers (an HTML page for 502 from the edge, JSON otherwise).
_REST_BODIES = {
    500: {"message": "Server Error", "documentation_url": _DOCS, "status": "500"},
    503: {"message": "Service Unavailable", "documentation_url": _DOCS, "status": "503"},
}
_BAD_GATEWAY_HTML = "<html><body><h1>502 Bad Gateway</h1></body></html>\n"
_ACTIONS_TYPES = {
    500: "InternalServerErrorException",
    502: "BadGatewayException",
    503: "ServiceUnavailableException",
    429: "TooManyRequestsException",
}
T = TypeVar("T")


@dataclass(frozen=True)
class Fault:
    """What to do with one request instead of (or before) answering it."""

    kind: str  # "500", "502", "503", "reset", "timeout", "outage", "throttled"
    status: int = 0  # the HTTP status answered; 0: no answer (connection closed)
    hold: float = 0.0  # seconds held before answering or closing
    retry_after: int | None = None


@dataclass
class GitHubFaults:
    """The faults in force now; change any field at any time (the fake reads them per request)."""

    seed: int = 0
    latency: float = 0.0
    """Seconds added to every request (on top of `GitHubLimits.latency`)."""
    jitter: float = 0.0
    """The added latency varies uniformly by up to this many seconds either way (never < 0)."""
    error_rate: float = 0.0
    """Share of requests failed with one of `error_kinds` (0..1)."""
    error_kinds: Sequence[str] = ERROR_KINDS
    timeout_hold: float = 15.0
    """Seconds a `timeout` request is held before its connection is closed."""
    outage_kind: str = "503"
    """What an outage answers: "503", or "reset" (no answer at all)."""
    page_fault_rate: float = 0.0
    """Share of pages of the `paged_lists` lists that come back stale or truncated."""
    page_fault_kinds: Sequence[str] = PAGE_FAULT_KINDS
    paged_lists: frozenset[str] = frozenset({"runners"})
    clock: Callable[[], float] = time.time
    outage_until: float = 0.0
    throttled_until: float = 0.0
    injected: Counter[str] = field(default_factory=Counter)
    seen: Counter[str] = field(default_factory=Counter)
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311 (a replayable fault schedule)
        unknown = set(self.error_kinds) - set(ERROR_KINDS)
        if unknown:
            raise ValueError(f"unknown error kinds {sorted(unknown)}; known: {ERROR_KINDS}")

    # ------------------------------------------------------------------ control
    def outage(self, seconds: float) -> None:
        """GitHub is down (REST and Actions service) for `seconds` from now."""
        self.outage_until = self.clock() + seconds

    def throttle_actions(self, seconds: float) -> None:
        """The Actions service answers 429 with Retry-After for `seconds` from now."""
        self.throttled_until = self.clock() + seconds

    def clear(self) -> None:
        """No faults at all (the counters stay)."""
        self.latency = self.jitter = self.error_rate = self.page_fault_rate = 0.0
        self.outage_until = self.throttled_until = 0.0

    @property
    def in_outage(self) -> bool:
        return self.clock() < self.outage_until

    @property
    def throttled(self) -> bool:
        return self.clock() < self.throttled_until

    # ------------------------------------------------------------------ decisions (pure)
    def delay(self) -> float:
        """The latency this request gets."""
        if self.jitter <= 0:
            return max(0.0, self.latency)
        return max(0.0, self.latency + self.rng.uniform(-self.jitter, self.jitter))

    def draw(self, service: Service) -> Fault | None:
        """The fault for one request now, or None: outage first, then (Actions service only)
        throttling, then the random error share."""
        self.seen[service] += 1
        now = self.clock()
        fault: Fault | None = None
        if now < self.outage_until:
            status = 0 if self.outage_kind == "reset" else 503
            fault = Fault("outage", status, retry_after=None)
        elif service == "actions" and now < self.throttled_until:
            fault = Fault("throttled", 429, retry_after=max(1, round(self.throttled_until - now)))
        elif self.error_rate > 0 and self.rng.random() < self.error_rate:
            kind = self.rng.choice(list(self.error_kinds))
            if kind == "reset":
                fault = Fault(kind)
            elif kind == "timeout":
                fault = Fault(kind, hold=self.timeout_hold)
            else:
                fault = Fault(kind, int(kind))
        if fault is not None:
            self.injected[fault.kind] += 1
        return fault

    def page(self, key: str, items: list[T]) -> tuple[list[T], bool]:
        """A page of list `key` as served now: (its items, whether to keep its Link header).
        A `truncated` page loses one item at random; an `unlinked` one loses its Link header."""
        if key not in self.paged_lists or self.page_fault_rate <= 0 or not items:
            return items, True
        if self.rng.random() >= self.page_fault_rate:
            return items, True
        kind = self.rng.choice(list(self.page_fault_kinds))
        self.injected[f"page_{kind}"] += 1
        if kind == "truncated":
            gone = self.rng.randrange(len(items))
            return items[:gone] + items[gone + 1 :], True
        return items, False

    # ------------------------------------------------------------------ network
    async def apply(self, request: web.Request, fault: Fault, service: Service) -> web.Response:
        """Carry out `fault`: hold, then answer its status with GitHub's body, or close the
        connection unanswered (the response returned then is never sent)."""
        if fault.hold:
            await asyncio.sleep(fault.hold)  # the fault itself: the client times out meanwhile
        if fault.status == 0:
            transport = request.transport
            if transport is not None:
                transport.abort()  # a reset: no status line, the client sees a broken connection
            return web.Response(status=499)  # counted as "no answer"; never reaches the client
        resp = self.response(fault.status, service)
        if fault.retry_after is not None:
            resp.headers["Retry-After"] = str(fault.retry_after)
        return resp

    @staticmethod
    def response(status: int, service: Service) -> web.Response:
        """GitHub's answer for an injected status."""
        if service == "rest":
            if status == 502:
                return web.Response(status=502, text=_BAD_GATEWAY_HTML, content_type="text/html")
            body: dict[str, Any] = _REST_BODIES.get(status) or {
                "message": "Server Error", "documentation_url": _DOCS, "status": str(status)
            }  # fmt: skip
            return web.json_response(body, status=status)
        key = _ACTIONS_TYPES.get(status, "InternalServerErrorException")
        text = json.dumps({
            "$id": "1", "innerException": None, "message": f"Injected {status}",
            "typeName": f"GitHub.DistributedTask.WebApi.{key}, GitHub.DistributedTask.WebApi",
            "typeKey": key, "errorCode": 0, "eventId": 3000,
        })  # fmt: skip
        return web.Response(status=status, text=text, content_type="application/json")


def answered(request: web.Request, resp: web.StreamResponse) -> int:
    """The status to count for a request: 0 when its connection was closed unanswered."""
    transport = request.transport
    return 0 if transport is None or transport.is_closing() else resp.status


__all__ = ["ERROR_KINDS", "PAGE_FAULT_KINDS", "Fault", "GitHubFaults", "answered"]
