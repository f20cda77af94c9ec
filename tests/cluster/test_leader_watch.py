"""A standby follows the Lease with a watch: it makes no request per renewal of the holder, and
takes a released Lease at once instead of at the end of the holder's term (real apiserver)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from typing import Any

from kubernetes_asyncio.client import ApiClient

from runnerfleet import conventions as c
from runnerfleet.gateways.kubernetes import KubeGateway, connect
from runnerfleet.localcluster import LocalCluster
from runnerfleet.services.leader import LeaderElector
from tests.support.kube import wait_for


class CountingGateway(KubeGateway):
    """The real gateway, counting the Lease requests it makes."""

    def __init__(self, api: ApiClient) -> None:
        super().__init__(api)
        self.calls: Counter[str] = Counter()

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls["get"] += 1
        return await super().get_lease(namespace, name)

    async def replace_lease(self, *args: Any) -> dict[str, Any]:
        self.calls["put"] += 1
        return await super().replace_lease(*args)

    async def raw_list(
        self, path: str, selector: str, field_selector: str = "", limit: int = 0, token: str = ""
    ) -> dict[str, Any]:
        self.calls["list"] += 1
        return await super().raw_list(path, selector, field_selector, limit, token)


async def test_standby_watches_the_lease_and_takes_a_released_one_at_once(
    kube: ApiClient, namespace: str
) -> None:
    holder_kube, standby_kube = CountingGateway(kube), CountingGateway(kube)
    labels = c.listener_lease_labels("t")
    holder = LeaderElector(holder_kube, namespace, "t-listener", "a", duration=3, labels=labels)
    standby = LeaderElector(standby_kube, namespace, "t-listener", "b", duration=30,
                            labels=labels)  # fmt: skip
    await holder.acquire()
    lost = asyncio.Event()
    renewing = asyncio.create_task(holder.hold(lost))  # a renewal every second
    waiting = asyncio.create_task(standby.acquire())
    try:
        await wait_for(
            lambda: asyncio.sleep(0, holder_kube.calls["put"]), lambda puts: puts >= 6,
            what="six renewals by the holder", within=15,
        )  # fmt: skip
        assert not waiting.done(), "the standby took a lease that was being renewed"
        # Its first read, then the watch: nothing per renewal (polling would be >= 6 GETs).
        assert standby_kube.calls["get"] + standby_kube.calls["list"] <= 3, standby_kube.calls
        assert standby_kube.calls["put"] == 0
        # The labels survive every renewal (a PUT replaces them): the relay selects by them.
        selected = await holder_kube.raw_list(
            f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases",
            c.LISTENER_LEASE_SELECTOR, "",
        )  # fmt: skip
        assert [i["metadata"]["name"] for i in selected["items"]] == ["t-listener"]
        renewing.cancel()
        released = time.monotonic()
        await holder.release()
        await asyncio.wait_for(waiting, timeout=5)
        took = time.monotonic() - released
        assert await standby.holder() == "b"
        assert took < 2.0, f"took {took:.1f}s: the standby did not see the release"
    finally:
        renewing.cancel()
        waiting.cancel()
        await standby.release()
        await holder.stop()


def _standby_in_thread(kubeconfig: str, namespace: str, took: threading.Event) -> None:
    """A competing replica on its own loop and connection: sets `took` if it gets the Lease."""

    async def compete() -> None:
        kube = KubeGateway(await connect(kubeconfig))
        rival = LeaderElector(kube, namespace, "op", "rival", duration=3)
        try:
            await asyncio.wait_for(rival.acquire(), timeout=12)
            took.set()
            await rival.release()
        except TimeoutError:
            pass
        finally:
            await rival.stop()
            await kube.api.close()

    asyncio.run(compete())


async def test_a_busy_event_loop_does_not_lose_the_lease_renewed_apart(
    kube: ApiClient, namespace: str, local_cluster: LocalCluster
) -> None:
    """The operator's loop blocked for twice the lease's term (a thousand scale sets starting
    at once): renewals on their own thread keep the Lease, a competing replica never gets it,
    and cancelling stops them before the release (which the rival then sees)."""
    holder = LeaderElector(KubeGateway(kube), namespace, "op", "holder", duration=3)
    await holder.acquire()
    lost = asyncio.Event()

    async def gateway() -> KubeGateway:
        return KubeGateway(await connect(str(local_cluster.kubeconfig)))

    renewing = asyncio.create_task(holder.hold_apart(lost, gateway))
    took = threading.Event()
    rival = threading.Thread(
        target=_standby_in_thread, args=(str(local_cluster.kubeconfig), namespace, took)
    )
    rival.start()
    first = (await holder.kube.get_lease(namespace, "op") or {})["spec"]["renewTime"]
    await wait_for(  # the renewing thread is up: it has renewed once
        lambda: holder.kube.get_lease(namespace, "op"),
        lambda lease: lease is not None and lease["spec"]["renewTime"] != first,
        what="a renewal from the renewing thread", within=10,
    )  # fmt: skip
    time.sleep(6)  # noqa: ASYNC251 - the point: this loop is starved for two lease terms
    assert not took.is_set(), "a busy loop lost the Lease to another replica"
    assert not lost.is_set()
    assert await holder.holder() == "holder"
    renewing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await renewing
    await holder.release()
    await asyncio.to_thread(rival.join, 15)
    assert took.is_set(), "after the release the rival takes the Lease"
