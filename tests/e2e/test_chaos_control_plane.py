"""kube-apiserver and etcd restarted during a burst of jobs (issue 12, scenario 2; reliability
item 12: the operator re-lists and converges without duplicates).

A TeamListener feeds a burst of jobs through the fake GitHub's scale-set protocol while the
session's control plane has its kube-apiserver and etcd restarted in place
(`LocalCluster.restart`) at random moments (seeded; the seed is printed and
RUNNERFLEET_CHAOS_SEED replays a run), each staying down for a random second or two. Everything
that talks to the apiserver lives through the outages: the operator (a subprocess), the
listener process, and, in this test's loop, the simulated runners and the listener kubelet.

What must hold: no job lost or run twice, no two registrations sharing a name at any moment,
the operator never exits, and after the last restart the scale set converges to minRunners
idle runners with no orphan pod, Secret or registration.

The restart moments and outage lengths are the fault being injected, not synchronisation:
every wait on the system is on a condition with a timeout. The session cluster is shared with
every other test, so a finally waits until the apiserver is ready again whatever happened.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass

import pytest

from runnerfleet import conventions as c
from runnerfleet.localcluster import LocalCluster
from runnerfleet.sim.github import FakeJob
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
MIN_RUNNERS, MAX_RUNNERS = 1, 30
SCENARIO = "2 control plane restarts"


@dataclass
class Scenario:
    restarts: list[str]  # components, in the order they are restarted
    jobs: int
    span: float  # the burst arrives over this many seconds
    gap: tuple[float, float]  # seconds between one restart being healthy and the next
    down_for: tuple[float, float]  # how long each component stays down
    job_seconds: tuple[float, float] = (1.0, 4.0)


async def _setup(f: Fleet) -> None:
    github = {"configUrl": f.config_url, "secretRef": {"name": "github-app"},
              "protocol": "scaleSet"}  # fmt: skip
    await f.apply_scale_set(make_scale_set(
        SET, config_url=f.config_url, team="team-a", labels=TEAM, github=github,
        min_runners=MIN_RUNNERS, max_runners=MAX_RUNNERS, scaleDownDelay="2s",
    ))  # fmt: skip
    await f.apply_team_listener(make_team_listener(
        "team-a", team="team-a", config_url=f.config_url, pollInterval="1s",
        scaleSetSelector={"matchLabels": {c.LABEL_TEAM: "team-a"}},
    ))  # fmt: skip
    await f.expect_runners(SET, idle=MIN_RUNNERS, within=60)


async def _restarts(
    cluster: LocalCluster, rng: random.Random, s: Scenario, took: list[tuple[str, float, float]]
) -> float:
    """Restart each component of `s.restarts` in turn at random moments; append (component,
    seconds down, seconds from start to healthy) to `took`; return when the last was healthy."""
    for component in s.restarts:
        await asyncio.sleep(rng.uniform(*s.gap))  # the fault: a random moment, not a sync
        down = rng.uniform(*s.down_for)
        # Blocking (stop, outage, start, readiness): off the loop the runners and GitHub use.
        back = await asyncio.to_thread(cluster.restart, component, down_for=down)
        took.append((component, round(down, 1), round(back, 1)))
    return time.time()


async def _ready_again(cluster: LocalCluster) -> None:
    await wait_for(
        lambda: asyncio.to_thread(lambda: cluster.status().get("healthy")),
        bool, what="the session apiserver ready again", within=90,
    )  # fmt: skip


async def _run(f: Fleet, cluster: LocalCluster, s: Scenario, form: str) -> None:
    chosen = seed("control-plane chaos")
    rng = random.Random(chosen)  # noqa: S311 (a replayable fault schedule)
    await _setup(f)
    f.github.reset_counters()
    jobs: list[FakeJob] = []
    took: list[tuple[str, float, float]] = []
    duplicates = DuplicateWatch(f).start()
    began = time.time()
    feeding = asyncio.create_task(feed(f, rng, jobs, count=s.jobs, span=s.span,
                                       labels=TEAM, job_seconds=s.job_seconds))  # fmt: skip
    try:
        last_fault = await _restarts(cluster, rng, s, took)
        await feeding
        await all_completed(jobs, within=120 + s.job_seconds[1])
        left = await converged(f, {SET: MIN_RUNNERS}, within=90)
    finally:
        feeding.cancel()
        seen = await duplicates.stop()
        await _ready_again(cluster)
    done = time.time()
    answered, counted = github_requests(f)
    operator_exit = f.operator.proc.poll() if f.operator.proc else None
    record(Outcome(
        scenario=SCENARIO, form=form,
        faults=", ".join(f"{c_} restarted (down {d} s)" for c_, d, _ in took),
        jobs=len(jobs), lost=len(f.runners.lost_jobs), duplicates=seen, orphans=len(left),
        convergence_s=round(done - last_fault, 1), github_requests=answered,
        github_counted=counted, seed=chosen, found=FOUND,
        details={"restarts": [{"component": c_, "down_s": d, "healthy_after_s": b}
                              for c_, d, b in took],
                 "wall_s": round(done - began, 1), "operator_exit": operator_exit,
                 "runners_used": len({j.runner_name for j in jobs})},
    ))  # fmt: skip
    assert f.runners.lost_jobs == [], "jobs lost"
    assert {j.conclusion for j in jobs} == {"success"}, Counter(j.conclusion for j in jobs)
    assert len({j.runner_name for j in jobs}) == len(jobs), "a runner ran two jobs"
    assert seen == 0, f"two registrations with one name: {duplicates.samples[:3]}"
    assert left == [], f"orphans after convergence: {left}"
    assert operator_exit is None, "the operator exited during the outages"


FOUND = (
    "the simulated runners' and listener kubelet's pod watches died for good on a stream cut "
    "by the restart (ClientPayloadError), and a runner's Secret read or Succeeded patch failed "
    "once (fixed: list-then-watch with re-list, retries); the operator itself: none"
)


async def test_control_plane_restarts_during_a_burst(
    running_fleet: Fleet, local_cluster: LocalCluster
) -> None:
    """Short form (make test): the apiserver and etcd restarted once each during 30 jobs."""
    await _run(running_fleet, local_cluster, Scenario(
        restarts=["kube-apiserver", "etcd"], jobs=30, span=10.0, gap=(1.0, 3.0),
        down_for=(0.5, 1.5), job_seconds=(1.0, 3.0),
    ), "short")  # fmt: skip


@pytest.mark.slow
@pytest.mark.chaos
@pytest.mark.timeout(900)
async def test_control_plane_restarts_long_form(
    running_fleet: Fleet, local_cluster: LocalCluster
) -> None:
    """Issue 12's scenario 2 at size (make chaos): the apiserver restarted twice and etcd once
    during a 200-job burst."""
    order = ["kube-apiserver", "etcd", "kube-apiserver"]
    await _run(running_fleet, local_cluster, Scenario(
        restarts=order, jobs=200, span=40.0, gap=(2.0, 8.0), down_for=(1.0, 3.0),
        job_seconds=(2.0, 8.0),
    ), "long")  # fmt: skip
