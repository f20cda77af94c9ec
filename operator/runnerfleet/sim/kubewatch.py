"""List-then-watch of pods for the simulators that play the kubelet's role (simulated runners,
the listener kubelet), surviving apiserver and etcd restarts as an informer does.

A bare watch misses what happens while the apiserver is away: a pod deleted during an outage
never sends its DELETED event to a watch opened afterwards. So, as client-go's reflector: list,
hand the whole list over (the simulator drops what is no longer there), watch from the list's
resourceVersion; on any error (apiserver gone, connection cut mid-stream, watch expired with
410 Gone) wait a moment and list again.

Layer: tooling. Kubernetes API I/O.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client import ApiClient

log = logging.getLogger("runnerfleet.sim.kubewatch")
RETRY_SECONDS = 0.5  # between a failed list or a broken watch and the next list

OnList = Callable[[list[Any]], Awaitable[None]]
OnEvent = Callable[[str, Any], Awaitable[None]]


async def watch_pods(
    api: ApiClient, namespace: str | None, selector: str, on_list: OnList, on_event: OnEvent
) -> None:
    """Forever: list the pods matching `selector` (in `namespace`, or all), call
    `on_list(pods)`, then `on_event(type, pod)` for each change until the watch breaks."""
    core = client.CoreV1Api(api)
    args: tuple[Any, ...] = (namespace,) if namespace else ()
    lister = core.list_namespaced_pod if namespace else core.list_pod_for_all_namespaces
    while True:
        try:
            listed = await lister(*args, label_selector=selector)
            await on_list(list(listed.items))
            w = watch.Watch()
            try:
                async for event in w.stream(
                    lister, *args, label_selector=selector,
                    resource_version=listed.metadata.resource_version,
                ):  # fmt: skip
                    await on_event(str(event["type"]), event["object"])
            finally:
                w.stop()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.debug("pod watch broken (%s: %s); listing again", type(err).__name__, err)
            await asyncio.sleep(RETRY_SECONDS)  # a retry backoff, not a synchronisation
