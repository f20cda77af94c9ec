"""Reconcile one RunnerNodePool: observe → plan (planning/node_pool.py) → execute → status.

The mode is decided each round from the cluster: if the karpenter.sh/v1 NodePool API is
served the pool becomes a NodePool (applied server-side when missing, changed or drifted);
otherwise the nodes matched by `spec.static.nodeSelector` get the pool's label and NoSchedule
taint. Status is written only when it changed (planning/status_diff.py).

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
from typing import Any

from pydantic import ValidationError

from runnerfleet import conventions as c
from runnerfleet.builders.hashing import manifests_hash, stamped
from runnerfleet.builders.node_pool import (
    build_karpenter_nodepool,
    build_warm_deployment,
    build_warm_priority_class,
    karpenter_nodepool_name,
    node_patch,
    warm_deployment_name,
)
from runnerfleet.gateways.kubernetes import ConflictError, InvalidError, KubeGateway
from runnerfleet.models.node_pool import RunnerNodePoolSpec
from runnerfleet.planning.children import Applied, live_generation
from runnerfleet.planning.node_pool import (
    BLOCKED_OWNED,
    Action,
    ApplyGroup,
    DeleteDeployment,
    EditNode,
    Group,
    PoolDesired,
    PoolObserved,
    blocked_status,
    fold_status,
    plan,
    release,
    status_wire,
    warning,
)
from runnerfleet.planning.status import Problem
from runnerfleet.planning.status_diff import status_patch
from runnerfleet.services.loop import reconcile_loop

log = logging.getLogger("runnerfleet.nodepool")
RESYNC_SECONDS = 10.0


class PoolInUseError(Exception):
    """Deletion waits: scale sets still name the pool."""


class NodesNotReleasedError(Exception):
    """Deletion waits: a node's label and taint could not be removed yet (a 409)."""


def operator_namespace() -> str:
    """Where the operator keeps its own objects (warm-capacity placeholders, the Lease)."""
    return os.environ.get("RUNNERFLEET_NAMESPACE", "default")


async def users_of(kube: KubeGateway, pool: str) -> list[str]:
    """`namespace/name` of every scale set whose spec.nodePool names the pool."""
    return sorted(
        f"{s['metadata']['namespace']}/{s['metadata']['name']}"
        for s in await kube.list_scale_sets()
        if (s.get("spec") or {}).get("nodePool") == pool
    )


def _parse(body: dict[str, Any]) -> tuple[RunnerNodePoolSpec | None, str | None]:
    try:
        return RunnerNodePoolSpec.model_validate(body.get("spec") or {}), None
    except ValidationError as err:
        first = err.errors()[0]
        return None, "spec." + ".".join(str(p) for p in first["loc"]) + f": {first['msg']}"


# ---------------------------------------------------------------------------------- observe
async def observe(kube: KubeGateway, body: dict[str, Any]) -> PoolObserved:
    """Every read of the round (the pool itself was read by the caller)."""
    meta = body["metadata"]
    name = meta["name"]
    spec, error = _parse(body)
    users = await users_of(kube, name)
    karpenter = spec is not None and await kube.has_karpenter()
    nodepool = None
    if spec is None:
        nodes: list[dict[str, Any]] = []
    elif karpenter:
        nodes = await kube.list_nodes(f"{c.LABEL_POOL}={name}")
        if spec.node_class_ref is not None:
            nodepool = await kube.get_karpenter_nodepool(karpenter_nodepool_name(name))
    else:
        nodes = await kube.list_nodes() if spec.static is not None else []
    warm = None
    if spec is not None:
        warm = await kube.get_deployment(operator_namespace(), warm_deployment_name(name))
    return PoolObserved(
        name=name, uid=meta["uid"], generation=int(meta.get("generation", 0)),
        status=dict(body.get("status") or {}), users=users, spec=spec, spec_error=error,
        karpenter=karpenter, nodes=nodes, nodepool=nodepool, warm=warm,
    )  # fmt: skip


def _group(manifests: list[dict[str, Any]]) -> Group:
    """Manifests applied together; the last (the anchor, read each round) carries the hash."""
    digest = manifests_hash(manifests)
    anchor = stamped(manifests[-1], digest)
    meta = anchor["metadata"]
    key = f"{anchor['kind']}/{meta.get('namespace', '')}/{meta['name']}"
    return Group(key, [*manifests[:-1], anchor], digest)


def desired(observed: PoolObserved) -> PoolDesired:
    """What the builders render for the observed spec and mode."""
    spec, name, namespace = observed.spec, observed.name, operator_namespace()
    nodepool = warm = None
    if spec is not None and observed.karpenter and spec.node_class_ref is not None:
        nodepool = _group([build_karpenter_nodepool(name, observed.uid, spec)])
    if spec is not None and spec.warm_capacity is not None and spec.warm_capacity.replicas > 0:
        warm = _group([
            build_warm_priority_class(),
            build_warm_deployment(name, observed.uid, spec, namespace),
        ])  # fmt: skip
    return PoolDesired(karpenter_nodepool_name(name), nodepool, warm, namespace,
                       warm_deployment_name(name))  # fmt: skip


# ---------------------------------------------------------------------------------- execute
async def execute(
    kube: KubeGateway, pool: str, actions: list[Action], memory: dict[str, Applied], now: float
) -> list[Problem]:
    """Perform the plan; what the apiserver refused comes back as problems for the status."""
    refused: list[Problem] = []
    for action in actions:
        if isinstance(action, ApplyGroup):
            problem = await _apply_group(kube, action, memory, now)
            refused += [problem] if problem else []
        elif isinstance(action, EditNode):
            await _edit_node(kube, pool, action)
        elif isinstance(action, DeleteDeployment):
            await kube.delete_deployment(action.namespace, action.name)
    return refused


async def _apply_group(
    kube: KubeGateway, action: ApplyGroup, memory: dict[str, Applied], now: float
) -> Problem | None:
    group = action.group
    log.info("applying %s (%s)", group.key, action.reason)
    try:
        live: dict[str, Any] | None = None
        for manifest in group.manifests:
            live = await kube.apply(manifest)
    except InvalidError as err:
        return Problem("Ready", action.rejected_reason, str(err))
    memory[group.key] = Applied(group.hash, live_generation(live), now)
    return None


async def _edit_node(kube: KubeGateway, pool: str, edit: EditNode) -> None:
    patch = node_patch(edit.node, pool, edit.claim)
    patch["metadata"]["resourceVersion"] = edit.node["metadata"]["resourceVersion"]
    try:
        await kube.patch_node(edit.node["metadata"]["name"], patch)
    except ConflictError:
        return  # changed under us: the next round re-reads it


# ---------------------------------------------------------------------------------- the round
async def reconcile_once(
    kube: KubeGateway, name: str, memory: dict[str, Applied] | None = None
) -> None:
    """One round: observe, plan, execute, then write status if it changed."""
    memory = {} if memory is None else memory
    body = await kube.get_node_pool(name)
    if body["metadata"].get("deletionTimestamp"):
        return
    observed = await observe(kube, body)
    now = time.time()
    decided = plan(observed, desired(observed), memory, now)
    memory.update(decided.adopted)
    refused = await execute(kube, name, decided.actions, memory, now)
    status = fold_status(observed, decided, refused, now)
    patch = status_patch(observed.status, status_wire(status))
    if patch is not None:
        await kube.patch_node_pool_status(name, patch)
    problems = [*decided.problems, *refused]
    event = warning(observed.status, problems[0] if problems else None)
    if event is not None:
        await kube.event(body, "Warning", event.reason, event.message)


async def run(
    kube: KubeGateway, name: str, stopped: Callable[[], bool], wake: asyncio.Event
) -> None:
    memory: dict[str, Applied] = {}  # what this loop last applied, for drift detection
    await reconcile_loop(
        f"RunnerNodePool {name}", lambda: reconcile_once(kube, name, memory), wake, stopped,
        RESYNC_SECONDS,
    )  # fmt: skip


async def finalize(kube: KubeGateway, body: dict[str, Any]) -> None:
    """Release the pool's capacity, unless scale sets still use it (then raise PoolInUseError)."""
    name = body["metadata"]["name"]
    users = await users_of(kube, name)
    if users:
        previous = dict(body.get("status") or {})
        generation = int(body["metadata"].get("generation", 0))
        status, message = blocked_status(name, users, previous, generation, time.time())
        old = next((x for x in previous.get("conditions") or [] if x.get("type") == "Ready"), None)
        if old is None or old.get("reason") != "DeletionBlocked":
            await kube.event(body, "Warning", "DeletionBlocked", message)
        patch = status_patch(previous, status_wire(status, BLOCKED_OWNED))
        if patch is not None:
            await kube.patch_node_pool_status(name, patch)
        raise PoolInUseError(message)
    if await kube.has_karpenter():
        await kube.delete_karpenter_nodepool(karpenter_nodepool_name(name))
    selector = f"{c.LABEL_POOL}={name}"
    await execute(kube, name, list(release(name, await kube.list_nodes(selector))), {}, time.time())
    # A node edit is conditional on its resourceVersion, and a kubelet's heartbeat can win
    # the race (409): a round would retry it, but a deleted pool has no next round. Check,
    # and keep the finalizer until every node is released (one more list per deletion).
    left = await kube.list_nodes(selector)
    if left:
        raise NodesNotReleasedError(
            f"RunnerNodePool {name}: {len(left)} node(s) changed while being released; retrying"
        )
