"""RunnerNodePool decisions: from what one round observed to the actions to take and the status.

The reconciler (services/node_pool.py) reads everything first (`PoolObserved`), has the
builders render what should exist (`PoolDesired`, hashes stamped), and calls `plan`, which
decides with no I/O:

- Karpenter mode (the karpenter.sh/v1 NodePool API is served): apply the NodePool when it is
  missing, changed or drifted (planning/children.py); members are the nodes carrying the
  pool's label.
- Static mode: claim (label + taint) the nodes `spec.static.nodeSelector` matches and release
  the others that carry the pool's marks (`plan_static`); a node held by another pool is left
  alone and reported.
- Warm capacity: apply the placeholder Deployment (and its PriorityClass) when needed, delete
  it when `spec.warmCapacity` asks for none.

`fold_status` turns the plan (plus what the apiserver refused while executing) into the
`RunnerNodePoolStatus`; `blocked_status` is the status while the finalizer holds a pool that
scale sets still name.

Layer: planning. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runnerfleet import conventions as c
from runnerfleet.models.base import Condition
from runnerfleet.models.node_pool import RunnerNodePoolSpec, RunnerNodePoolStatus
from runnerfleet.planning.children import Applied, adoptions, apply_reason
from runnerfleet.planning.status import Problem, condition

# Keys of status this reconciler owns (`kopf` is kopf's): compared and written, nothing else.
OWNED = ("mode", "nodePool", "nodes", "warmReady", "scaleSets", "observedGeneration", "conditions")
BLOCKED_OWNED = ("scaleSets", "conditions")


# ---------------------------------------------------------------------------------- static mode
@dataclass(frozen=True)
class NodeEdit:
    """Claim (add label and taint) or release (remove them) one node."""

    node: str
    claim: bool


@dataclass(frozen=True)
class StaticPlan:
    edits: list[NodeEdit]
    members: list[str]  # nodes in the pool once the edits are done
    conflicts: list[str] = field(default_factory=list)  # matched, but held by another pool


def _matches(labels: dict[str, str], selector: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _has_taint(node: dict[str, Any], pool: str) -> bool:
    taints = node.get("spec", {}).get("taints") or []
    return any(t.get("key") == c.TAINT_POOL and t.get("value") == pool for t in taints)


def plan_static(
    pool: str, selector: dict[str, str] | None, nodes: list[dict[str, Any]]
) -> StaticPlan:
    """Which nodes to claim or release so exactly the matching ones carry the pool's marks.

    A node already labelled for another pool is never taken over (reported as a conflict).
    `selector=None` (the pool is going away) releases every node.
    """
    edits: list[NodeEdit] = []
    members: list[str] = []
    conflicts: list[str] = []
    for node in sorted(nodes, key=lambda n: str(n["metadata"]["name"])):
        name = node["metadata"]["name"]
        labels = node["metadata"].get("labels") or {}
        holder = labels.get(c.LABEL_POOL)
        wanted = selector is not None and _matches(labels, selector)
        if wanted and holder not in (None, pool):
            conflicts.append(name)
        elif wanted:
            members.append(name)
            if holder != pool or not _has_taint(node, pool):
                edits.append(NodeEdit(name, claim=True))
        elif holder == pool or _has_taint(node, pool):
            edits.append(NodeEdit(name, claim=False))
    return StaticPlan(edits, members, conflicts)


# ---------------------------------------------------------------------------------- the round
@dataclass(frozen=True)
class PoolObserved:
    """Everything one round read, in one place."""

    name: str
    uid: str
    generation: int
    status: dict[str, Any]  # status as read (the previous round's)
    users: list[str]  # namespace/name of the scale sets naming the pool
    spec: RunnerNodePoolSpec | None  # None: the spec did not validate
    spec_error: str | None  # `spec.<field>: message` when it did not
    karpenter: bool
    nodes: list[dict[str, Any]]  # static: every node; Karpenter: the pool-labelled ones
    nodepool: dict[str, Any] | None = None  # the live Karpenter NodePool (Karpenter mode)
    warm: dict[str, Any] | None = None  # the live warm-capacity Deployment


@dataclass(frozen=True)
class Group:
    """Manifests applied together, the anchor being the last; `hash` is stamped on it."""

    key: str
    manifests: list[dict[str, Any]]
    hash: str


@dataclass(frozen=True)
class PoolDesired:
    """What the builders rendered for this spec (empty where nothing should exist)."""

    nodepool_name: str
    nodepool: Group | None  # Karpenter mode with a nodeClassRef
    warm: Group | None  # [PriorityClass, Deployment] when warmCapacity.replicas > 0
    warm_namespace: str
    warm_name: str


@dataclass(frozen=True)
class ApplyGroup:
    group: Group
    reason: str  # missing / changed / drifted / resync
    rejected_reason: str  # the condition reason if the apiserver refuses it


@dataclass(frozen=True)
class EditNode:
    node: dict[str, Any]  # as observed (its resourceVersion guards the patch)
    claim: bool


@dataclass(frozen=True)
class DeleteDeployment:
    namespace: str
    name: str


Action = ApplyGroup | EditNode | DeleteDeployment


@dataclass(frozen=True)
class PoolPlan:
    actions: list[Action]
    mode: str | None  # Karpenter / Static; None when the spec is invalid
    nodepool: str | None
    members: int
    warm_ready: int
    problems: list[Problem]
    adopted: dict[str, Applied] = field(default_factory=dict)  # memory seeded after a restart


def plan(
    observed: PoolObserved,
    desired: PoolDesired,
    memory: dict[str, Applied],
    now: float,
) -> PoolPlan:
    """The actions for this round and the facts the status reports."""
    spec = observed.spec
    if spec is None:
        problem = Problem("Ready", "InvalidSpec", observed.spec_error or "spec is invalid")
        return PoolPlan([], None, None, 0, 0, [problem])
    if observed.karpenter:
        actions, members, problems = _karpenter(observed, desired, memory, now)
        mode, nodepool = "Karpenter", desired.nodepool_name
    else:
        actions, members, problems = _static(observed, spec)
        mode, nodepool = "Static", None
    actions += _warm(observed, desired, memory, now)
    ready = int(((observed.warm or {}).get("status") or {}).get("readyReplicas") or 0)
    warm_ready = ready if desired.warm is not None else 0
    pairs = ((desired.nodepool, observed.nodepool), (desired.warm, observed.warm))
    anchors = [(g.key, g.hash, live) for g, live in pairs if g is not None]
    adopted = adoptions(anchors, memory, now)
    return PoolPlan(actions, mode, nodepool, members, warm_ready, problems, adopted)


def _apply(group: Group | None, live: dict[str, Any] | None, memory: dict[str, Applied],
           now: float, rejected: str) -> list[Action]:  # fmt: skip
    if group is None:
        return []
    reason = apply_reason(group.hash, live, memory.get(group.key), now)
    return [] if reason is None else [ApplyGroup(group, reason, rejected)]


def _karpenter(
    observed: PoolObserved, desired: PoolDesired, memory: dict[str, Applied], now: float
) -> tuple[list[Action], int, list[Problem]]:
    problems = []
    if desired.nodepool is None:
        problems.append(Problem(
            "Ready", "NodeClassRefMissing",
            "spec.nodeClassRef is required when Karpenter is installed",
        ))  # fmt: skip
    actions = _apply(desired.nodepool, observed.nodepool, memory, now, "NodePoolRejected")
    return actions, len(observed.nodes), problems


def _static(
    observed: PoolObserved, spec: RunnerNodePoolSpec
) -> tuple[list[Action], int, list[Problem]]:
    if spec.static is None:
        return [], 0, [Problem(
            "Ready", "StaticSelectorMissing",
            "Karpenter is not installed, so spec.static.nodeSelector must name the nodes "
            "that form this pool",
        )]  # fmt: skip
    decided = plan_static(observed.name, spec.static.node_selector, observed.nodes)
    by_name = {n["metadata"]["name"]: n for n in observed.nodes}
    actions: list[Action] = [EditNode(by_name[e.node], e.claim) for e in decided.edits]
    problems = []
    if decided.conflicts:
        problems.append(Problem(
            "Ready", "NodesHeldByOtherPool",
            f"nodes {', '.join(decided.conflicts)} match spec.static.nodeSelector but already "
            f"carry another pool's {c.LABEL_POOL} label; they were left alone",
        ))  # fmt: skip
    if not decided.members:
        problems.append(Problem(
            "Ready", "NoMatchingNodes",
            f"no node matches spec.static.nodeSelector {spec.static.node_selector}",
        ))  # fmt: skip
    return actions, len(decided.members), problems


def _warm(
    observed: PoolObserved, desired: PoolDesired, memory: dict[str, Applied], now: float
) -> list[Action]:
    if desired.warm is None:
        if observed.warm is None:
            return []
        return [DeleteDeployment(desired.warm_namespace, desired.warm_name)]
    return _apply(desired.warm, observed.warm, memory, now, "WarmCapacityRejected")


def release(pool: str, nodes: list[dict[str, Any]]) -> list[EditNode]:
    """Node edits that give back a deleted pool's static nodes (any pool-labelled node)."""
    by_name = {n["metadata"]["name"]: n for n in nodes}
    return [EditNode(by_name[e.node], e.claim) for e in plan_static(pool, None, nodes).edits]


# ---------------------------------------------------------------------------------- status
def fold_status(
    observed: PoolObserved, decided: PoolPlan, refused: list[Problem], now: float
) -> RunnerNodePoolStatus:
    """The status for this round; `refused` are problems met while executing (a 422)."""
    problems = [*decided.problems, *refused]
    problem = problems[0] if problems else None
    previous = observed.status.get("conditions") or []
    ready = condition(
        previous, "Ready", problem is None,
        problem.reason if problem else "Reconciled",
        problem.message if problem else f"{decided.mode} mode; {decided.members} nodes in the pool",
        observed.generation, now,
    )  # fmt: skip
    return RunnerNodePoolStatus.model_validate({
        "mode": decided.mode, "nodePool": decided.nodepool, "nodes": decided.members,
        "warmReady": decided.warm_ready, "scaleSets": observed.users,
        "observedGeneration": observed.generation, "conditions": [ready],
    })  # fmt: skip


def blocked_status(
    name: str, users: list[str], status: dict[str, Any], generation: int, now: float
) -> tuple[RunnerNodePoolStatus, str]:
    """Status (and message) while deletion waits for the scale sets naming the pool."""
    message = (
        f"RunnerNodePool {name} is still used by RunnerScaleSets {', '.join(users)}; "
        "it (and its nodes) stays until they no longer name it in spec.nodePool"
    )
    ready = condition(status.get("conditions") or [], "Ready", False, "DeletionBlocked",
                      message, generation, now)  # fmt: skip
    status_model = RunnerNodePoolStatus(
        scale_sets=users, conditions=[Condition.model_validate(ready)]
    )
    return status_model, message


def status_wire(status: RunnerNodePoolStatus, owned: tuple[str, ...] = OWNED) -> dict[str, Any]:
    """The owned keys of a status model, camelCase; None where a key should be absent."""
    dumped = status.model_dump(by_alias=True, mode="json")
    return {key: dumped.get(key) for key in owned}


def warning(previous: dict[str, Any], problem: Problem | None) -> Problem | None:
    """The problem to post as an Event: only when the Ready message says something new."""
    if problem is None:
        return None
    old = next((x for x in previous.get("conditions") or [] if x.get("type") == "Ready"), None)
    return problem if old is None or old.get("message") != problem.message else None
