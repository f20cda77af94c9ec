"""One GitHub rate-limit budget, and the HTTP transport that meters every request against it.

GitHub gives an App installation (or a token) one primary budget per hour, shared by every
caller that uses it: every scale set and listener on the installation, in every process. The
truth is GitHub's own counter, which every response carries (`x-ratelimit-remaining`,
`x-ratelimit-reset`); a `Budget` follows it, so it survives a leader change without any state
of ours. It also keeps GitHub's secondary limit on writes (900 points per minute per endpoint,
5 points per write: about 180 JIT configs a minute) by pacing writes below it, so a burst is
queued and spread rather than answered 403.

`MeteredTransport` wraps one long-lived connection pool per budget (one TLS context, reused by
every request) and is the single place that counts requests, reads the rate-limit headers and
waits before a write that would exceed the secondary limit.

Layer: gateways. Network I/O (it forwards requests); the budget itself is plain arithmetic.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

WINDOW_SECONDS = 60.0
# GitHub allows 900 points per minute per endpoint; keep a margin for other clients of the App.
WRITE_POINTS_PER_WINDOW = 800
WRITE_POINTS = 5
DEFAULT_HOURLY_LIMIT = 5000
_ID = re.compile(r"/\d+(?=/|$)")


def endpoint_of(method: str, path: str) -> str:
    """`POST /api/v3/orgs/acme/actions/runners/12` -> `POST /orgs/acme/actions/runners/{id}`:
    the unit GitHub's secondary limit counts in (the route, not the URL)."""
    path = path.removeprefix("/api/v3")
    return f"{method.upper()} {_ID.sub('/{id}', path)}"


@dataclass
class Budget:
    """The rate-limit state of one installation or token, as GitHub last reported it."""

    clock: Callable[[], float] = time.time
    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None
    limited_until: float = 0.0  # set when GitHub answered 403/429 for the limit
    points_per_window: int = WRITE_POINTS_PER_WINDOW
    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    _writes: dict[str, deque[float]] = field(default_factory=dict)

    # ------------------------------------------------------------------ primary
    def observe(self, endpoint: str, status: int, headers: httpx.Headers) -> None:
        """Record one response: count it and follow GitHub's counter."""
        self.requests[(endpoint, status)] += 1
        if "x-ratelimit-remaining" in headers:
            self.remaining = int(headers["x-ratelimit-remaining"])
            self.limit = int(headers.get("x-ratelimit-limit", self.limit or 0)) or self.limit
            if "x-ratelimit-reset" in headers:
                self.reset_at = float(headers["x-ratelimit-reset"])
        if status in (403, 429):
            retry = headers.get("retry-after")
            if retry is not None:
                self.limited_until = max(self.limited_until, self.clock() + float(retry))
            elif self.remaining == 0 and self.reset_at is not None:
                self.limited_until = max(self.limited_until, self.reset_at)

    @property
    def hourly_limit(self) -> int:
        return self.limit or DEFAULT_HOURLY_LIMIT

    def exhausted(self) -> bool:
        return self.clock() < self.limited_until

    def per_second(self) -> float:
        """Requests per second the rest of this hour can afford (GitHub's view), or the
        average rate of a full hour while no response has been seen yet."""
        now = self.clock()
        if self.remaining is None or self.reset_at is None or self.reset_at <= now:
            return self.hourly_limit / 3600.0
        return self.remaining / max(1.0, self.reset_at - now)

    # ------------------------------------------------------------------ secondary (writes)
    def _window(self, endpoint: str) -> deque[float]:
        window = self._writes.setdefault(endpoint, deque())
        horizon = self.clock() - WINDOW_SECONDS
        while window and window[0] <= horizon:
            window.popleft()
        return window

    def writes_available(self, endpoint: str) -> int:
        """How many more writes to `endpoint` fit in the current minute."""
        used = len(self._window(endpoint)) * WRITE_POINTS
        return max(0, (self.points_per_window - used) // WRITE_POINTS)

    def write_free_at(self, endpoint: str) -> float:
        """When the next write to `endpoint` fits in its window (now, if it does already)."""
        window = self._window(endpoint)
        slots = self.points_per_window // WRITE_POINTS
        if len(window) < slots:
            return self.clock()
        return window[len(window) - slots] + WINDOW_SECONDS

    def reserve_write(self, endpoint: str) -> float:
        """Book one write to `endpoint`; returns how long to wait before sending it."""
        window = self._window(endpoint)
        now = self.clock()
        slots = self.points_per_window // WRITE_POINTS
        start = now
        if len(window) >= slots:
            start = max(now, window[len(window) - slots] + WINDOW_SECONDS)
        window.append(start)
        return start - now


class MeteredTransport(httpx.AsyncBaseTransport):
    """A long-lived connection pool that every client of one budget shares.

    githubkit opens an httpx client per call (or per `async with`); all of them use this
    transport, so connections and TLS are reused across rounds and scale sets. Closing a
    client does not close the pool: `close()` does, once, when the process stops.
    """

    def __init__(self, budget: Budget, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.budget = budget
        self._inner = inner or httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=50))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        endpoint = endpoint_of(request.method, request.url.path)
        app_auth = "/app/" in request.url.path  # the App's own JWT budget, not the installation's
        if request.method not in ("GET", "HEAD") and not app_auth:
            delay = self.budget.reserve_write(endpoint)
            if delay > 0:
                await asyncio.sleep(delay)  # paced below the secondary limit: queued, not 403'd
        response = await self._inner.handle_async_request(request)
        if not app_auth:
            self.budget.observe(endpoint, response.status_code, response.headers)
        return response

    async def aclose(self) -> None:
        """Clients come and go; the pool stays (see `close`)."""

    async def close(self) -> None:
        await self._inner.aclose()
