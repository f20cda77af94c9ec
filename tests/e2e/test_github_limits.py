"""Reliability #25 and #21 at fleet scale: GitHub's secondary limit during a burst, and the
shared runner sweep.

GitHub refuses more than 900 points a minute per endpoint (a JIT registration costs 5). The
fake enforces it; here its limit is lowered to 100 points (20 registrations a minute) and the
operator told to keep under 75 (15 a minute), so a burst of 25 runners needs two minutes'
windows and the test stays short. What must hold: the burst is queued and spread, GitHub
never answers 403, no runner is counted failed, and every runner arrives.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from runnerfleet.localcluster import LocalCluster
from tests.support.factories import make_scale_set
from tests.support.fleet import Fleet, fleet
from tests.support.kube import wait_for

BURST = 25
JIT = "POST /api/v3/orgs/{org}/actions/runners/generate-jitconfig"


@pytest.fixture
async def limited_fleet(
    local_cluster: LocalCluster,
    crds: list[str],
    kube: ApiClient,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Fleet]:
    monkeypatch.setenv("RUNNERFLEET_GITHUB_WRITE_POINTS_PER_MINUTE", "75")
    async with fleet(local_cluster, kube, namespace, tmp_path) as f:
        f.github.limits = replace(f.github.limits, points_per_minute=100)
        f.github._limiter.limits = f.github.limits
        yield f


async def test_a_burst_is_paced_under_the_secondary_limit_not_refused(
    limited_fleet: Fleet,
) -> None:
    f = limited_fleet
    await f.apply_scale_set(
        make_scale_set("burst", config_url=f.config_url, min_runners=0, max_runners=BURST)
    )
    started = time.monotonic()
    await f.set_demand("burst", BURST, sequence=1)
    await f.expect_runners("burst", idle=15, within=30)
    assert len(f.github.jit_issued) == 15, "one minute's share, no more"
    await f.expect_runners("burst", idle=BURST, within=120)
    took = time.monotonic() - started
    assert took >= 55, f"the second share waited for the window ({took:.0f}s)"
    assert f.github.secondary_limited[JIT] == 0, f.github.secondary_limited
    assert sum(f.github.secondary_limited.values()) == 0
    assert sum(f.github.primary_limited.values()) == 0
    status = (await f.scale_set("burst"))["status"]
    assert status["consecutiveFailures"] == 0, "waiting for GitHub is not a runner failure"
    assert len(f.github.jit_issued) == BURST, "no duplicate registrations"


async def test_idle_scale_sets_cost_github_nothing(limited_fleet: Fleet) -> None:
    """Five settled scale sets in an org with other runners: after they settle, the only
    GitHub traffic is the shared sweep, answered 304 (not counted against the limit)."""
    f = limited_fleet
    for i in range(5):
        await f.apply_scale_set(make_scale_set(f"idle-{i}", config_url=f.config_url, min_runners=1))
    for i in range(5):
        await f.expect_runners(f"idle-{i}", idle=1, within=60)
        # ... and the operator has seen it online (a sweep paid for that change already).
        await wait_for(
            functools.partial(f.scale_set, f"idle-{i}"),
            lambda body: (body.get("status") or {}).get("idle") == 1,
            what=f"idle-{i} to report its runner idle",
        )
    f.github.reset_counters()
    # More than two sweep intervals (10 s in tests) and a settled resync (30 s ± 20 %):
    await asyncio.sleep(40)  # an observation window (a negative property), not synchronisation
    assert f.github.counted_requests == 0, f.github.summary()
    assert sum(f.github.not_modified.values()) >= 2, "the sweep kept looking (for free)"
