"""Shared pieces of the chaos suite (issue 12; docs/reliability.md).

Every scenario runs a stream of jobs through the whole product while a fault is injected, then
checks the same outcome: 0 jobs lost, 0 duplicate registrations, 0 orphan pods, Secrets or
registrations after convergence, and reports how long convergence took and what GitHub
answered. Each scenario has a short form (in `make test`) and a long form, the issue's size,
marked `chaos` and `slow` (`make chaos`; `make test-slow` also runs it).

`record()` prints a scenario's outcome and, when RUNNERFLEET_CHAOS_RECORD names a file, appends
it there as one JSON line; `make chaos` turns those lines into bench/chaos.json and the table in
docs/reliability.md (bench/chaos.py).

Fault moments (sleeps until a random moment) are the fault being injected, not
synchronisation: every wait on the system is on a condition with a timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runnerfleet import conventions as c
from runnerfleet.sim.github import FakeJob
from tests.support.factories import make_scale_set, make_team_listener
from tests.support.fleet import Fleet
from tests.support.kube import wait_for

RECORD_ENV = "RUNNERFLEET_CHAOS_RECORD"
SEED_ENV = "RUNNERFLEET_CHAOS_SEED"


@dataclass
class Outcome:
    """One scenario run: the columns of docs/reliability.md's table."""

    scenario: str  # "2 control plane restarts", as in the issue's numbering
    form: str  # "short" (make test) or "long" (make chaos)
    faults: str  # what was injected, in a few words
    jobs: int
    lost: int
    duplicates: int  # registrations sharing one name, summed over every sample
    orphans: int  # pods, Secrets or registrations without their partners after convergence
    convergence_s: float  # from the end of the last fault to convergence
    github_requests: int  # answered by the fake GitHub and its Actions service
    github_counted: int  # of them, counted against a primary rate limit
    seed: int | None = None
    found: str = ""  # what this scenario found (bugs fixed), for the table
    details: dict[str, Any] = field(default_factory=dict)  # scenario-specific figures


def record(outcome: Outcome) -> None:
    """Print the outcome (pytest shows it with -s or on failure) and append it to the record."""
    line = json.dumps(asdict(outcome), sort_keys=True)
    print(f"chaos outcome: {line}")
    if path := os.environ.get(RECORD_ENV):
        with Path(path).open("a", encoding="utf-8") as out:
            out.write(line + "\n")


def seed(name: str) -> int:
    """A replayable seed: RUNNERFLEET_CHAOS_SEED, else a fresh one (printed)."""
    value = int(os.environ.get(SEED_ENV) or random.randrange(1 << 32))  # noqa: S311
    print(f"{name} seed: {value} (replay with {SEED_ENV}={value})")
    return value


def github_requests(f: Fleet) -> tuple[int, int]:
    """(answered, counted) by the fake GitHub and its Actions service since the last
    `f.github.reset_counters()`."""
    answered = sum(f.github.requests.values()) + sum(f.github.actions.requests.values())
    return answered, f.github.counted_requests


async def feed(
    f: Fleet,
    rng: random.Random,
    jobs: list[FakeJob],
    *,
    count: int,
    span: float,
    labels: Sequence[str],
    job_seconds: tuple[float, float] = (1.0, 4.0),
    waves: int = 0,
    repo: str = "acme/app",
) -> None:
    """Enqueue `count` jobs at random moments over `span` seconds (in `waves` bursts when
    given), appending each to `jobs` as it is enqueued."""
    if waves:
        crests = [rng.uniform(0, span) for _ in range(waves)]
        moments = sorted(rng.choice(crests) + rng.uniform(0, 1) for _ in range(count))
    else:
        moments = sorted(rng.uniform(0, span) for _ in range(count))
    durations = [rng.uniform(*job_seconds) for _ in range(count)]
    start = time.monotonic()
    for at, duration in zip(moments, durations, strict=True):
        await asyncio.sleep(max(0.0, start + at - time.monotonic()))  # the stream's schedule
        jobs.append(f.github.enqueue_job(repo, list(labels), duration))


async def protocol_team(
    f: Fleet,
    team: str,
    scale_set: str,
    labels: Sequence[str],
    *,
    min_runners: int,
    max_runners: int,
    scale_down_delay: str = "2s",
) -> None:
    """A scale set on the scale-set protocol and its team's listener (polling every 1 s),
    waited for until `min_runners` are idle."""
    github = {"configUrl": f.config_url, "secretRef": {"name": "github-app"},
              "protocol": "scaleSet"}  # fmt: skip
    await f.apply_scale_set(make_scale_set(
        scale_set, config_url=f.config_url, team=team, labels=list(labels), github=github,
        min_runners=min_runners, max_runners=max_runners, scaleDownDelay=scale_down_delay,
    ))  # fmt: skip
    await f.apply_team_listener(make_team_listener(
        team, team=team, config_url=f.config_url, pollInterval="1s",
        scaleSetSelector={"matchLabels": {c.LABEL_TEAM: team}},
    ))  # fmt: skip
    await f.expect_runners(scale_set, idle=min_runners, within=60)


async def all_completed(jobs: list[FakeJob], *, within: float, what: str = "") -> float:
    """Wait until every job completed; return the time (time.time()) the last one started."""
    await wait_for(
        lambda: asyncio.sleep(0, [j.status for j in jobs]),
        lambda states: set(states) <= {"completed"},
        what=what or f"all {len(jobs)} jobs completed",
        within=within,
    )  # fmt: skip
    return max((j.started_at or 0.0) for j in jobs) if jobs else time.time()


class DuplicateWatch:
    """Samples the fake GitHub (one per test) for two registrations sharing one name, every
    `every` seconds until `stop()`."""

    def __init__(self, f: Fleet, every: float = 0.25) -> None:
        self.f, self.every = f, every
        self.samples: list[tuple[float, list[str]]] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> DuplicateWatch:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> int:
        """Stop sampling; return the number of duplicate names seen (summed over samples)."""
        self._stop.set()
        if self._task is not None:
            await self._task
        return sum(len(names) for _, names in self.samples)

    async def _run(self) -> None:
        while not self._stop.is_set():
            names = Counter(r.name for r in self.f.github.runners.values())
            if dupes := [n for n, k in names.items() if k > 1]:
                self.samples.append((time.time(), dupes))
            await asyncio.sleep(self.every)  # the sampling rate, not a synchronisation


async def orphans(f: Fleet, scale_sets: Iterable[str]) -> list[str]:
    """Pods, Secrets and registrations of the scale sets that lack one of their partners
    (a live runner has all three, with one name)."""
    found: list[str] = []
    for name in scale_sets:
        pods = {p.metadata.name for p in await f.pods(name) if not p.metadata.deletion_timestamp}
        secrets = {s.metadata.name for s in await f.secrets(name)}
        registered = {
            r.name for r in f.github.runners.values() if c.is_runner_of(r.name, name, f.namespace)
        }  # fmt: skip
        whole = pods & secrets & registered
        found += sorted((pods | secrets | registered) - whole)
    return found


async def converged(f: Fleet, scale_sets: dict[str, int], *, within: float = 90.0) -> list[str]:
    """Wait until each scale set holds exactly its minRunners idle runners (given as
    {name: minRunners}) with no busy one, then return the orphans left (expected: none)."""
    for name, idle in scale_sets.items():
        await f.expect_runners(name, idle=idle, within=within)
    return await orphans(f, scale_sets)
