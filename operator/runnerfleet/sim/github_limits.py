"""GitHub's REST limits as the fake GitHub enforces them: primary budgets, secondary limits, pages.

The figures are GitHub's published ones (docs/local-cluster.md, "The fake GitHub's limits"):

- primary: 5,000 requests per hour per budget; one budget per App installation (every
  installation token minted for it shares it), one per plain token (a PAT is a user budget);
  a 304 never counts; the hour starts at the budget's first request;
- secondary: at most 100 requests in flight per budget, and 900 points per minute per endpoint
  (method + route template) per budget, reads 1 point, writes 5 (so 180 JIT configs a minute);
- pages: `per_page` defaults to 30, at most 100.

Layer: tooling (sim). Pure: no I/O; time comes from an injected clock.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

PRIMARY_WINDOW = 3600.0  # seconds: the primary budget resets an hour after its first request
SECONDARY_WINDOW = 60.0  # seconds: the sliding window of the points limit
UNLIMITED = 10**9  # the "limit" a budget reports when limits are off
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})

T = TypeVar("T")


@dataclass(frozen=True)
class GitHubLimits:
    """What the fake enforces; the defaults are GitHub's (github.com, one App installation)."""

    enabled: bool = True
    """False: no primary or secondary refusals (pagination and counting stay)."""
    primary_per_hour: int = 5000
    """Requests per hour per budget (installation or token); 304s are free."""
    per_page_default: int = 30
    """Items per page when the request does not say `per_page`."""
    per_page_max: int = 100
    """The most items a page holds, whatever `per_page` asks."""
    max_concurrent: int = 100
    """Requests in flight at once per budget; one more is refused (secondary limit)."""
    points_per_minute: int = 900
    """Points per endpoint per budget in any 60 s window (secondary limit)."""
    read_points: int = 1
    """Points a GET/HEAD costs."""
    write_points: int = 5
    """Points a POST/PATCH/PUT/DELETE costs."""
    latency: float = 0.0
    """Seconds each admitted request takes (held while in flight)."""

    @classmethod
    def off(cls, latency: float = 0.0) -> GitHubLimits:
        """No rate limits at all: the fake's behaviour before it modelled GitHub's limits."""
        return cls(enabled=False, latency=latency)

    def points(self, method: str) -> int:
        return self.write_points if method.upper() in WRITE_METHODS else self.read_points


@dataclass
class RateLimit:
    """One primary budget (GitHub's `core` resource for one installation or token)."""

    limit: int = 5000
    used: int = 0
    reset_at: float = field(default_factory=lambda: time.time() + PRIMARY_WINDOW)
    name: str = "installation"
    """Who owns it, as GitHub's refusal names it: "installation ID 7", "user ID 3"."""
    in_flight: int = 0

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(self.remaining),
            "x-ratelimit-used": str(self.used),
            "x-ratelimit-reset": str(int(self.reset_at)),
            "x-ratelimit-resource": "core",
        }


@dataclass
class _PointWindow:
    """Points spent on one endpoint by one budget in the last SECONDARY_WINDOW seconds."""

    spent: deque[tuple[float, int]] = field(default_factory=deque)
    total: int = 0

    def prune(self, now: float) -> None:
        while self.spent and self.spent[0][0] <= now - SECONDARY_WINDOW:
            self.total -= self.spent.popleft()[1]

    def retry_after(self, now: float, points: int, cap: int) -> int:
        """Whole seconds until `points` more fit under `cap` (at least 1)."""
        excess, freed = self.total + points - cap, 0
        for at, spent in self.spent:
            freed += spent
            if freed >= excess:
                return max(1, math.ceil(at + SECONDARY_WINDOW - now))
        return max(1, math.ceil(SECONDARY_WINDOW))


class Limiter:
    """Primary budgets and secondary windows, keyed by budget; time from `clock`."""

    def __init__(self, limits: GitHubLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.clock = clock
        self.budgets: dict[str, RateLimit] = {}
        self._windows: dict[tuple[str, str], _PointWindow] = {}
        self._exhausted_until = 0.0

    def budget(self, key: str, name: str) -> RateLimit:
        """The budget `key`, created on first use and renewed once its hour is over."""
        now = self.clock()
        budget = self.budgets.get(key)
        if budget is None or now >= budget.reset_at:
            limit = self.limits.primary_per_hour if self.limits.enabled else UNLIMITED
            budget = RateLimit(limit=limit, reset_at=now + PRIMARY_WINDOW, name=name)
            if now < self._exhausted_until:  # exhausted on purpose before this budget existed
                budget.used, budget.reset_at = limit, self._exhausted_until
            self.budgets[key] = budget
        return budget

    def exhaust(self, reset_in: float) -> None:
        """Every budget, existing or new, is spent until now + reset_in (limits on or off)."""
        self._exhausted_until = self.clock() + reset_in
        for budget in self.budgets.values():
            budget.used, budget.reset_at = budget.limit, self._exhausted_until

    def primary_retry_after(self, budget: RateLimit) -> int | None:
        """Seconds to wait if the budget is spent, else None."""
        if budget.remaining > 0:
            return None
        return max(1, math.ceil(budget.reset_at - self.clock()))

    def secondary_retry_after(self, key: str, budget: RateLimit, endpoint: str) -> int | None:
        """Seconds to wait if this request breaks a secondary limit, else None.

        An admitted request spends its points; a refused one does not (so a client that waits
        `retry-after` gets through).
        """
        if not self.limits.enabled:
            return None
        if budget.in_flight >= self.limits.max_concurrent:
            return 1
        now = self.clock()
        window = self._windows.setdefault((key, endpoint), _PointWindow())
        window.prune(now)
        points = self.limits.points(endpoint.partition(" ")[0])
        if window.total + points > self.limits.points_per_minute:
            return window.retry_after(now, points, self.limits.points_per_minute)
        window.spent.append((now, points))
        window.total += points
        return None

    def aggregate(self) -> RateLimit:
        """All budgets as one: limits and uses summed, the earliest reset."""
        if not self.budgets:
            limit = self.limits.primary_per_hour if self.limits.enabled else UNLIMITED
            return RateLimit(limit=limit, reset_at=self.clock() + PRIMARY_WINDOW, name="all")
        if len(self.budgets) == 1:
            return next(iter(self.budgets.values()))
        budgets = list(self.budgets.values())
        return RateLimit(
            limit=sum(b.limit for b in budgets),
            used=sum(b.used for b in budgets),
            reset_at=min(b.reset_at for b in budgets),
            name="all",
            in_flight=sum(b.in_flight for b in budgets),
        )


@dataclass(frozen=True)
class Page:
    """One page of a list: its items and the page numbers the `Link` header names."""

    items: list[Any]
    page: int
    last: int

    def links(self) -> dict[str, int]:
        """rel -> page number, in GitHub's order; empty when everything fits on one page."""
        if self.last <= 1 and self.page <= 1:
            return {}
        rels: dict[str, int] = {}
        if self.page > 1:
            rels["prev"] = self.page - 1
        if self.page < self.last:
            rels["next"] = self.page + 1
            rels["last"] = self.last
        if self.page > 1:
            rels["first"] = 1
        return rels


def paginate(items: list[T], query: Mapping[str, str], limits: GitHubLimits) -> Page:
    """The page `query` asks for (`per_page`, `page`), as GitHub cuts it."""
    per_page = _int(query.get("per_page"), limits.per_page_default)
    per_page = min(limits.per_page_max, per_page if per_page >= 1 else limits.per_page_default)
    page = max(1, _int(query.get("page"), 1))
    last = max(1, math.ceil(len(items) / per_page))
    return Page(items[(page - 1) * per_page : page * per_page], page, last)


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


__all__ = ["GitHubLimits", "Limiter", "Page", "RateLimit", "paginate"]
