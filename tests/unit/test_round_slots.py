"""Round slots: the operator's saturation is visible in its metrics (pure: no apiserver)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from runnerfleet.services.runtime import Runtime
from runnerfleet.services.scale_set import _bounded


def _sample(runtime: Runtime, name: str) -> float:
    value = runtime.metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


async def test_a_round_waiting_for_a_slot_is_measured_and_running_rounds_counted() -> None:
    runtime = Runtime(kube=cast(Any, None), round_slots=asyncio.Semaphore(1))
    release = asyncio.Event()
    running: list[float] = []

    async def first() -> Any:
        running.append(_sample(runtime, "runnerfleet_rounds_running"))
        await release.wait()

    async def second() -> Any:
        return None

    one = asyncio.create_task(_bounded(runtime, first()))
    await asyncio.sleep(0)  # let the first round take the only slot
    two = asyncio.create_task(_bounded(runtime, second()))
    await asyncio.sleep(0.05)  # the second round is now waiting for that slot
    release.set()
    await asyncio.gather(one, two)
    assert running == [1.0]
    assert _sample(runtime, "runnerfleet_rounds_running") == 0.0
    assert _sample(runtime, "runnerfleet_round_slot_wait_seconds_count") == 2.0
    assert _sample(runtime, "runnerfleet_round_slot_wait_seconds_sum") >= 0.05
