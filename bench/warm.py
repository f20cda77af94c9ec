"""Warm-pool simulator (issue 14 part 2): replay job arrival traces through the real planning
code and compare warm-pool policies by p95 queue wait and idle runner-minutes.

Each policy runs the same traces through `planning.runners.desired_runners` (the operator's
desired count: min(max, effective minimum + assigned jobs)) with the effective minimum as the
operator computes it: `minRunners`, `planning.floors.floor_at` for scheduled floors, and
`planning.forecast.recommend` over a model the simulated listener keeps with
`planning.forecast.observe`, as the real one does. Around that, a small discrete-time model
of a scale set: the planner's round every `--tick` seconds, runners ready `--startup` seconds
after they are created (pod start + registration), one job per runner (ephemeral), idle
runners removed only after `--scale-down-delay` of lower demand (busy ones never).

Traces are synthetic (no public CI arrival data ships in the package registries this
workplace reaches; the GitHub Archive clients there only fetch from the network): per
weekday, Poisson arrivals whose rate follows working hours in the team's zone (a ramp at
08:00-10:00, a lunch dip, a tail to 19:00, a trickle at night), quiet weekends, and bursts
(a push fanning out a matrix: 10-40 jobs within a minute, a few per working day). Job
durations are log-normal (median 4 min). The first `--learn-weeks` weeks are replayed but not
measured (the predictive model learns from them; the other policies do not care).

    python bench/warm.py                       # 5 seeds, 3 weeks each: bench/warm.json
    python bench/warm.py --seeds 1 --weeks 2   # a quick look

Layer: tooling (a benchmark script, outside the package). Pure computation; writes the
output file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import heapq
import json
import math
import platform
import random
import statistics
import sys
import time
import zoneinfo
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from runnerfleet.models.runner_scale_set import Demand, ScheduledFloor
from runnerfleet.planning.floors import floor_at
from runnerfleet.planning.forecast import ArrivalModel, observe, recommend
from runnerfleet.planning.runners import Limits, desired_runners

START = dt.datetime(2026, 11, 2, tzinfo=dt.UTC).timestamp()  # a Monday
ZONE = zoneinfo.ZoneInfo("Europe/Berlin")
MAX_RUNNERS = 100


# ----------------------------------------------------------------------------- traces
def working_rate(t: float, peak: float) -> float:
    """Jobs per hour at `t`: the shape of a team's working day in ZONE."""
    local = dt.datetime.fromtimestamp(t, ZONE)
    if local.weekday() >= 5:
        return 0.02 * peak
    h = local.hour + local.minute / 60
    if h < 7 or h >= 21:
        return 0.03 * peak
    if h < 10:
        return peak * (0.03 + 0.97 * (h - 7) / 3)  # the morning ramp
    if 12 <= h < 13:
        return 0.6 * peak  # lunch
    if h < 17:
        return peak
    return peak * (1 - 0.9 * (h - 17) / 4)  # the evening tail


@dataclass(frozen=True)
class Job:
    arrival: float
    duration: float


def trace(seed: int, weeks: int, peak: float, bursts_per_day: float) -> list[Job]:
    draw = random.Random(seed)  # noqa: S311 (a reproducible trace, not a secret)
    jobs: list[Job] = []
    end = START + weeks * 7 * 86400

    def duration() -> float:
        return min(3600.0, draw.lognormvariate(math.log(240), 0.8))

    t = START
    while t < end:  # Poisson by thinning, minute by minute
        rate = working_rate(t, peak) / 60
        for _ in range(_poisson(draw, rate)):
            jobs.append(Job(t + draw.random() * 60, duration()))
        t += 60
    for day in range(weeks * 7):
        noon = START + day * 86400 + 11 * 3600
        if dt.datetime.fromtimestamp(noon, ZONE).weekday() >= 5:
            continue
        for _ in range(_poisson(draw, bursts_per_day)):
            at = noon - 3 * 3600 + draw.random() * 9 * 3600  # 08:00-17:00 UTC+1
            jobs.extend(
                Job(at + draw.random() * 60, duration()) for _ in range(draw.randint(10, 40))
            )
    return sorted(jobs, key=lambda j: j.arrival)


def _poisson(draw: random.Random, mean: float) -> int:
    k, p, limit = 0, draw.random(), math.exp(-mean)
    while p > limit:
        k += 1
        p *= draw.random()
    return k


# ----------------------------------------------------------------------------- policies
@dataclass(frozen=True)
class Policy:
    name: str
    min_runners: int = 0
    floors: tuple[ScheduledFloor, ...] = ()
    predictive: tuple[float, float] | None = None  # (percentile, lead seconds)


def policies(startup: float) -> list[Policy]:
    working = ScheduledFloor.model_validate({
        "days": ["Mon", "Tue", "Wed", "Thu", "Fri"], "start": "08:30", "end": "18:30",
        "timeZone": "Europe/Berlin", "minRunners": 10,
    })  # fmt: skip
    long_day = working.model_copy(update={"start": "07:00", "end": "21:00"})
    return [
        *(Policy(f"static {n}", min_runners=n) for n in (0, 2, 5, 10)),
        Policy("scheduled floors: weekdays 08:30-18:30 10", floors=(working,)),
        Policy(
            "scheduled floors: weekdays 07:00-21:00 10, minRunners 2",
            min_runners=2,
            floors=(long_day,),
        ),
        Policy("predictive p95, lead = start-up", predictive=(95.0, startup)),
        Policy("predictive p99, lead = start-up", predictive=(99.0, startup)),
        Policy("predictive p99, lead = 2 x start-up", predictive=(99.0, 2 * startup)),
    ]


# ----------------------------------------------------------------------------- simulation
@dataclass
class Result:
    waits: list[float]
    idle_seconds: float
    starting_seconds: float


def simulate(
    jobs: list[Job], policy: Policy, *, tick: float, startup: float, scale_down_delay: float,
    measure_from: float, end: float,
) -> Result:  # fmt: skip
    model = ArrivalModel()
    queue: deque[Job] = deque()  # jobs waiting for a runner, oldest first
    starting: list[float] = []  # heap of ready times
    busy: list[float] = []  # heap of end times
    idle = 0
    waits: list[float] = []
    idle_s = starting_s = 0.0
    lower_since: float | None = None
    i, t = 0, START
    while t < end:
        arrived = 0
        while i < len(jobs) and jobs[i].arrival <= t:
            queue.append(jobs[i])
            arrived += 1
            i += 1
        while busy and busy[0] <= t:  # ephemeral runners end with their job
            heapq.heappop(busy)
        while starting and starting[0] <= t:
            heapq.heappop(starting)
            idle += 1
        idle = _dispatch(queue, idle, busy, t, tick, waits, measure_from)
        # The round: the operator's planning code decides the count.
        floor = floor_at(policy.floors, t) if policy.floors else 0
        if policy.predictive is not None:
            model = observe(model, arrived, t)
            floor = max(floor, recommend(model, t, policy.predictive[1], policy.predictive[0]))
        limits = Limits(min_runners=policy.min_runners, max_runners=MAX_RUNNERS, warm_floor=floor)
        assigned = len(queue) + len(busy)
        demand = _demand(assigned)
        desired = desired_runners(limits, demand)
        total = idle + len(starting) + len(busy)
        if desired > total:
            for _ in range(desired - total):
                heapq.heappush(starting, t + startup)
            lower_since = None
        elif desired < total and idle:
            lower_since = t if lower_since is None else lower_since
            if t - lower_since >= scale_down_delay:
                idle -= min(idle, total - desired)
        else:
            lower_since = None
        if t >= measure_from:
            idle_s += idle * tick
            starting_s += len(starting) * tick
        t += tick
    return Result(waits, idle_s, starting_s)


@lru_cache(maxsize=4096)
def _demand(assigned: int) -> Demand:
    # The listener's report as the planner reads it (built once per count: construction
    # dominated the run time).
    return Demand.model_construct(assigned_jobs=assigned, busy_runners=[])


def _dispatch(
    queue: deque[Job], idle: int, busy: list[float], t: float, tick: float,
    waits: list[float], measure_from: float,
) -> int:  # fmt: skip
    """Idle runners take queued jobs, oldest first. A job that arrived since the last tick
    and finds a runner idle waited for nothing (GitHub hands it over at once); otherwise it
    waited from its arrival to this tick (waits resolve to the tick)."""
    while queue and idle:
        job = queue.popleft()
        idle -= 1
        heapq.heappush(busy, t + job.duration)
        if job.arrival >= measure_from:
            waits.append(0.0 if t - job.arrival <= tick else t - job.arrival)
    return idle


def p95(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


# ----------------------------------------------------------------------------- report
def run(args: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    measure_from = START + args.learn_weeks * 7 * 86400
    end = START + args.weeks * 7 * 86400
    per_policy: dict[str, list[dict[str, float]]] = {}
    for seed in range(1, args.seeds + 1):
        jobs = trace(seed, args.weeks, args.peak, args.bursts)
        for policy in policies(args.startup):
            started = time.monotonic()
            r = simulate(
                jobs, policy, tick=args.tick, startup=args.startup,
                scale_down_delay=args.scale_down_delay, measure_from=measure_from, end=end,
            )  # fmt: skip
            row = {
                "seed": seed,
                "jobs": len(r.waits),
                "p95_wait_s": round(p95(r.waits), 1),
                "mean_wait_s": round(statistics.fmean(r.waits), 2) if r.waits else 0.0,
                "waited_share": round(sum(1 for w in r.waits if w > 0) / max(1, len(r.waits)), 4),
                "idle_runner_minutes": round(r.idle_seconds / 60),
                "starting_runner_minutes": round(r.starting_seconds / 60),
            }
            per_policy.setdefault(policy.name, []).append(row)
            progress(f"seed {seed} {policy.name}: {row} ({time.monotonic() - started:.1f}s)")
    return {
        "parameters": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": platform.platform(),
        "policies": {
            name: {"runs": rows, "summary": _summary(rows)} for name, rows in per_policy.items()
        },
    }


def _summary(rows: list[dict[str, float]]) -> dict[str, Any]:
    def spread(key: str) -> dict[str, float]:
        values = [float(r[key]) for r in rows]
        return {"mean": round(statistics.fmean(values), 1), "min": min(values), "max": max(values)}

    return {k: spread(k) for k in ("p95_wait_s", "mean_wait_s", "idle_runner_minutes", "jobs")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="traces (one per seed)")
    parser.add_argument("--weeks", type=int, default=3, help="weeks per trace")
    parser.add_argument("--learn-weeks", type=int, default=1, help="weeks replayed, not measured")
    parser.add_argument("--peak", type=float, default=120.0, help="jobs per hour at peak")
    parser.add_argument("--bursts", type=float, default=2.0, help="bursts per working day")
    parser.add_argument("--startup", type=float, default=60.0, help="runner start-up, seconds")
    parser.add_argument("--tick", type=float, default=5.0, help="seconds between rounds")
    parser.add_argument("--scale-down-delay", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("warm.json"))
    args = parser.parse_args(argv)
    results = run(args, lambda line: print(line, file=sys.stderr, flush=True))
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for name, body in results["policies"].items():
        w, idle = body["summary"]["p95_wait_s"], body["summary"]["idle_runner_minutes"]
        print(f"{name:55s} p95 wait {w['mean']:6.1f}s [{w['min']}-{w['max']}]  idle runner-min "
              f"{idle['mean']:8.0f} [{idle['min']:.0f}-{idle['max']:.0f}]")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
