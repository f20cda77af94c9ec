"""Reliability #19: someone deletes runner pods continuously (25 s in `make test`, a minute in
`make test-slow`). The runner count
never exceeds maxRunners, replacements follow deletions (no amplification), GitHub calls
stay proportional, and once it stops the set settles back with nothing left over."""

from __future__ import annotations

import asyncio
import time

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.support.factories import make_scale_set
from tests.support.fleet import Fleet
from tests.support.kube import wait_for

MAX = 4


@pytest.mark.parametrize("duration", [25.0, pytest.param(60.0, marks=pytest.mark.slow)])
async def test_continuous_pod_deletion_is_bounded_and_converges(
    running_fleet: Fleet, duration: float
) -> None:
    f = running_fleet
    await f.apply_scale_set(make_scale_set("linux", config_url=f.config_url, min_runners=MAX,
                                           max_runners=MAX))  # fmt: skip
    await f.expect_runners("linux", idle=MAX)
    core = client.CoreV1Api(f.kube)
    issued_before = len(f.github.jit_issued)
    requests_before = sum(f.github.requests.values())
    deleted = 0
    peak = 0
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        pods = await f.pods("linux")
        live = [p for p in pods if not p.metadata.deletion_timestamp
                and p.status.phase in ("Pending", "Running")]  # fmt: skip
        peak = max(peak, len(live))
        for pod in live[:1]:  # one at a time, as fast as the loop goes
            try:
                await core.delete_namespaced_pod(pod.metadata.name, f.namespace,
                                                 grace_period_seconds=0)  # fmt: skip
                deleted += 1
            except ApiException as err:
                if err.status != 404:
                    raise
        await asyncio.sleep(0.1)
    issued = len(f.github.jit_issued) - issued_before
    requests = sum(f.github.requests.values()) - requests_before

    assert peak <= MAX
    assert deleted > duration / 3, deleted  # replacements keep coming (as 20 a minute did)
    # Each deleted runner is replaced once at most: no amplification.
    assert issued <= deleted + MAX, (issued, deleted)
    # GitHub traffic grows with the replacements, not with a hot loop: per replacement a JIT
    # config, a registration delete and the runner lists of the rounds its pod events wake.
    assert requests <= 8 * (deleted + MAX), (requests, deleted)
    print(
        f"deleted {deleted} pods in {duration:.0f}s; {issued} JIT configs; "
        f"{requests} GitHub requests; peak live pods {peak}"
    )

    await f.expect_runners("linux", idle=MAX, within=60)
    await wait_for(
        lambda: asyncio.sleep(0, f.registrations("linux")),
        lambda regs: len(regs) == MAX, what="registrations back to maxRunners",
    )  # fmt: skip
    assert len(await f.secrets("linux")) == MAX
