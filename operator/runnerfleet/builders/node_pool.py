"""Pure builders for node pools: the Karpenter NodePool, runner placement, warm capacity and
the node patch of a static-mode claim or release (which nodes to edit is decided in
planning/node_pool.py).

Layer: builders. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runnerfleet import conventions as c
from runnerfleet.models.node_pool import RunnerNodePoolSpec


@dataclass(frozen=True)
class Placement:
    """What a runner pod needs to land on a pool's nodes (and only there)."""

    node_selector: dict[str, str]
    tolerations: list[dict[str, str]]


def pool_taint(pool: str) -> dict[str, str]:
    return {"key": c.TAINT_POOL, "value": pool, "effect": "NoSchedule"}


def placement(pool: str) -> Placement:
    return Placement(
        node_selector={c.LABEL_POOL: pool},
        tolerations=[{"key": c.TAINT_POOL, "operator": "Equal", "value": pool,
                      "effect": "NoSchedule"}],
    )  # fmt: skip


def team_may_use(spec: RunnerNodePoolSpec, team: str | None) -> bool:
    """Shared pools (no teams listed) admit everyone; isolated ones only their teams."""
    return not spec.teams or (team is not None and team in spec.teams)


def karpenter_nodepool_name(pool: str) -> str:
    return f"runnerfleet-{pool}"


def build_karpenter_nodepool(pool: str, uid: str, spec: RunnerNodePoolSpec) -> dict[str, Any]:
    """The karpenter.sh/v1 NodePool for a RunnerNodePool (applied server-side)."""
    if spec.node_class_ref is None:
        raise ValueError("spec.nodeClassRef is required when Karpenter is installed")
    requirements = [r.to_wire() for r in spec.requirements]
    keys = {r.key for r in spec.requirements}
    if "kubernetes.io/os" not in keys:  # runner images are Linux
        requirements.append({"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]})
    if "karpenter.sh/capacity-type" not in keys:
        requirements.append({"key": "karpenter.sh/capacity-type", "operator": "In",
                             "values": sorted(spec.capacity_types)})  # fmt: skip
    for req in requirements:
        if req["operator"] in ("Exists", "DoesNotExist"):
            req.pop("values", None)
    disruption: dict[str, Any] = {
        "consolidationPolicy": spec.disruption.consolidation_policy,
        "consolidateAfter": spec.disruption.consolidate_after,
    }
    if spec.disruption.budgets:
        disruption["budgets"] = [b.to_wire() for b in spec.disruption.budgets]
    body: dict[str, Any] = {
        "template": {
            "metadata": {"labels": {c.LABEL_POOL: pool, c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE}},
            "spec": {
                "requirements": requirements,
                "taints": [pool_taint(pool)],
                "nodeClassRef": spec.node_class_ref.to_wire(),
                "expireAfter": spec.expire_after,
            },
        },
        "disruption": disruption,
    }
    if spec.limits:
        body["limits"] = dict(spec.limits)
    if spec.weight is not None:
        body["weight"] = spec.weight
    return {
        "apiVersion": f"{c.KARPENTER_GROUP}/{c.KARPENTER_VERSION}",
        "kind": "NodePool",
        "metadata": {
            "name": karpenter_nodepool_name(pool),
            "labels": {c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE, c.LABEL_POOL: pool},
            "ownerReferences": [{
                "apiVersion": c.API_VERSION, "kind": c.RUNNER_NODE_POOL_KIND, "name": pool,
                "uid": uid, "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": body,
    }  # fmt: skip


# ---------------------------------------------------------------------------------- warm capacity
def warm_deployment_name(pool: str) -> str:
    return f"runnerfleet-warm-{pool}"


def build_warm_priority_class() -> dict[str, Any]:
    """Below the default priority (0) of runner pods, and never preempting anything itself."""
    return {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": c.WARM_PRIORITY_CLASS,
                     "labels": {c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE}},
        "value": c.WARM_PRIORITY,
        "preemptionPolicy": "Never",
        "globalDefault": False,
        "description": "runnerfleet placeholder pods: runners preempt them",
    }  # fmt: skip


def build_warm_deployment(
    pool: str, uid: str, spec: RunnerNodePoolSpec, namespace: str
) -> dict[str, Any]:
    """Placeholder pods holding `spec.warmCapacity` on the pool's nodes."""
    warm = spec.warm_capacity
    assert warm is not None
    place = placement(pool)
    labels = {c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE, c.LABEL_COMPONENT: c.COMPONENT_WARM,
              c.LABEL_POOL: pool}  # fmt: skip
    resources = {"cpu": warm.cpu, "memory": warm.memory}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": warm_deployment_name(pool), "namespace": namespace, "labels": labels,
            "ownerReferences": [{
                "apiVersion": c.API_VERSION, "kind": c.RUNNER_NODE_POOL_KIND, "name": pool,
                "uid": uid, "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "replicas": warm.replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "priorityClassName": c.WARM_PRIORITY_CLASS,
                    "terminationGracePeriodSeconds": 0,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "nodeSelector": place.node_selector,
                    "tolerations": place.tolerations,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65535,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "placeholder", "image": c.PLACEHOLDER_IMAGE,
                        "resources": {"requests": resources, "limits": resources},
                        "securityContext": {"allowPrivilegeEscalation": False,
                                            "capabilities": {"drop": ["ALL"]},
                                            "readOnlyRootFilesystem": True},
                    }],
                },
            },
        },
    }  # fmt: skip


# ---------------------------------------------------------------------------------- static mode
def node_patch(node: dict[str, Any], pool: str, claim: bool) -> dict[str, Any]:
    """Strategic-merge-free JSON merge patch body for a node edit (taints list replaced whole)."""
    others = [t for t in node.get("spec", {}).get("taints") or [] if t.get("key") != c.TAINT_POOL]
    taints = [*others, pool_taint(pool)] if claim else others
    return {
        "metadata": {"labels": {c.LABEL_POOL: pool if claim else None}},
        "spec": {"taints": taints or None},
    }
