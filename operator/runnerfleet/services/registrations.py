"""GitHub's view of the runners in one registration scope, shared by every scale set there.

Today's cost problem was every scale set listing its whole org's runners every round. Here one
`RegistrationBook` per (scope, credentials) keeps the last full listing (a *sweep*: every
page, each a conditional GET, so an unchanged page costs nothing) and every scale set reads
its own runners from it. The operator's own writes update the book at once (a JIT
registration appears, a deleted registration disappears), so rounds never wait for a sweep to
see their own work.

When does it sweep?
- when a round asks for it (a runner is waiting to be confirmed online, or past its
  registration deadline), but never closer than `min_interval`, and never faster than its
  share of the installation's hourly budget allows (a sweep that paid for 50 pages waits
  until 50 requests' worth of that share has accrued);
- otherwise every `max_interval`, to find orphans and busy/idle changes; an idle org answers
  304 for every page, which GitHub does not count.

A runner missing from a sweep is unknown, never failed: the planner only fails a runner on
positive evidence gathered after its deadline.

Layer: services. GitHub I/O through the gateway only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from runnerfleet import conventions as c
from runnerfleet.gateways.github import GitHubError, Registration, RunnerPage, RunnerSweep
from runnerfleet.gateways.github_budget import Budget
from runnerfleet.models.github import GitHubTarget
from runnerfleet.tasks import Background

log = logging.getLogger("runnerfleet.registrations")


class Registrar(Protocol):
    """Where a scale set's runners are registered: the REST gateway (a registration scope)
    or a GitHub runner scale set (services/scale_set_protocol.py). Same surface, so the
    planner, the executor and the book serve both."""

    target: GitHubTarget
    budget: Budget

    async def runner_group_id(self, name: str) -> int: ...
    async def create_jit_runner(
        self, name: str, labels: list[str], group_id: int
    ) -> tuple[Registration, str]: ...
    async def delete_runner(self, registration_id: int, name: str) -> None: ...
    async def get_runner(self, runner_id: int) -> Registration | None: ...
    async def runners_named(self, name: str) -> list[Registration]: ...
    async def sweep_runners(self, previous: dict[int, RunnerPage] | None = None) -> RunnerSweep: ...
    def jit_writes_available(self) -> int: ...
    def jit_free_at(self) -> float: ...


@dataclass(frozen=True)
class SweepSettings:
    min_interval: float = 5.0  # seconds between sweeps that a round asked for
    max_interval: float = 60.0  # seconds between sweeps when nobody asks
    budget_share: float = 0.2  # share of the hourly rate limit sweeps may spend


@dataclass(frozen=True)
class Seen:
    """A registration and when GitHub last showed it in that state."""

    registration: Registration
    at: float
    first_at: float  # when this registration was first seen (orphans get a grace period)
    # Registered by this process (a JIT config it created after writing the runner's Secret):
    # with no Secret and no pod left, its runner is gone, so it needs no orphan grace.
    ours: bool = False
    # Seen online or busy at some point: its runner ran, so its one-use JIT config is spent.
    ran: bool = False


def _ran(registration: Registration, old: Seen | None) -> bool:
    return registration.online or registration.busy or (old is not None and old.ran)


@dataclass
class RegistrationBook:
    gateway: Registrar
    settings: SweepSettings = field(default_factory=SweepSettings)
    on_change: Callable[[set[str]], None] = lambda names: None  # runner names that changed
    clock: Callable[[], float] = time.time
    swept_at: float | None = None  # when the last complete sweep began
    last_error: str | None = None
    sweeps: int = 0
    paid_pages: int = 0
    _seen: dict[str, Seen] = field(default_factory=dict)
    # The same registrations by owner (scale set, namespace tag): a round reads its own
    # runners without scanning (and hashing namespaces for) the whole organisation's.
    _owned: dict[tuple[str, str], dict[str, Seen]] = field(default_factory=dict)
    _deleted: dict[int, float] = field(default_factory=dict)  # id -> when we deleted it
    _absent: dict[str, float] = field(default_factory=dict)  # name -> when GitHub lacked it
    _pages: dict[int, RunnerPage] = field(default_factory=dict)
    _asked: asyncio.Event = field(default_factory=asyncio.Event)
    _next_allowed: float = 0.0

    _background: Background | None = None

    def start(self) -> None:
        if self._background is None:
            self._background = Background(self._run)
        self._background.start()

    async def stop(self) -> None:
        if self._background is not None:
            await self._background.stop()

    # ------------------------------------------------------------------ reads (no I/O)
    def runners_of(self, scale_set: str, namespace: str) -> list[Seen]:
        return list(self._owned.get((scale_set, c.namespace_tag(namespace)), {}).values())

    def seen(self, name: str) -> Seen | None:
        return self._seen.get(name)

    def absent_of(self, scale_set: str, namespace: str) -> dict[str, float]:
        """Runner names GitHub said it has no registration for since the last sweep, and when."""
        return {
            name: at for name, at in self._absent.items()
            if c.is_runner_of(name, scale_set, namespace)
        }  # fmt: skip

    def was_absent(self, name: str) -> bool:
        """GitHub said (since the last sweep) it has no registration by this name."""
        return name in self._absent

    def _set(self, name: str, seen: Seen) -> None:
        self._seen[name] = seen
        if (owner := c.runner_owner(name)) is not None:
            self._owned.setdefault(owner, {})[name] = seen

    # ------------------------------------------------------------------ our own writes
    def note(self, registration: Registration, ours: bool = False) -> None:
        """A registration we just created (`ours`) or read (it is at least as fresh as any
        sweep)."""
        now = self.clock()
        old = self._seen.get(registration.name)
        self._set(
            registration.name,
            Seen(
                registration,
                now,
                old.first_at if old else now,
                ours or (old.ours if old else False),
                _ran(registration, old),
            ),
        )

    def forget(self, name: str, registration_id: int | None) -> None:
        """We deleted it (or GitHub said 404): older sweeps must not bring it back."""
        now = self.clock()
        self._seen.pop(name, None)
        owner = c.runner_owner(name)
        if owner is not None and owner in self._owned:
            self._owned[owner].pop(name, None)
        self._absent[name] = now
        if registration_id is not None:
            self._deleted[registration_id] = now

    # ------------------------------------------------------------------ sweeping
    def ask(self) -> None:
        """A round needs fresher evidence; the next allowed sweep happens soon."""
        self._asked.set()

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: wait_for wraps the wait in a second Task, and
            # on the scale-set protocol there is one book per scale set (~1.8 KiB each).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.max_interval):
                    await self._asked.wait()
            now = self.clock()
            wait = max(self._next_allowed, self.gateway.budget.limited_until) - now
            if wait > 0:
                # pacing: sweeps spend only their budget share, and nothing while GitHub says
                # the budget is exhausted
                await asyncio.sleep(wait)
            self._asked.clear()
            try:
                await self.sweep()
            except Exception:  # a bug must not stop every later sweep
                log.exception("runner sweep of %s failed", self.gateway.target.key)
                self._next_allowed = self.clock() + self.settings.min_interval

    async def sweep(self) -> None:
        """One full, conditional listing; merge it; tell who changed."""
        started = self.clock()
        try:
            result = await self.gateway.sweep_runners(self._pages)
        except GitHubError as err:
            self.last_error = str(err)
            self._next_allowed = self.clock() + self.settings.min_interval
            log.warning("runner sweep of %s failed: %s", self.gateway.target.key, err)
            return
        self.last_error = None
        self._pages = result.pages
        self.sweeps += 1
        self.paid_pages += result.paid
        changed = self._merge(result.runners, started)
        self.swept_at = started
        self._next_allowed = started + self._spacing(result.paid)
        if changed:
            self.on_change(changed)

    def _spacing(self, paid: int) -> float:
        budget = self.gateway.budget
        per_second = max(1e-3, budget.hourly_limit * self.settings.budget_share / 3600.0)
        return max(self.settings.min_interval, paid / per_second)

    def _merge(self, runners: tuple[Registration, ...], started: float) -> set[str]:
        """Install a sweep begun at `started`; our notes made after that start win."""
        self._deleted = {i: t for i, t in self._deleted.items() if t >= started}
        self._absent = {n: t for n, t in self._absent.items() if t >= started}
        fresh: dict[str, Seen] = {}
        for reg in runners:
            if reg.id in self._deleted:
                continue
            old = self._seen.get(reg.name)
            fresh[reg.name] = (
                Seen(reg, started, old.first_at, old.ours, _ran(reg, old))
                if old
                else Seen(reg, started, started, ran=_ran(reg, None))
            )
        for name, seen in self._seen.items():
            if seen.at > started:
                fresh[name] = seen  # noted after the sweep began: newer than what it listed
        changed = {
            name for name in fresh.keys() | self._seen.keys()
            if (fresh.get(name) and fresh[name].registration)
            != (self._seen.get(name) and self._seen[name].registration)
        }  # fmt: skip
        self._seen = fresh
        self._owned = {}
        for name, seen in fresh.items():
            if (owner := c.runner_owner(name)) is not None:
                self._owned.setdefault(owner, {})[name] = seen
        return changed
