"""Reconcile one RunnerNodePool: render it as a Karpenter NodePool, or mark static nodes.

The mode is decided each round from the cluster: if the karpenter.sh/v1 NodePool API is
served the pool becomes a NodePool (applied server-side, updated in place); otherwise the
nodes matched by `spec.static.nodeSelector` get the pool's label and NoSchedule taint.

Deleting a pool that scale sets still name is held by the finalizer: the pool keeps its
nodes and reports DeletionBlocked (condition and Event) until no scale set names it, so no
runner is orphaned. Only then is the NodePool deleted (or static nodes released).

Layer: services. I/O only through the gateways.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from runnerfleet import conventions as c
from runnerfleet.builders.node_pool import (
    NodeEdit,
    build_karpenter_nodepool,
    build_warm_deployment,
    build_warm_priority_class,
    karpenter_nodepool_name,
    node_patch,
    plan_static,
    warm_deployment_name,
)
from runnerfleet.gateways.kubernetes import ConflictError, InvalidError, KubeGateway
from runnerfleet.models.node_pool import RunnerNodePoolSpec
from runnerfleet.planning.status import Problem, condition
from runnerfleet.services.loop import reconcile_loop

log = logging.getLogger("runnerfleet.nodepool")
RESYNC_SECONDS = 10.0


class PoolInUseError(Exception):
    """Deletion waits: scale sets still name the pool."""


@dataclass
class PoolRound:
    mode: str
    members: int = 0
    node_pool: str | None = None
    warm_ready: int = 0
    problems: list[Problem] = field(default_factory=list)


async def users_of(kube: KubeGateway, pool: str) -> list[str]:
    """`namespace/name` of every scale set whose spec.nodePool names the pool."""
    return sorted(
        f"{s['metadata']['namespace']}/{s['metadata']['name']}"
        for s in await kube.list_scale_sets()
        if (s.get("spec") or {}).get("nodePool") == pool
    )


async def reconcile_once(kube: KubeGateway, name: str) -> None:
    body = await kube.get_node_pool(name)
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return
    generation = int(meta.get("generation", 0))
    users = await users_of(kube, name)
    try:
        spec = RunnerNodePoolSpec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        first = err.errors()[0]
        where = "spec." + ".".join(str(p) for p in first["loc"])
        result = PoolRound(
            "Unknown", problems=[Problem("Ready", "InvalidSpec", f"{where}: {first['msg']}")]
        )
    else:
        if await kube.has_karpenter():
            result = await _karpenter(kube, name, meta["uid"], spec)
        else:
            result = await _static(kube, name, spec)
        result.warm_ready = await _warm(kube, name, meta["uid"], spec)
    await _report(kube, body, result, users, generation)


def operator_namespace() -> str:
    """Where the operator keeps its own objects (warm-capacity placeholders, the Lease)."""
    return os.environ.get("RUNNERFLEET_NAMESPACE", "default")


async def _warm(kube: KubeGateway, name: str, uid: str, spec: RunnerNodePoolSpec) -> int:
    """Keep the placeholder Deployment in line with spec.warmCapacity; its ready count."""
    namespace = operator_namespace()
    if spec.warm_capacity is None or spec.warm_capacity.replicas == 0:
        await kube.delete_deployment(namespace, warm_deployment_name(name))
        return 0
    await kube.apply(build_warm_priority_class())
    await kube.apply(build_warm_deployment(name, uid, spec, namespace))
    status = await kube.get_deployment_status(namespace, warm_deployment_name(name)) or {}
    return int(status.get("readyReplicas") or 0)


async def _karpenter(kube: KubeGateway, name: str, uid: str, spec: RunnerNodePoolSpec) -> PoolRound:
    result = PoolRound("Karpenter", node_pool=karpenter_nodepool_name(name))
    try:
        await kube.apply(build_karpenter_nodepool(name, uid, spec))
    except ValueError as err:  # no nodeClassRef
        result.problems.append(Problem("Ready", "NodeClassRefMissing", str(err)))
    except InvalidError as err:
        result.problems.append(Problem("Ready", "NodePoolRejected", str(err)))
    result.members = len(await kube.list_nodes(f"{c.LABEL_POOL}={name}"))
    return result


async def _static(kube: KubeGateway, name: str, spec: RunnerNodePoolSpec) -> PoolRound:
    result = PoolRound("Static")
    if spec.static is None:
        result.problems.append(Problem(
            "Ready", "StaticSelectorMissing",
            "Karpenter is not installed, so spec.static.nodeSelector must name the nodes "
            "that form this pool",
        ))  # fmt: skip
        return result
    nodes = await kube.list_nodes()
    decided = plan_static(name, spec.static.node_selector, nodes)
    await _edit_nodes(kube, name, nodes, decided.edits)
    result.members = len(decided.members)
    if decided.conflicts:
        result.problems.append(Problem(
            "Ready", "NodesHeldByOtherPool",
            f"nodes {', '.join(decided.conflicts)} match spec.static.nodeSelector but already "
            f"carry another pool's {c.LABEL_POOL} label; they were left alone",
        ))  # fmt: skip
    if not decided.members:
        result.problems.append(Problem(
            "Ready", "NoMatchingNodes",
            f"no node matches spec.static.nodeSelector {spec.static.node_selector}",
        ))  # fmt: skip
    return result


async def _edit_nodes(
    kube: KubeGateway, pool: str, nodes: list[dict[str, Any]], edits: list[NodeEdit]
) -> None:
    by_name = {n["metadata"]["name"]: n for n in nodes}
    for edit in edits:
        node = by_name[edit.node]
        patch = node_patch(node, pool, edit.claim)
        patch["metadata"]["resourceVersion"] = node["metadata"]["resourceVersion"]
        try:
            await kube.patch_node(edit.node, patch)
        except ConflictError:
            continue  # changed under us: the next round re-reads it


async def _report(
    kube: KubeGateway, body: dict[str, Any], result: PoolRound, users: list[str], generation: int
) -> None:
    previous = dict(body.get("status") or {})
    prev_conditions = previous.get("conditions") or []
    now = time.time()
    problem = result.problems[0] if result.problems else None
    ready = condition(
        prev_conditions, "Ready", problem is None,
        problem.reason if problem else "Reconciled",
        problem.message if problem else f"{result.mode} mode; {result.members} nodes in the pool",
        generation, now,
    )  # fmt: skip
    status = {
        "mode": result.mode if result.mode != "Unknown" else None,
        "nodePool": result.node_pool,
        "nodes": result.members,
        "warmReady": result.warm_ready,
        "scaleSets": users,
        "observedGeneration": generation,
        "conditions": [ready],
    }
    await kube.patch_node_pool_status(body["metadata"]["name"], status)
    old = next((x for x in prev_conditions if x.get("type") == "Ready"), None)
    if problem and (old is None or old.get("message") != problem.message):
        await kube.event(body, "Warning", problem.reason, problem.message)


async def run(
    kube: KubeGateway, name: str, stopped: Callable[[], bool], wake: asyncio.Event
) -> None:
    await reconcile_loop(
        f"RunnerNodePool {name}", lambda: reconcile_once(kube, name), wake, stopped, RESYNC_SECONDS
    )


async def finalize(kube: KubeGateway, body: dict[str, Any]) -> None:
    """Release the pool's capacity, unless scale sets still use it (then raise PoolInUseError)."""
    name = body["metadata"]["name"]
    users = await users_of(kube, name)
    if users:
        message = (
            f"RunnerNodePool {name} is still used by RunnerScaleSets {', '.join(users)}; "
            "it (and its nodes) stays until they no longer name it in spec.nodePool"
        )
        previous = (body.get("status") or {}).get("conditions") or []
        old = next((x for x in previous if x.get("type") == "Ready"), None)
        if old is None or old.get("reason") != "DeletionBlocked":
            await kube.event(body, "Warning", "DeletionBlocked", message)
        await kube.patch_node_pool_status(name, {
            "scaleSets": users,
            "conditions": [condition(previous, "Ready", False, "DeletionBlocked", message,
                                     int(body["metadata"].get("generation", 0)), time.time())],
        })  # fmt: skip
        raise PoolInUseError(message)
    if await kube.has_karpenter():
        await kube.delete_karpenter_nodepool(karpenter_nodepool_name(name))
    nodes = await kube.list_nodes(f"{c.LABEL_POOL}={name}")
    await _edit_nodes(kube, name, nodes, plan_static(name, None, nodes).edits)
