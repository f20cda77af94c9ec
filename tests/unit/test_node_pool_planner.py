"""The RunnerNodePool planner (planning/node_pool.py), with no cluster: Karpenter and static
mode, warm capacity, drift, and the status fold (written only when it changed)."""

from __future__ import annotations

from typing import Any

from runnerfleet import conventions as c
from runnerfleet.models.node_pool import RunnerNodePoolSpec
from runnerfleet.planning.children import Applied
from runnerfleet.planning.node_pool import (
    ApplyGroup,
    DeleteDeployment,
    EditNode,
    PoolObserved,
    blocked_status,
    fold_status,
    plan,
    status_wire,
)
from runnerfleet.planning.status_diff import status_patch
from runnerfleet.services.node_pool import desired

KWOK_CLASS = {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"}
NOW = 1_760_000_000.0
TAINT = {"key": c.TAINT_POOL, "value": "ci", "effect": "NoSchedule"}


def node(name: str, **labels: str) -> dict[str, Any]:
    taints = [TAINT] if labels.get(c.LABEL_POOL) == "ci" else []
    return {"metadata": {"name": name, "labels": labels, "resourceVersion": "7"},
            "spec": {"taints": taints}}  # fmt: skip


def observed(spec: dict[str, Any] | None, **kw: Any) -> PoolObserved:
    parsed = None if spec is None else RunnerNodePoolSpec.model_validate(spec)
    base: dict[str, Any] = dict(
        name="ci", uid="uid-1", generation=2, status={}, users=[], spec=parsed,
        spec_error=None if spec else "spec.weight: too big", karpenter=False, nodes=[],
    )  # fmt: skip
    return PoolObserved(**{**base, **kw})


def live(group_manifests: list[dict[str, Any]], generation: int = 1, **status: Any) -> Any:
    """The anchor as the apiserver would return it after applying the group."""
    anchor = group_manifests[-1]
    return {**anchor, "metadata": {**anchor["metadata"], "generation": generation},
            "status": status}  # fmt: skip


# ---------------------------------------------------------------------------------- Karpenter
def test_karpenter_pool_is_applied_when_missing_and_counts_labelled_nodes() -> None:
    obs = observed({"nodeClassRef": KWOK_CLASS}, karpenter=True,
                   nodes=[node("k1", **{c.LABEL_POOL: "ci"})])  # fmt: skip
    want = desired(obs)
    decided = plan(obs, want, {}, NOW)
    assert [type(a) for a in decided.actions] == [ApplyGroup]
    action = decided.actions[0]
    assert isinstance(action, ApplyGroup)
    assert action.reason == "missing"
    assert action.group.manifests[0]["kind"] == "NodePool"
    anchor_annotations = action.group.manifests[-1]["metadata"]["annotations"]
    assert anchor_annotations[c.ANNOTATION_SPEC_HASH] == action.group.hash
    assert (decided.mode, decided.nodepool, decided.members) == ("Karpenter", "runnerfleet-ci", 1)
    assert decided.problems == []


def test_karpenter_pool_in_place_is_left_alone_then_changed_drifted_or_resynced() -> None:
    spec = {"nodeClassRef": KWOK_CLASS}
    first = observed(spec, karpenter=True)
    group = desired(first).nodepool
    assert group is not None
    current = live(group.manifests, generation=1)
    obs = observed(spec, karpenter=True, nodepool=current)
    memory = {group.key: Applied(group.hash, 1, NOW)}
    assert plan(obs, desired(obs), memory, NOW + 10).actions == []

    edited = observed(spec, karpenter=True, nodepool=live(group.manifests, generation=2))
    [drift] = plan(edited, desired(edited), memory, NOW + 10).actions
    assert isinstance(drift, ApplyGroup)
    assert drift.reason == "drifted"

    [resync] = plan(obs, desired(obs), memory, NOW + 301).actions
    assert isinstance(resync, ApplyGroup)
    assert resync.reason == "resync"

    bigger = {**spec, "limits": {"cpu": "64"}}
    changed = observed(bigger, karpenter=True, nodepool=current)
    [change] = plan(changed, desired(changed), memory, NOW + 10).actions
    assert isinstance(change, ApplyGroup)
    assert change.reason == "changed"
    assert change.group.manifests[0]["spec"]["limits"] == {"cpu": "64"}


def test_after_a_restart_a_current_nodepool_is_adopted_not_reapplied() -> None:
    spec = {"nodeClassRef": KWOK_CLASS}
    group = desired(observed(spec, karpenter=True)).nodepool
    assert group is not None
    obs = observed(spec, karpenter=True, nodepool=live(group.manifests, generation=4))
    decided = plan(obs, desired(obs), {}, NOW)
    assert decided.actions == []
    assert decided.adopted == {group.key: Applied(group.hash, 4, NOW)}


def test_karpenter_without_node_class_is_a_problem_and_applies_nothing() -> None:
    obs = observed({}, karpenter=True)
    decided = plan(obs, desired(obs), {}, NOW)
    assert decided.actions == []
    assert [p.reason for p in decided.problems] == ["NodeClassRefMissing"]


def test_invalid_spec_plans_nothing_and_says_which_field() -> None:
    obs = observed(None)
    decided = plan(obs, desired(obs), {}, NOW)
    assert decided.actions == []
    assert decided.mode is None
    assert [(p.reason, p.message) for p in decided.problems] == [
        ("InvalidSpec", "spec.weight: too big")
    ]


# ---------------------------------------------------------------------------------- static
def test_static_mode_edits_only_nodes_that_need_it_and_reports_conflicts() -> None:
    nodes = [
        node("a", role="ci"),  # to claim
        node("b", role="ci", **{c.LABEL_POOL: "ci"}),  # already ours
        node("c", role="ci", **{c.LABEL_POOL: "gpu"}),  # another pool's
        node("d", **{c.LABEL_POOL: "ci"}),  # to release
    ]
    obs = observed({"static": {"nodeSelector": {"role": "ci"}}}, nodes=nodes)
    decided = plan(obs, desired(obs), {}, NOW)
    edits = [(a.node["metadata"]["name"], a.claim) for a in decided.actions
             if isinstance(a, EditNode)]  # fmt: skip
    assert edits == [("a", True), ("d", False)]
    assert (decided.mode, decided.members) == ("Static", 2)
    assert [p.reason for p in decided.problems] == ["NodesHeldByOtherPool"]


def test_static_mode_in_place_plans_no_action() -> None:
    nodes = [node("b", role="ci", **{c.LABEL_POOL: "ci"})]
    obs = observed({"static": {"nodeSelector": {"role": "ci"}}}, nodes=nodes)
    assert plan(obs, desired(obs), {}, NOW).actions == []


def test_static_mode_without_selector_or_matches_is_a_problem() -> None:
    bare = observed({})
    assert [p.reason for p in plan(bare, desired(bare), {}, NOW).problems] == [
        "StaticSelectorMissing"
    ]
    none = observed({"static": {"nodeSelector": {"role": "ci"}}}, nodes=[node("x")])
    assert [p.reason for p in plan(none, desired(none), {}, NOW).problems] == ["NoMatchingNodes"]


# ---------------------------------------------------------------------------------- warm
def test_warm_capacity_is_applied_when_missing_kept_when_current_and_deleted_when_zero() -> None:
    spec = {"static": {"nodeSelector": {"role": "ci"}}, "warmCapacity": {"replicas": 2}}
    nodes = [node("b", role="ci", **{c.LABEL_POOL: "ci"})]
    obs = observed(spec, nodes=nodes)
    [apply] = plan(obs, desired(obs), {}, NOW).actions
    assert isinstance(apply, ApplyGroup)
    assert [m["kind"] for m in apply.group.manifests] == ["PriorityClass", "Deployment"]

    current = live(apply.group.manifests, readyReplicas=2)
    steady = observed(spec, nodes=nodes, warm=current)
    decided = plan(steady, desired(steady), {}, NOW)
    assert decided.actions == []
    assert decided.warm_ready == 2

    zero = {**spec, "warmCapacity": {"replicas": 0}}
    gone = observed(zero, nodes=nodes, warm=current)
    assert plan(gone, desired(gone), {}, NOW).actions == [
        DeleteDeployment("default", "runnerfleet-warm-ci")
    ]
    never = observed(zero, nodes=nodes)
    assert plan(never, desired(never), {}, NOW).actions == []


# ---------------------------------------------------------------------------------- status
def test_status_is_rewritten_only_when_it_changes_and_transition_time_holds() -> None:
    nodes = [node("b", role="ci", **{c.LABEL_POOL: "ci"})]
    spec = {"static": {"nodeSelector": {"role": "ci"}}}
    obs = observed(spec, nodes=nodes, users=["team-a/linux"])
    first = status_wire(fold_status(obs, plan(obs, desired(obs), {}, NOW), [], NOW))
    assert first["mode"] == "Static"
    assert first["scaleSets"] == ["team-a/linux"]
    assert first["conditions"][0]["message"] == "Static mode; 1 nodes in the pool"

    later = observed(spec, nodes=nodes, users=["team-a/linux"], status=first)
    again = status_wire(fold_status(later, plan(later, desired(later), {}, NOW + 60), [], NOW + 60))
    assert status_patch(first, again) is None  # idle round: no write

    lost = observed(spec, nodes=[node("x")], users=["team-a/linux"], status=first)
    broke = status_wire(fold_status(lost, plan(lost, desired(lost), {}, NOW + 90), [], NOW + 90))
    patch = status_patch(first, broke)
    assert patch is not None
    assert set(patch) == {"nodes", "conditions"}
    assert patch["conditions"][0]["reason"] == "NoMatchingNodes"
    since = first["conditions"][0]["lastTransitionTime"]
    assert patch["conditions"][0]["lastTransitionTime"] != since


def test_invalid_spec_clears_mode() -> None:
    prior = {"mode": "Static", "nodes": 1}
    obs = observed(None, status=prior)
    patch = status_patch(prior, status_wire(fold_status(obs, plan(obs, desired(obs), {}, NOW),
                                                        [], NOW)))  # fmt: skip
    assert patch is not None
    assert patch["mode"] is None
    assert patch["conditions"][0]["reason"] == "InvalidSpec"


def test_deletion_blocked_status_names_the_users_and_is_written_once() -> None:
    status, message = blocked_status("ci", ["a/x", "b/y"], {}, 3, NOW)
    wire = status_wire(status, ("scaleSets", "conditions"))
    assert wire["scaleSets"] == ["a/x", "b/y"]
    assert wire["conditions"][0]["reason"] == "DeletionBlocked"
    assert "a/x, b/y" in message
    again, _ = blocked_status("ci", ["a/x", "b/y"], wire, 3, NOW + 5)
    assert status_patch(wire, status_wire(again, ("scaleSets", "conditions"))) is None
