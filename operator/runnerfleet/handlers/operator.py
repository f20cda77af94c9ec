"""kopf wiring for the operator: settings, one reconcile loop per RunnerScaleSet, the finalizer,
and a server-side-filtered watch of runner pods that wakes the right loop.

Handlers are adapters: they parse what kopf hands them and call one service function.

Layer: handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

import kopf

from runnerfleet import conventions as c
from runnerfleet import logs
from runnerfleet.metrics import serve_metrics
from runnerfleet.services import costs, startup
from runnerfleet.services import node_pool as pool_service
from runnerfleet.services import scale_set as service
from runnerfleet.services import team_listener as listener_service
from runnerfleet.services.runtime import Runtime

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
    # The runtime (runner caches, metrics) was built before this replica led (`operate`).
    memo.mode_watch = asyncio.create_task(
        service.follow_mode(memo.runtime, memo.settings.namespace)
    )
    # Node-seconds per team and the cost summary ConfigMap (docs/costs.md): leader only.
    memo.cost_task = costs.start(memo.runtime, list(memo.namespaces) or [None],
                                 memo.settings.namespace)  # fmt: skip


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.mode_watch.cancel()
    if memo.cost_task is not None:
        memo.cost_task.cancel()


@kopf.daemon(*RSS, cancellation_timeout=10.0)
async def run_scale_set(
    stopped: kopf.DaemonStopped,
    name: str,
    namespace: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    # Every line the loop logs names the scale set (the daemon is a task of its own).
    logs.bind(scale_set=f"{namespace}/{name}")
    # kopf keeps a daemon's `body` current with every watch event: rounds read it, not the API.
    await service.run(memo.runtime, namespace or "", name, lambda: bool(stopped), lambda: body)


def _not_listing(type: str | None, **_: Any) -> bool:
    """kopf's initial listing has event type None. Every loop runs its first round anyway;
    waking them all would undo the startup spread (service.first_round_delay), and filtering
    here spares kopf a handler call and a log line per object when a new leader starts."""
    return type is not None


@kopf.on.event(*RSS, when=_not_listing)
async def wake_on_change(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    memo.runtime.wake(namespace or "", name)


@kopf.on.delete(*RSS, backoff=5.0)
async def finalize_scale_set(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    try:
        await service.finalize(memo.runtime, dict(body))
    except startup.TRANSIENT as err:
        raise kopf.TemporaryError(f"cleanup pending: {err}", delay=5.0) from err


@kopf.daemon(*TL, cancellation_timeout=10.0)
async def run_team_listener(
    stopped: kopf.DaemonStopped,
    name: str,
    namespace: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    runtime = memo.runtime
    wake = runtime.listener_wakeups.setdefault((namespace or "", name), asyncio.Event())
    deployments = runtime.children.deployment if runtime.children is not None else None
    await listener_service.run(
        runtime.kube, namespace or "", name, lambda: bool(stopped), wake, lambda: body,
        deployments, mode=lambda: runtime.mode, tokens=runtime.listener_registration_token,
        secrets_hash=runtime.secrets_hash,
    )  # fmt: skip


@kopf.on.event(*TL)
async def wake_listener(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    memo.runtime.listener_wakeups.setdefault((namespace or "", name), asyncio.Event()).set()


@kopf.daemon(*RNP, cancellation_timeout=10.0)
async def run_node_pool(stopped: kopf.DaemonStopped, name: str, memo: kopf.Memo, **_: Any) -> None:
    wake = memo.runtime.pool_wakeups.setdefault(name, asyncio.Event())
    await pool_service.run(memo.runtime.kube, name, lambda: bool(stopped), wake)


@kopf.on.event(*RNP)
async def wake_node_pool(name: str, memo: kopf.Memo, **_: Any) -> None:
    memo.runtime.pool_wakeups.setdefault(name, asyncio.Event()).set()


@kopf.on.delete(*RNP, backoff=5.0)
async def finalize_node_pool(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    try:
        await pool_service.finalize(memo.runtime.kube, dict(body))
    except (pool_service.PoolInUseError, pool_service.NodesNotReleasedError) as err:
        raise kopf.TemporaryError(str(err), delay=5.0) from err
    except startup.TRANSIENT as err:
        raise kopf.TemporaryError(f"cleanup pending: {err}", delay=5.0) from err


# ---------------------------------------------------------------------------------- entry
@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    name: str
    duration: int


async def operate(namespaces: list[str], lease: LeaseSettings | None) -> int:
    """Run kopf; with `lease`, only while this replica holds it. Returns the exit code.

    The replica is warm before it leads: its runner pod, Secret and listener Deployment
    caches are listed and watched, and /healthz, /readyz and /metrics served, while it
    stands by (as controller-runtime starts its caches before leader election). A new leader
    then starts its loops on complete caches instead of listing 5,000 pods and Secrets
    first, and a standby replica passes the chart's probes.
    """
    try:
        settings = startup.Settings.from_env()
    except startup.SettingsError as err:
        log.error("runnerfleet operator cannot start: %s", err)
        return 2
    # One runner pod/Secret informer per served namespace (RBAC may be namespaced), or one
    # cluster-wide.
    served: list[str | None] = list(namespaces) or [None]
    runtime = await startup.build_runtime(settings, served)
    metrics_server = await serve_metrics(
        runtime.metrics.registry, settings.metrics_port, ready=runtime.ready
    )
    stop = asyncio.Event()
    elector = holder = None
    try:
        if lease is not None:
            identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
            elector = await startup.build_elector(
                settings.kubeconfig, lease.namespace, lease.name, identity, lease.duration
            )
            warm = asyncio.create_task(_report_warm(runtime))
            await elector.acquire()
            warm.cancel()
            runtime.forget_wakeups()
            # Renewed on a thread of its own: a busy operator loop must not lose the Lease.
            holder = asyncio.create_task(
                elector.hold_apart(stop, lambda: startup.kube_gateway(settings.kubeconfig))
            )
        await kopf.operator(
            clusterwide=not namespaces, namespaces=namespaces, standalone=True, stop_flag=stop,
            memo=kopf.Memo(namespaces=namespaces, runtime=runtime, settings=settings),
        )  # fmt: skip
    finally:
        if holder is not None and elector is not None:
            holder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await holder  # the renewing thread has stopped: the release is the last write
            if not stop.is_set():
                await elector.release()  # a clean stop hands over at once
        if elector is not None:
            await elector.kube.api.close()
        await runtime.close()
        await metrics_server.cleanup()
    return 1 if holder is not None and stop.is_set() else 0


async def _report_warm(runtime: Runtime) -> None:
    """One line when a standby's caches are complete (operators read it; tests wait for it)."""
    if runtime.children is not None:
        pods, secrets = await runtime.children.wait_synced()
        log.info("standby warm: caches hold %d runner pods and %d runner Secrets", pods, secrets)
