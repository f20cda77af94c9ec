"""Scheduled floors end to end (issue 14 part 2): a window a few seconds ahead raises the idle
runners at its start and lowers them at its end, on time: the scale-set loop wakes at the
window's edges instead of waiting for its idle resync (24-36 s)."""

from __future__ import annotations

import datetime as dt
import time

from runnerfleet import conventions as c
from tests.support.factories import make_scale_set
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
