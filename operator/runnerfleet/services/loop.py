"""The per-object reconcile loop shared by RunnerScaleSets and TeamListeners.

One loop per object (a kopf daemon) means rounds of the same object never overlap. After each
round it waits for a wake-up (an event on the object or its children) or the resync period,
and never starts rounds closer than `min_gap` apart, so a burst of events costs one round.

Layer: services.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from runnerfleet.gateways.kubernetes import KubeError, NotFoundError

log = logging.getLogger("runnerfleet.loop")


async def reconcile_loop(
    what: str,
    round_: Callable[[], Awaitable[object]],
    wake: asyncio.Event,
    stopped: Callable[[], bool],
    resync: float | Callable[[object], float],
    min_gap: float = 0.0,
) -> None:
    """Run `round_` until `stopped()` or the object is gone (NotFoundError).

    `resync` is the seconds to wait for a wake-up before the next round, or a function of
    the round's result giving them (a round with timers running asks to come back sooner).
    """
    while not stopped():
        wake.clear()
        started = time.monotonic()
        result: object = None
        try:
            result = await round_()
        except NotFoundError:
            return
        except KubeError as err:
            log.warning("round for %s failed, retrying: %s", what, err)
        wait = resync(result) if callable(resync) else resync
        # asyncio.timeout, not wait_for: wait_for wraps the wait in a Task of its own, one
        # more per object loop (1,000 at issue #10's shape, ~1.8 KiB each).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await wake.wait()
        gap = min_gap - (time.monotonic() - started)
        if gap > 0:
            await asyncio.sleep(gap)  # rate limit: coalesce bursts of events into one round
