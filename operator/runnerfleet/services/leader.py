"""Leader election: with several operator replicas, only the Lease holder runs kopf.

A replica blocks in `acquire` until it holds the Lease, then runs the operator while `hold`
renews it; if renewing fails for a whole lease duration, `hold` sets the stop flag, kopf
stops, and the process exits non-zero so Kubernetes restarts it as a candidate. That bounds
the overlap of two acting replicas by the lease duration, as client-go's leaderelection does.

Layer: services.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from runnerfleet.gateways.informer import Informer
from runnerfleet.gateways.kubernetes import (
    AlreadyExistsError,
    ConflictError,
    KubeError,
    KubeGateway,
)
from runnerfleet.planning.lease import (
    LeaseView,
    expires_in,
    lease_spec,
    may_take,
    released_spec,
)

log = logging.getLogger("runnerfleet.leader")


@dataclass
class LeaderElector:
    kube: KubeGateway
    namespace: str
    name: str
    identity: str
    duration: int = 15
    # A standby follows the Lease with a watch (no request per renewal, and a released Lease
    # is taken at once); False: it reads the Lease when the holder's term would end.
    watch: bool = True
    # Written on the Lease with every write (the listener's let the webhook relay select
    # listener Leases on the server instead of watching every Lease in the cluster).
    labels: dict[str, str] = field(default_factory=dict)

    _held: dict[str, Any] | None = None  # the Lease as we last wrote it (renewals skip a GET)
    _follower: Informer | None = None
    _stale: bool = False  # a write conflicted: read the apiserver, not the watched copy
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def renew_every(self) -> float:
        """A third of the lease: two renewals may fail before the holder stops acting (at
        70 %), and a renewal is one PUT (the Lease as last written is kept, not re-read)."""
        return max(1.0, self.duration / 3)

    @property
    def renew_deadline(self) -> float:
        """A holder that could not renew for this long stops acting: 30 % of the lease
        before anyone else may take it, so two replicas never act at once."""
        return self.duration * 0.7

    async def try_take(self) -> bool:
        """One attempt to claim or renew the lease; True if we hold it afterwards. A renewal
        writes on the version we last wrote: if anyone else wrote since, it conflicts, and
        the next attempt reads the Lease again."""
        lease = self._held or await self._read()
        view = LeaseView.of(lease)
        now = time.time()
        if not may_take(view, self.identity, now):
            return False
        spec = lease_spec(view, self.identity, now, self.duration)
        try:
            if lease is None:
                self._held = await self.kube.create_lease(
                    self.namespace, self.name, spec, self.labels
                )
            else:
                version = lease["metadata"]["resourceVersion"]
                self._held = await self.kube.replace_lease(
                    self.namespace, self.name, spec, version, self.labels
                )
        except (ConflictError, AlreadyExistsError):
            self._held = None
            self._stale = True
            return False  # someone else wrote it first (AlreadyExists is a Conflict too)
        except KubeError:
            self._held = None
            raise
        return True

    async def _read(self) -> dict[str, Any] | None:
        """The Lease as the watch last saw it, else as the apiserver has it now. A watched
        copy a renewal has overtaken only costs a conflicting write."""
        follower = self._follower
        if follower is not None and follower.synced.is_set() and not self._stale:
            return follower.get(self.namespace, self.name)
        self._stale = False
        return await self.kube.get_lease(self.namespace, self.name)

    def _follow(self) -> None:
        if self.watch and self._follower is None:
            self._follower = Informer(
                self.kube, "leases", self.namespace, "", lambda _: self._changed.set(),
                field_selector=f"metadata.name={self.name}",
            )  # fmt: skip
            self._follower.start()

    async def stop(self) -> None:
        """Stop following the Lease (at shutdown)."""
        if self._follower is not None:
            await self._follower.stop()
            self._follower = None

    async def acquire(self) -> None:
        """Block until this replica holds the lease."""
        announced = False
        self._follow()
        while True:
            self._changed.clear()
            try:
                if await self.try_take():
                    log.info("leader election: %s holds lease %s/%s; acting",
                             self.identity, self.namespace, self.name)  # fmt: skip
                    await self.stop()  # the holder renews by writing; it needs no watch
                    return
            except KubeError as err:
                log.warning("leader election: %s", err)
            if not announced:
                log.info("leader election: standing by; lease %s/%s is held by another replica",
                         self.namespace, self.name)  # fmt: skip
                announced = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), await self._until_expiry())

    async def _until_expiry(self) -> float:
        """Wait until the holder's lease would expire, or the Lease changes (watched: a
        renewal, a release), so a takeover starts the moment it is allowed."""
        try:
            view = LeaseView.of(await self._read())
        except KubeError:
            return self.renew_every
        return min(float(self.duration), expires_in(view, time.time()) + 0.05)

    async def hold(self, lost: asyncio.Event) -> None:
        """Renew until cancelled; set `lost` once renewing has failed for a lease duration."""
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(self.renew_every)
            try:
                ok = await self.try_take()
            except KubeError as err:
                log.warning("leader election: renew failed: %s", err)
                ok = False
            if ok:
                last_ok = time.monotonic()
            elif time.monotonic() - last_ok > self.renew_deadline or not await self._still_ours():
                log.error("leader election: lost lease %s/%s; stopping", self.namespace, self.name)
                lost.set()
                return

    async def hold_apart(
        self, lost: asyncio.Event, connect: Callable[[], Awaitable[KubeGateway]]
    ) -> None:
        """`hold`, on a thread of its own with its own event loop and apiserver connection,
        until cancelled. The operator's loop can be busy for seconds at a time (a thousand
        scale sets starting at once); renewals on that loop were starved past the lease's
        term and a healthy leader lost its Lease mid-setup (measured at 1,000 scale sets).
        Cancelling waits until the thread has stopped renewing, so a release that follows
        cannot be overwritten by a late renewal."""
        main = asyncio.get_running_loop()
        finished = asyncio.Event()
        guard = threading.Lock()
        renewing: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[None]]] = []
        stopping = [False]

        async def renew() -> None:
            kube = await connect()
            twin = LeaderElector(kube, self.namespace, self.name, self.identity,
                                 self.duration, watch=False, labels=self.labels,
                                 _held=self._held)  # fmt: skip
            inner = asyncio.Event()
            task = asyncio.create_task(twin.hold(inner))
            with guard:
                renewing.append((asyncio.get_running_loop(), task))
                if stopping[0]:
                    task.cancel()
            try:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            finally:
                self._held = twin._held
                await kube.api.close()
            if inner.is_set():
                main.call_soon_threadsafe(lost.set)

        def run() -> None:
            try:
                asyncio.run(renew())
            except Exception:  # the holder must then stop acting: treat it as lost
                log.exception("leader election: the renewing thread failed")
                main.call_soon_threadsafe(lost.set)
            finally:
                main.call_soon_threadsafe(finished.set)

        threading.Thread(target=run, name=f"lease {self.name}", daemon=True).start()
        try:
            await finished.wait()
        finally:
            with guard:
                stopping[0] = True
                for loop, task in renewing:
                    with contextlib.suppress(RuntimeError):  # its loop has already closed
                        loop.call_soon_threadsafe(task.cancel)
            await asyncio.shield(finished.wait())

    async def _still_ours(self) -> bool:
        try:
            view = LeaseView.of(await self.kube.get_lease(self.namespace, self.name))
        except KubeError:
            return True  # unknown: keep going until the duration runs out
        return view.holder == self.identity

    async def holder(self) -> str | None:
        """The identity holding the lease now (None if nobody does or it expired)."""
        view = LeaseView.of(await self._read())
        if not view.holder or expires_in(view, time.time()) <= 0:
            return None
        return view.holder

    async def release(self) -> None:
        await self.stop()
        self._held = None
        try:
            lease = await self.kube.get_lease(self.namespace, self.name)
            view = LeaseView.of(lease)
            if lease is not None and view.holder == self.identity:
                await self.kube.replace_lease(
                    self.namespace, self.name, released_spec(view),
                    lease["metadata"]["resourceVersion"], self.labels,
                )  # fmt: skip
        except KubeError as err:
            log.warning("leader election: release failed: %s", err)
