"""One coroutine run as a background task, started once and stopped (cancelled) cleanly.

Used by the informers (gateways) and the registration books (services), which each run a loop
for the life of the process. `until_signalled` runs a process's main coroutine until SIGTERM
or SIGINT (the listener and the webhook relay).

Layer: bottom (beside conventions and metrics). No I/O of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any


class Background:
    """`start()` runs `loop()` as a task (once); `stop()` cancels it and waits for it."""

    def __init__(self, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._loop = loop
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


async def until_signalled(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` until it returns or SIGTERM/SIGINT cancels it (its `finally` cleans up)."""
    task = asyncio.create_task(main)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
