"""`runnerfleet status` against a running fleet: the JSON reflects the team's queue and its
runners by state, the table renders, and --watch keeps refreshing."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from runnerfleet import conventions as c
from runnerfleet.localcluster import LocalCluster
from tests.support.factories import make_scale_set, make_team_listener
from tests.support.fleet import Fleet
from tests.support.kube import wait_for

TEAM_A = ["self-hosted", "linux", "team-a"]


async def _status(cluster: LocalCluster, namespace: str, *args: str) -> str:
    """Run the CLI without blocking the loop the fake GitHub and runners live in."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runnerfleet.cli", "status", "--kubeconfig", str(cluster.kubeconfig),
        "-n", namespace, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_status_json_reflects_a_running_fleet(
    running_fleet: Fleet, local_cluster: LocalCluster
) -> None:
    f = running_fleet
    await f.apply_scale_set(make_scale_set(
        "team-a-linux", config_url=f.config_url, team="team-a", labels=TEAM_A, min_runners=1,
        max_runners=10,
    ))  # fmt: skip
    await f.apply_team_listener(make_team_listener(
        "team-a", team="team-a", config_url=f.config_url, repositories=["app"],
        scaleSetSelector={"matchLabels": {c.LABEL_TEAM: "team-a"}}, pollInterval="1s",
    ))  # fmt: skip
    for _ in range(3):
        f.github.enqueue_job("acme/app", TEAM_A, duration=30.0)
    await f.expect_runners("team-a-linux", idle=1, busy=3, within=45)
    # The operator's view: it learns a runner is online from the next shared sweep.
    await wait_for(
        lambda: f.scale_set("team-a-linux"),
        lambda o: ((o.get("status") or {}).get("busy"), (o.get("status") or {}).get("idle"))
        == (3, 1),
        what="status.busy == 3 and status.idle == 1",
    )  # fmt: skip
    await wait_for(
        lambda: f.team_listener("team-a"),
        lambda o: ((o.get("status") or {}).get("poll") or {}).get("runningJobs") == 3,
        what="the listener reports 3 running jobs",
    )  # fmt: skip

    report: dict[str, Any] = json.loads(await _status(local_cluster, f.namespace, "--json"))
    [team] = report["teams"]
    assert (team["team"], team["namespace"], team["ready"]) == ("team-a", f.namespace, True)
    assert (team["queued"], team["running"]) == (0, 3)  # running jobs are not queued
    assert team["scaleSets"] == ["team-a-linux"]
    assert team["runners"] == {"busy": 3, "idle": 1, "pending": 0, "failed": 0}
    [scale_set] = report["scaleSets"]
    assert scale_set["demand"] == 3
    assert (scale_set["desired"], scale_set["busy"], scale_set["idle"]) == (4, 3, 1)
    assert scale_set["ready"] is True
    assert report["totals"]["busy"] == 3
    assert report["recentFailures"] == []

    table = await _status(local_cluster, f.namespace)
    assert "team-a-linux" in table
    assert "Scale sets" in table

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runnerfleet.cli", "status", "--kubeconfig",
        str(local_cluster.kubeconfig), "-n", f.namespace, "--watch", "--json", "--interval", "0.5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        frames = [json.loads(await asyncio.wait_for(proc.stdout.readline(), 30)) for _ in range(2)]
    finally:
        proc.terminate()
        await proc.wait()
    assert all(frame["teams"][0]["team"] == "team-a" for frame in frames)
