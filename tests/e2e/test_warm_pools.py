"""Warm pools end to end (issue 14 part 2): a scheduled floor a few seconds ahead raises the
idle runners at its start and lowers them at its end, on time (the scale-set loop wakes at the
window's edges instead of waiting for its idle resync, 24-36 s); a predictive set keeps the
forecast's percentile warm from the arrivals its status stores."""

from __future__ import annotations

import datetime as dt
import time

from kubernetes_asyncio import client

from runnerfleet import conventions as c
from runnerfleet.planning.forecast import ArrivalModel, decode, encode
from tests.support.factories import make_scale_set, make_team_listener
from tests.support.fleet import Fleet
from tests.support.kube import wait_for

# A round woken at an edge creates pods at once; the simulated runners register within a
# few seconds. Far less than the idle resync the loop would otherwise wait for.
ON_TIME = 12.0


def _clock(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%H:%M:%S")


async def test_a_scheduled_floor_raises_and_lowers_idle_runners_at_its_edges(
    running_fleet: Fleet,
) -> None:
    f = running_fleet
    start = float(int(time.time()) + 10)
    end = start + 15
    body = make_scale_set(
        "linux", config_url=f.config_url, min_runners=1, max_runners=6, scaleDownDelay="1s",
        scheduledFloors=[
            {"name": "soon", "start": _clock(start), "end": _clock(end), "minRunners": 3}
        ],
    )  # fmt: skip
    await f.apply_scale_set(body)
    await f.expect_runners("linux", idle=1, within=start - time.time())

    def idle() -> int:
        return sum(
            1 for r in f.github.runners.values()
            if c.is_runner_of(r.name, "linux", f.namespace) and r.status == "online" and not r.busy
        )  # fmt: skip

    async def probe() -> int:
        return idle()

    await wait_for(probe, lambda n: n == 3, what="3 idle runners in the window", within=40)
    raised = time.time()
    assert start <= raised < start + ON_TIME, raised - start
    await f.expect_runners("linux", idle=3, within=5)

    await wait_for(probe, lambda n: n == 1, what="back to 1 idle runner", within=40)
    lowered = time.time()
    assert end <= lowered < end + ON_TIME, lowered - end
    await f.expect_runners("linux", idle=1, within=15)
    status = (await f.scale_set("linux"))["status"]
    assert status["desired"] == 1


async def test_predictive_keeps_the_forecast_percentile_warm(running_fleet: Fleet) -> None:
    """The operator reads the learnt arrivals from status.demand.arrivals (as the listener
    stores them) and keeps the Poisson p99 of the forecast over the lead time idle: 60 jobs an
    hour over 1 minute is a mean of 1, whose p99 is 4."""
    f = running_fleet
    now = time.time()
    hour = int(now // 3600)
    steady = ArrivalModel(hour=hour, hours_seen=4 * 168, weekly=(60.0,) * 168, daily=(60.0,) * 24)
    body = make_scale_set(
        "linux", config_url=f.config_url, min_runners=1, max_runners=8, warmPolicy="predictive",
        predictive={"targetPercentile": 99, "leadTime": "1m"},
    )  # fmt: skip
    await f.apply_scale_set(body)
    await f.expect_runners("linux", idle=1, within=30)
    demand = {
        "assignedJobs": 0, "sequence": 1, "listener": "test", "arrivals": encode(steady),
        "observedAt": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }  # fmt: skip
    await client.CustomObjectsApi(f.kube).patch_namespaced_custom_object_status(
        c.GROUP, c.VERSION, f.namespace, c.RUNNER_SCALE_SET_PLURAL, "linux",
        {"status": {"demand": demand}},
        _content_type="application/merge-patch+json",  # type: ignore[call-arg]
    )  # fmt: skip
    await f.expect_runners("linux", idle=4, within=30)
    status = (await f.scale_set("linux"))["status"]
    assert status["desired"] == 4


async def test_the_listener_learns_arrivals_into_the_scale_sets_status(
    running_fleet: Fleet,
) -> None:
    """The real listener (`runnerfleet listen`) counts the jobs matched to a predictive set
    and stores its learnt model in status.demand.arrivals with its demand reports."""
    f = running_fleet
    labels = ["self-hosted", "linux", "team-a"]
    await f.apply_scale_set(make_scale_set(
        "team-a-linux", config_url=f.config_url, team="team-a", labels=labels,
        min_runners=0, max_runners=10, warmPolicy="predictive",
    ))  # fmt: skip
    await f.apply_team_listener(make_team_listener(
        "team-a", team="team-a", config_url=f.config_url, repositories=["app"],
        scaleSetSelector={"matchLabels": {c.LABEL_TEAM: "team-a"}}, pollInterval="2s",
    ))  # fmt: skip
    await f.listener_process()
    for _ in range(5):
        f.github.enqueue_job("acme/app", labels, 2.0)

    async def learnt() -> ArrivalModel | None:
        status = (await f.scale_set("team-a-linux")).get("status") or {}
        return decode((status.get("demand") or {}).get("arrivals"))

    model = await wait_for(
        learnt, lambda m: m is not None and (m.count >= 5 or m.hours_seen > 0),
        what="status.demand.arrivals with the 5 jobs", within=30,
    )  # fmt: skip
    assert model is not None
    assert model.hour >= int(time.time() // 3600) - 1
