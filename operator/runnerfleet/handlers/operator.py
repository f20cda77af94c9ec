"""kopf wiring for the operator: settings, one reconcile loop per RunnerScaleSet, the finalizer,
and a server-side-filtered watch of runner pods that wakes the right loop.

Handlers are adapters: they parse what kopf hands them and call one service function.

Layer: handlers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

import kopf

from runnerfleet import conventions as c
from runnerfleet.gateways.github import GitHubError
from runnerfleet.gateways.kubernetes import KubeError, KubeGateway, connect
from runnerfleet.metrics import serve_metrics
from runnerfleet.services import node_pool as pool_service
from runnerfleet.services import scale_set as service
from runnerfleet.services import team_listener as listener_service
from runnerfleet.services.leader import LeaderElector

log = logging.getLogger("runnerfleet.operator")
RSS = (c.GROUP, c.VERSION, c.RUNNER_SCALE_SET_PLURAL)
TL = (c.GROUP, c.VERSION, c.TEAM_LISTENER_PLURAL)
RNP = (c.GROUP, c.VERSION, c.RUNNER_NODE_POOL_PLURAL)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our finalizer name, not kopf's default, so `kubectl get -o yaml` says whose it is.
    settings.persistence.finalizer = c.FINALIZER
    # Progress lives in status, so GitOps tools diffing metadata see no operator writes.
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=c.GROUP, key="last-handled-configuration"
    )
    # Events are posted by the services where they mean something; kopf's own are noise.
    settings.posting.level = logging.WARNING
    # Watches that go silent are restarted (see kopf's watching docs; needs Python >= 3.11).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.inactivity_timeout = 600
    settings.execution.max_workers = 4
    api = await connect(os.environ.get("RUNNERFLEET_KUBECONFIG"))
    mode = os.environ.get("RUNNERFLEET_MODE", c.MODE_ACTIVE).strip().lower()
    if mode not in c.MODES:
        raise kopf.PermanentError(f"RUNNERFLEET_MODE must be one of {'/'.join(c.MODES)}")
    memo.runtime = service.Runtime(kube=KubeGateway(api), mode=mode)
    memo.api = api
    # One pod watch per served namespace (RBAC may be namespaced), or one cluster-wide.
    served: list[str | None] = list(getattr(memo, "namespaces", None) or []) or [None]
    memo.pod_watches = [asyncio.create_task(_watch_pods(memo.runtime, ns)) for ns in served]
    memo.mode_watch = asyncio.create_task(
        service.follow_mode(memo.runtime, os.environ.get("RUNNERFLEET_NAMESPACE", "default"))
    )
    memo.metrics_server = await serve_metrics(
        memo.runtime.metrics.registry, int(os.environ.get("RUNNERFLEET_METRICS_PORT", "9090"))
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.pod_watches:
        task.cancel()
    memo.mode_watch.cancel()
    await memo.metrics_server.cleanup()
    await memo.api.close()


async def _watch_pods(runtime: service.Runtime, namespace: str | None) -> None:
    """Wake a scale set's loop whenever one of its runner pods changes."""
    delay = 1.0
    while True:
        try:
            async for _event, pod in runtime.kube.watch_runner_pods(namespace):
                meta = pod.get("metadata", {})
                owner = meta.get("labels", {}).get(c.LABEL_SCALE_SET)
                if owner:
                    runtime.wake(meta.get("namespace", ""), owner)
                delay = 1.0
        except KubeError as err:
            log.warning("runner pod watch broke (%s); re-listing in %.0fs", err, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


@kopf.daemon(*RSS, cancellation_timeout=10.0)
async def run_scale_set(
    stopped: kopf.DaemonStopped, name: str, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    await service.run(memo.runtime, namespace or "", name, lambda: bool(stopped))


@kopf.on.event(*RSS)
def wake_on_change(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    if hasattr(memo, "runtime"):
        memo.runtime.wake(namespace or "", name)


@kopf.on.delete(*RSS, backoff=5.0)
async def finalize_scale_set(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    try:
        await service.finalize(memo.runtime, dict(body))
    except (GitHubError, KubeError) as err:
        raise kopf.TemporaryError(f"cleanup pending: {err}", delay=5.0) from err


@kopf.daemon(*TL, cancellation_timeout=10.0)
async def run_team_listener(
    stopped: kopf.DaemonStopped, name: str, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    wake = memo.runtime.listener_wakeups.setdefault((namespace or "", name), asyncio.Event())
    await listener_service.run(
        memo.runtime.kube, namespace or "", name, lambda: bool(stopped), wake
    )


@kopf.on.event(*TL)
def wake_listener(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    if hasattr(memo, "runtime"):
        memo.runtime.listener_wakeups.setdefault((namespace or "", name), asyncio.Event()).set()


@kopf.daemon(*RNP, cancellation_timeout=10.0)
async def run_node_pool(stopped: kopf.DaemonStopped, name: str, memo: kopf.Memo, **_: Any) -> None:
    wake = memo.runtime.pool_wakeups.setdefault(name, asyncio.Event())
    await pool_service.run(memo.runtime.kube, name, lambda: bool(stopped), wake)


@kopf.on.event(*RNP)
def wake_node_pool(name: str, memo: kopf.Memo, **_: Any) -> None:
    if hasattr(memo, "runtime"):
        memo.runtime.pool_wakeups.setdefault(name, asyncio.Event()).set()


@kopf.on.delete(*RNP, backoff=5.0)
async def finalize_node_pool(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    try:
        await pool_service.finalize(memo.runtime.kube, dict(body))
    except pool_service.PoolInUseError as err:
        raise kopf.TemporaryError(str(err), delay=5.0) from err
    except KubeError as err:
        raise kopf.TemporaryError(f"cleanup pending: {err}", delay=5.0) from err


# ---------------------------------------------------------------------------------- entry
@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    name: str
    duration: int


async def operate(namespaces: list[str], lease: LeaseSettings | None) -> int:
    """Run kopf; with `lease`, only while this replica holds it. Returns the exit code."""
    stop = asyncio.Event()
    elector = holder = None
    if lease is not None:
        identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
        api = await connect(os.environ.get("RUNNERFLEET_KUBECONFIG"))
        elector = LeaderElector(KubeGateway(api), lease.namespace, lease.name, identity,
                                lease.duration)  # fmt: skip
        await elector.acquire()
        holder = asyncio.create_task(elector.hold(stop))
    try:
        await kopf.operator(
            clusterwide=not namespaces, namespaces=namespaces, standalone=True, stop_flag=stop,
            memo=kopf.Memo(namespaces=namespaces),
        )  # fmt: skip
    finally:
        if holder is not None and elector is not None:
            holder.cancel()
            if not stop.is_set():
                await elector.release()  # a clean stop hands over at once
            await elector.kube.api.close()
    return 1 if holder is not None and stop.is_set() else 0
