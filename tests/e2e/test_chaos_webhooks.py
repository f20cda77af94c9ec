"""Webhooks replayed x3 and out of order during a job stream (issue 12, scenario 5).

A team's listener takes `workflow_job` webhooks from the fake GitHub for a REST scale set;
every delivery is sent three times with one `X-GitHub-Delivery` (sim/webhook_replay.py), each
copy after its own random delay, and a share of copies is held back long enough for the job
to have finished, so `completed` often arrives before `queued` and `in_progress` before
`queued`. The listener polls rarely (60 s), so the webhooks carry the demand. What must hold:

- the demand in `status.demand` never counts a job twice: at every sample it is at most the
  jobs created so far minus the jobs whose first `completed` copy went out more than
  MARGIN seconds earlier (the moment the listener could know; a poll only lowers it);
- `status.desired` never asks for a runner that bound does not justify
  (≤ min(maxRunners, minRunners + bound)): no runner is started beyond need;
- every job completes, none lost, no duplicate registration, no orphan after convergence.

The delays are the fault being injected (seeded: RUNNERFLEET_CHAOS_SEED replays a run); every
wait on the system is on a condition with a timeout.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from kubernetes_asyncio import client

from runnerfleet import conventions as c
from runnerfleet.sim.github import FakeJob
from runnerfleet.sim.webhook_replay import WebhookReplay
from tests.support.chaos import (
    DuplicateWatch,
    Outcome,
    all_completed,
    converged,
    feed,
    github_requests,
    record,
    seed,
)
from tests.support.factories import make_scale_set, make_team_listener
from tests.support.fleet import Fleet
from tests.support.kube import wait_for

TEAM = ["self-hosted", "linux", "team-a"]
SET = "team-a-linux"
MIN_RUNNERS, MAX_RUNNERS = 1, 20
HOOK_SECRET = "replayed-hook-secret"  # a test value, never a real secret
# Seconds from a delivery leaving the fake to the demand it moves being readable in status:
# HTTP to the listener, its publish, the status patch; and for `desired`, one operator round.
MARGIN = 3.0
SAMPLE_EVERY = 0.2  # the sampling rate, not a synchronisation


@dataclass
class Scenario:
    jobs: int
    span: float  # seconds the stream lasts
    waves: int
    job_seconds: tuple[float, float]
    copies: int = 3
    spread: float = 1.0  # each copy leaves within this many seconds of the event
    hold_share: float = 0.25  # copies held back `hold` seconds more
    hold: float = 4.0  # longer than most jobs: their `completed` overtakes their `queued`


@dataclass
class Samples:
    status: list[tuple[float, int, int]] = field(default_factory=list)  # (at, demand, desired)
    registered_max: int = 0


async def _setup(f: Fleet) -> None:
    core = client.CoreV1Api(f.kube)
    await core.create_namespaced_secret(f.namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="hook"),
        string_data={"github_webhook_secret": HOOK_SECRET},
    ))  # fmt: skip
    await f.apply_scale_set(make_scale_set(
        SET, config_url=f.config_url, team="team-a", labels=TEAM, min_runners=MIN_RUNNERS,
        max_runners=MAX_RUNNERS, scaleDownDelay="2s",
    ))  # fmt: skip
    await f.apply_team_listener(make_team_listener(
        "team-a", team="team-a", config_url=f.config_url, pollInterval="60s",
        scaleSetSelector={"matchLabels": {c.LABEL_TEAM: "team-a"}},
        webhook={"enabled": True, "secretRef": {"name": "hook"}},
    ))  # fmt: skip
    proc = await f.listener_process(within=60)
    await wait_for(
        lambda: f.team_listener("team-a"),
        lambda t: bool(t.get("status", {}).get("poll", {}).get("lastSuccessfulPoll")),
        what="the listener acting (its first poll reported)", within=60,
    )  # fmt: skip
    await wait_for(_refuses_unsigned(proc.webhook_port), bool, what="the webhook port serving")
    f.github.webhook_url = f"http://127.0.0.1:{proc.webhook_port}/webhook"
    f.github.webhook_secret = HOOK_SECRET.encode()
    await f.expect_runners(SET, idle=MIN_RUNNERS, within=60)


def _refuses_unsigned(port: int) -> Callable[[], Awaitable[bool]]:
    """A probe: True once the listener answers an unsigned delivery with 401 (it serves)."""

    async def probe() -> bool:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"http://127.0.0.1:{port}/webhook", data=b"{}") as resp,
            ):
                return resp.status == 401
        except aiohttp.ClientError:
            return False

    return probe


async def _sample(f: Fleet, samples: Samples, stop: asyncio.Event) -> None:
    while not stop.is_set():
        status = (await f.scale_set(SET)).get("status") or {}
        demand = int((status.get("demand") or {}).get("assignedJobs", 0))
        samples.status.append((time.time(), demand, int(status.get("desired", 0))))
        ours = [r for r in f.github.runners.values() if c.is_runner_of(r.name, SET, f.namespace)]
        samples.registered_max = max(samples.registered_max, len(ours))
        await asyncio.sleep(SAMPLE_EVERY)


def _bound(jobs: list[FakeJob], replay: WebhookReplay) -> Callable[[float, float], int]:
    """Jobs a report read at time t may still count: created by t, less those whose first
    `completed` copy left before t - lag (lag: how long that news takes to reach the
    reader)."""
    done_sent: dict[int, float] = {}
    for copy in replay.sent:
        if copy.action == "completed":
            done_sent[copy.job_id] = min(copy.at, done_sent.get(copy.job_id, copy.at))

    def bound(t: float, lag: float) -> int:
        created = sum(1 for j in jobs if j.created_at <= t)
        return created - sum(1 for at in done_sent.values() if at <= t - lag)

    return bound


def _violations(
    samples: Samples, jobs: list[FakeJob], replay: WebhookReplay
) -> tuple[list[tuple[float, int, int]], list[tuple[float, int, int]]]:
    """Samples where demand counted more jobs than it may, and where desired asked for more
    runners than that demand justifies (the operator reads demand one round later: 2 lags)."""
    bound = _bound(jobs, replay)
    over_demand = [(t, d, bound(t, MARGIN)) for t, d, _ in samples.status if d > bound(t, MARGIN)]
    over_desired = []
    for t, _, want in samples.status:
        justified = min(MAX_RUNNERS, MIN_RUNNERS + bound(t, 2 * MARGIN))
        if want > justified:
            over_desired.append((t, want, justified))
    return over_demand, over_desired


async def _run(f: Fleet, s: Scenario, form: str) -> None:
    run_seed = seed("webhook replay")
    rng = random.Random(run_seed)  # noqa: S311 (a replayable delivery schedule)
    await _setup(f)
    replay = WebhookReplay(
        random.Random(rng.random()),  # noqa: S311
        copies=s.copies, spread=s.spread, hold_share=s.hold_share, hold=s.hold,
    )  # fmt: skip
    f.github.webhook_replay = replay
    f.github.reset_counters()
    f.github.deliveries.clear()  # not a request counter: reset_counters() keeps it
    jobs: list[FakeJob] = []
    samples, stop = Samples(), asyncio.Event()
    sampler = asyncio.create_task(_sample(f, samples, stop))
    dupes = DuplicateWatch(f).start()
    began = time.time()
    try:
        await feed(f, rng, jobs, count=s.jobs, span=s.span, labels=TEAM,
                   job_seconds=s.job_seconds, waves=s.waves)  # fmt: skip
        await all_completed(jobs, within=90 + s.job_seconds[1])
        await wait_for(
            lambda: asyncio.sleep(0, sum(f.github.deliveries.values())),
            lambda answered: answered >= len(replay.sent),
            what="every copy delivered", within=replay.max_delay() + 30,
        )  # fmt: skip
        last_fault = time.time()  # the last copy answered
        left = await converged(f, {SET: MIN_RUNNERS}, within=90)
        convergence = max(0.0, time.time() - last_fault)
    finally:
        stop.set()
        await sampler
        duplicates = await dupes.stop()
    over_demand, over_desired = _violations(samples, jobs, replay)
    issued = [n for n in f.github.jit_issued if c.is_runner_of(n, SET, f.namespace)]
    spare = len(issued) - len(jobs) - MIN_RUNNERS
    answered, counted = github_requests(f)
    peak = max((d for _, d, _ in samples.status), default=0)
    record(Outcome(
        scenario="5 webhooks replayed out of order", form=form,
        faults=f"each delivery x{s.copies}, delays ≤{s.spread:g} s, "
               f"{s.hold_share:.0%} of copies held {s.hold:g} s more",
        jobs=len(jobs), lost=len(f.runners.lost_jobs), duplicates=duplicates,
        orphans=len(left), convergence_s=round(convergence, 1), github_requests=answered,
        github_counted=counted, seed=run_seed, found="none",
        details={
            "copies_sent": len(replay.sent), "replayed": replay.replayed(),
            "jobs_out_of_order": replay.out_of_order(),
            "deliveries_by_status": {str(k): v for k, v in f.github.deliveries.items()},
            "status_samples": len(samples.status), "peak_demand": peak,
            "demand_over_bound": len(over_demand), "desired_over_bound": len(over_desired),
            "registrations_issued": len(issued), "spare_registrations": spare,
            "peak_registered": samples.registered_max, "wall_s": round(time.time() - began, 1),
        },
    ))  # fmt: skip
    assert f.runners.lost_jobs == [], "jobs lost"
    assert {j.conclusion for j in jobs} == {"success"}, Counter(j.conclusion for j in jobs)
    assert len({j.runner_name for j in jobs}) == len(jobs), "a runner ran two jobs"
    assert duplicates == 0, "two registrations with one name"
    assert left == [], f"orphans: {left}"
    assert replay.out_of_order() > 0, "the schedule must deliver some news out of order"
    assert over_demand == [], f"demand above the jobs it may count: {over_demand[:5]}"
    assert over_desired == [], f"desired above what demand justifies: {over_desired[:5]}"


async def test_replayed_out_of_order_webhooks_never_double_count(running_fleet: Fleet) -> None:
    """Short form (make test): 24 jobs in 3 waves over 12 s, every delivery x3."""
    await _run(running_fleet, Scenario(jobs=24, span=12.0, waves=3, job_seconds=(1.0, 3.0)),
               "short")  # fmt: skip


@pytest.mark.slow
@pytest.mark.chaos
@pytest.mark.timeout(900)
async def test_replayed_out_of_order_webhooks_long_form(running_fleet: Fleet) -> None:
    """Issue 12's scenario at size (make chaos): 200 jobs in 10 waves over 120 s."""
    await _run(running_fleet, Scenario(jobs=200, span=120.0, waves=10, job_seconds=(1.0, 6.0)),
               "long")  # fmt: skip
