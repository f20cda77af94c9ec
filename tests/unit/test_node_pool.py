"""Node pools (pure parts): the Karpenter NodePool, runner placement, static node edits."""

from __future__ import annotations

from typing import Any

import pytest

from runnerfleet import conventions as c
from runnerfleet.builders.node_pool import (
    build_karpenter_nodepool,
    node_patch,
    placement,
    team_may_use,
)
from runnerfleet.builders.runner import ScaleSetIdentity, build_runner_pod
from runnerfleet.models.node_pool import RunnerNodePoolSpec
from runnerfleet.models.runner_scale_set import RunnerScaleSetSpec
from runnerfleet.planning.node_pool import NodeEdit, plan_static

KWOK_CLASS = {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"}


def pool(**spec: Any) -> RunnerNodePoolSpec:
    return RunnerNodePoolSpec.model_validate({"nodeClassRef": KWOK_CLASS, **spec})


def test_nodepool_carries_pool_taint_label_requirements_limits_and_disruption() -> None:
    spec = pool(
        teams=["team-a"],
        requirements=[{"key": "karpenter.kwok.sh/instance-family", "operator": "In",
                       "values": ["m"]}],
        capacityTypes=["spot", "on-demand"],
        limits={"cpu": "64", "memory": "256Gi"},
        disruption={"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": "30s",
                    "budgets": [{"nodes": "20%"}]},
        weight=50,
    )  # fmt: skip
    np = build_karpenter_nodepool("team-a", "uid-1", spec)
    assert np["apiVersion"] == "karpenter.sh/v1"
    assert np["metadata"]["name"] == "runnerfleet-team-a"
    assert np["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    template = np["spec"]["template"]
    assert template["metadata"]["labels"][c.LABEL_POOL] == "team-a"
    assert template["spec"]["taints"] == [
        {"key": c.TAINT_POOL, "value": "team-a", "effect": "NoSchedule"}
    ]
    reqs = {r["key"]: r for r in template["spec"]["requirements"]}
    assert reqs["karpenter.kwok.sh/instance-family"]["values"] == ["m"]
    assert reqs["karpenter.sh/capacity-type"]["values"] == ["on-demand", "spot"]
    assert reqs["kubernetes.io/os"]["values"] == ["linux"]
    assert template["spec"]["nodeClassRef"] == KWOK_CLASS
    assert np["spec"]["limits"] == {"cpu": "64", "memory": "256Gi"}
    assert np["spec"]["disruption"] == {
        "consolidationPolicy": "WhenEmptyOrUnderutilized",
        "consolidateAfter": "30s",
        "budgets": [{"nodes": "20%"}],
    }
    assert np["spec"]["weight"] == 50


def test_nodepool_defaults_are_on_demand_when_empty_and_user_os_wins() -> None:
    spec = pool(requirements=[{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                              {"key": "example.com/gpu", "operator": "Exists"}])  # fmt: skip
    np = build_karpenter_nodepool("gpu", "u", spec)
    reqs = np["spec"]["template"]["spec"]["requirements"]
    assert [r["key"] for r in reqs].count("kubernetes.io/os") == 1
    assert {"key": "example.com/gpu", "operator": "Exists"} in reqs
    assert np["spec"]["disruption"] == {
        "consolidationPolicy": "WhenEmpty",
        "consolidateAfter": "1m",
    }
    assert "limits" not in np["spec"]


def test_nodepool_without_node_class_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"spec\.nodeClassRef"):
        build_karpenter_nodepool("p", "u", RunnerNodePoolSpec())


def test_isolated_pools_admit_only_their_teams_and_shared_pools_everyone() -> None:
    isolated = pool(teams=["team-a"])
    assert team_may_use(isolated, "team-a")
    assert not team_may_use(isolated, "team-b")
    assert not team_may_use(isolated, None)
    assert team_may_use(pool(), "team-b")
    assert team_may_use(pool(), None)


def test_runner_pod_selects_and_tolerates_its_pool_and_keeps_template_tolerations() -> None:
    spec = RunnerScaleSetSpec.model_validate({
        "github": {"configUrl": "https://github.com/acme", "secretRef": {"name": "s"}},
        "labels": ["x"],
        "template": {
            "metadata": {"annotations": {c.ANNOTATION_DO_NOT_DISRUPT: "true", "keep": "me"}},
            "spec": {"nodeSelector": {c.LABEL_POOL: "other", "disk": "ssd"},
                     "tolerations": [{"key": "gpu", "operator": "Exists"}]},
        },
    })  # fmt: skip
    pod = build_runner_pod(ScaleSetIdentity("rs", "ns", "uid"), spec, "rs-abc", placement("gpu"))
    assert pod["spec"]["nodeSelector"] == {c.LABEL_POOL: "gpu", "disk": "ssd"}
    assert pod["spec"]["tolerations"] == [
        {"key": "gpu", "operator": "Exists"},
        {"key": c.TAINT_POOL, "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
    ]
    # A fresh runner is idle: only the operator sets do-not-disrupt, once it is busy.
    assert pod["metadata"]["annotations"] == {"keep": "me"}


def node(name: str, labels: dict[str, str] | None = None, taints: list[Any] | None = None) -> Any:
    return {"metadata": {"name": name, "labels": labels or {}, "resourceVersion": "1"},
            "spec": {"taints": taints or []}}  # fmt: skip


TAINT = {"key": c.TAINT_POOL, "value": "ci", "effect": "NoSchedule"}


def test_static_mode_claims_matches_releases_strays_and_never_steals() -> None:
    nodes = [
        node("a", {"role": "ci"}),  # matches: claim
        node("b", {"role": "ci", c.LABEL_POOL: "ci"}, [TAINT]),  # already ours: nothing
        node("c", {"role": "ci", c.LABEL_POOL: "gpu"}),  # another pool's: conflict
        node("d", {c.LABEL_POOL: "ci"}, [TAINT]),  # no longer matches: release
        node("e"),  # unrelated
    ]
    decided = plan_static("ci", {"role": "ci"}, nodes)
    assert decided.edits == [NodeEdit("a", claim=True), NodeEdit("d", claim=False)]
    assert decided.members == ["a", "b"]
    assert decided.conflicts == ["c"]
    gone = plan_static("ci", None, nodes)
    assert gone.edits == [NodeEdit("b", claim=False), NodeEdit("d", claim=False)]


def test_node_patch_adds_and_removes_only_the_pool_taint() -> None:
    other = {"key": "dedicated", "value": "x", "effect": "NoSchedule"}
    claimed = node_patch(node("a", taints=[other]), "ci", claim=True)
    assert claimed == {"metadata": {"labels": {c.LABEL_POOL: "ci"}},
                       "spec": {"taints": [other, TAINT]}}  # fmt: skip
    released = node_patch(node("a", taints=[other, TAINT]), "ci", claim=False)
    assert released == {"metadata": {"labels": {c.LABEL_POOL: None}}, "spec": {"taints": [other]}}
    assert node_patch(node("a", taints=[TAINT]), "ci", claim=False)["spec"] == {"taints": None}
