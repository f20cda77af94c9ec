"""Queue depth end to end (issue 13): 3 queued + 2 running jobs show as 3 queued and 2 running
in the listener's metrics, the scale set's status.demand, the TeamListener's status and
`runnerfleet status --json`, on both protocols. maxRunners 2 holds the other 3 jobs queued;
the simulated runners keep 2 running (long jobs)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runnerfleet import conventions as c
from runnerfleet.localcluster import LocalCluster
from tests.support.factories import make_scale_set, make_team_listener
from tests.support.fleet import Fleet
from tests.support.kube import wait_for
from tests.support.processes import run_cli

TEAM = "team-q"
LABELS = ["self-hosted", "linux", TEAM]
SET = "team-q-linux"


async def _team(f: Fleet, protocol: str) -> None:
    await f.apply_scale_set(make_scale_set(
        SET, config_url=f.config_url, team=TEAM, labels=LABELS, protocol=protocol, min_runners=0,
        max_runners=2,
    ))  # fmt: skip
    await f.apply_team_listener(make_team_listener(
        TEAM, team=TEAM, config_url=f.config_url, repositories=["app"], pollInterval="1s",
        scaleSetSelector={"matchLabels": {c.LABEL_TEAM: TEAM}},
    ))  # fmt: skip


async def _gauges(port: int) -> dict[str, float]:
    """The listener's queue gauges of the scale set, by family."""
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        text = await resp.text()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("scale_set") == SET
    }


def _demand(o: dict[str, Any]) -> tuple[Any, ...]:
    d = (o.get("status") or {}).get("demand") or {}
    return (d.get("assignedJobs"), d.get("queuedJobs"), d.get("runningJobs"))


def _poll(o: dict[str, Any]) -> tuple[Any, ...]:
    p = (o.get("status") or {}).get("poll") or {}
    return (p.get("queuedJobs"), p.get("runningJobs"))


@pytest.mark.parametrize("protocol", [c.PROTOCOL_SCALE_SET, c.PROTOCOL_REST])
async def test_three_queued_and_two_running_show_apart_everywhere(
    running_fleet: Fleet, local_cluster: LocalCluster, protocol: str
) -> None:
    f = running_fleet
    await _team(f, protocol)
    proc = await f.listener_process(within=60)
    if protocol == c.PROTOCOL_SCALE_SET:  # jobs queued before the session would wait for it
        await wait_for(lambda: f.scale_set(SET), lambda o: _demand(o)[0] == 0,
                       what="the session's first (empty) demand report", within=60)  # fmt: skip
    for _ in range(5):
        f.github.enqueue_job("acme/app", LABELS, duration=600.0)
    await f.expect_runners(SET, idle=0, busy=2, within=60)

    await wait_for(lambda: f.scale_set(SET), lambda o: _demand(o) == (5, 3, 2),
                   what="status.demand: 5 assigned = 3 queued + 2 running", within=30)  # fmt: skip
    await wait_for(lambda: f.team_listener(TEAM), lambda o: _poll(o) == (3, 2),
                   what="TeamListener status.poll: 3 queued, 2 running", within=30)  # fmt: skip
    gauges = await wait_for(
        lambda: _gauges(proc.metrics_port),
        lambda g: (g.get("runnerfleet_listener_queue_depth"),
                   g.get("runnerfleet_listener_running_jobs")) == (3, 2),
        what="listener gauges: queue depth 3, running 2", within=30,
    )  # fmt: skip
    assert gauges["runnerfleet_listener_queued_jobs"] == 5  # deprecated: both, as before

    done = await asyncio.to_thread(
        run_cli, "status", "--kubeconfig", str(local_cluster.kubeconfig), "-n", f.namespace,
        "--json", timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    [team] = report["teams"]
    assert (team["team"], team["queued"], team["running"]) == (TEAM, 3, 2)
    [scale_set] = report["scaleSets"]
    assert (scale_set["queued"], scale_set["running"], scale_set["demand"]) == (3, 2, 5)
    assert (report["totals"]["queued"], report["totals"]["running"]) == (3, 2)
