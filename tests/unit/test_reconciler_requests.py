"""What an idle round of the TeamListener and RunnerNodePool reconcilers costs the apiserver.

The services run against an in-memory stand-in for the Kubernetes gateway that records every
call. After the first round has created everything, an idle round only reads: no apply, no
status patch. A deleted or hand-edited child is put back on the next round.
"""

from __future__ import annotations

import copy
from typing import Any, cast

from runnerfleet import conventions as c
from runnerfleet.planning.children import Applied
from runnerfleet.services import node_pool as pool_service
from runnerfleet.services import team_listener as listener_service
from tests.support.factories import make_node_pool, make_team_listener

WRITES = {"apply", "patch_team_listener_status", "patch_node_pool_status", "patch_node",
          "delete_deployment", "event"}  # fmt: skip
KWOK_CLASS = {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"}


def merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


class FakeCluster:
    """The gateway calls the two reconcilers make, over a dict of objects; `calls` records them."""

    def __init__(self, *, karpenter: bool = False, nodes: list[dict[str, Any]] | None = None):
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.karpenter = karpenter
        self.nodes = {n["metadata"]["name"]: n for n in nodes or []}
        self.calls: list[str] = []

    def add(self, kind: str, body: dict[str, Any], namespace: str = "") -> None:
        meta = body["metadata"]
        meta.update(namespace=namespace or None, uid=f"uid-{meta['name']}", generation=1)
        self.objects[(kind, namespace, meta["name"])] = copy.deepcopy(body)

    def writes(self) -> list[str]:
        return [call for call in self.calls if call in WRITES]

    def take(self) -> list[str]:
        calls, self.calls = self.calls, []
        return calls

    def _get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found else None

    async def get_team_listener(self, namespace: str, name: str) -> dict[str, Any]:
        self.calls.append("get_team_listener")
        return cast(dict[str, Any], self._get(c.TEAM_LISTENER_KIND, namespace, name))

    async def get_node_pool(self, name: str) -> dict[str, Any]:
        self.calls.append("get_node_pool")
        return cast(dict[str, Any], self._get(c.RUNNER_NODE_POOL_KIND, "", name))

    async def patch_team_listener_status(self, ns: str, name: str, status: Any) -> None:
        self.calls.append("patch_team_listener_status")
        obj = self.objects[(c.TEAM_LISTENER_KIND, ns, name)]
        obj["status"] = merge(obj.get("status"), status)

    async def patch_node_pool_status(self, name: str, status: Any) -> None:
        self.calls.append("patch_node_pool_status")
        obj = self.objects[(c.RUNNER_NODE_POOL_KIND, "", name)]
        obj["status"] = merge(obj.get("status"), status)

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("apply")
        meta = manifest["metadata"]
        key = (manifest["kind"], meta.get("namespace") or "", meta["name"])
        old = self.objects.get(key)
        live = copy.deepcopy(manifest)
        generation = int(old["metadata"]["generation"]) if old else 1
        if old is not None and old.get("spec") != manifest.get("spec"):
            generation += 1
        live["metadata"]["generation"] = generation
        if manifest["kind"] == "Deployment":
            live["status"] = {"readyReplicas": manifest["spec"]["replicas"]}
        self.objects[key] = live
        return copy.deepcopy(live)

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append("get_deployment")
        return self._get("Deployment", namespace, name)

    async def get_karpenter_nodepool(self, name: str) -> dict[str, Any] | None:
        self.calls.append("get_karpenter_nodepool")
        return self._get("NodePool", "", name)

    async def delete_deployment(self, namespace: str, name: str) -> None:
        self.calls.append("delete_deployment")
        self.objects.pop(("Deployment", namespace, name), None)

    async def list_scale_sets(self, namespace: str | None = None) -> list[dict[str, Any]]:
        self.calls.append("list_scale_sets")
        return []

    async def has_karpenter(self) -> bool:
        self.calls.append("has_karpenter")
        return self.karpenter

    async def list_nodes(self, selector: str = "") -> list[dict[str, Any]]:
        self.calls.append("list_nodes")
        nodes = list(self.nodes.values())
        if selector:
            key, value = selector.split("=")
            nodes = [n for n in nodes if n["metadata"]["labels"].get(key) == value]
        return copy.deepcopy(nodes)

    async def patch_node(self, name: str, patch: dict[str, Any]) -> None:
        self.calls.append("patch_node")
        patch = {**patch, "metadata": {k: v for k, v in patch["metadata"].items()
                                       if k != "resourceVersion"}}  # fmt: skip
        self.nodes[name] = merge(self.nodes[name], patch)

    async def event(self, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        self.calls.append("event")


# ---------------------------------------------------------------------------------- TeamListener
LISTENER_CHILDREN = 8


async def listener_round(kube: FakeCluster, memory: listener_service.Memory) -> list[str]:
    await listener_service.reconcile_once(cast(Any, kube), "ns", "team-a", "img:1", memory)
    return kube.take()


async def test_idle_team_listener_round_is_two_reads_and_no_writes() -> None:
    kube = FakeCluster()
    kube.add(c.TEAM_LISTENER_KIND, make_team_listener(), "ns")
    memory = listener_service.Memory()
    first = await listener_round(kube, memory)
    # SA, Role, RoleBinding, Service, NetworkPolicy, two identity-endpoint NetworkPolicies
    # (issue 13: applied with the group, never per round), Deployment.
    assert first.count("apply") == LISTENER_CHILDREN
    assert first.count("patch_team_listener_status") == 1
    for _ in range(3):
        assert await listener_round(kube, memory) == ["get_team_listener", "get_deployment"]
    # A restarted operator (empty memory) adopts what is there: still no writes.
    assert await listener_round(kube, listener_service.Memory()) == [
        "get_team_listener", "get_deployment",
    ]  # fmt: skip


async def test_team_listener_children_come_back_when_deleted_or_edited() -> None:
    kube = FakeCluster()
    kube.add(c.TEAM_LISTENER_KIND, make_team_listener(), "ns")
    memory = listener_service.Memory()
    await listener_round(kube, memory)
    del kube.objects[("Deployment", "ns", "team-a-listener")]
    assert (await listener_round(kube, memory)).count("apply") == LISTENER_CHILDREN
    live = kube.objects[("Deployment", "ns", "team-a-listener")]
    live["spec"]["replicas"], live["metadata"]["generation"] = 3, 7  # kubectl scale
    assert (await listener_round(kube, memory)).count("apply") == LISTENER_CHILDREN
    assert kube.objects[("Deployment", "ns", "team-a-listener")]["spec"]["replicas"] == 1
    assert kube.writes() == []
    assert await listener_round(kube, memory) == ["get_team_listener", "get_deployment"]


async def test_team_listener_spec_change_is_applied_at_once() -> None:
    kube = FakeCluster()
    kube.add(c.TEAM_LISTENER_KIND, make_team_listener(), "ns")
    memory = listener_service.Memory()
    await listener_round(kube, memory)
    body = kube.objects[(c.TEAM_LISTENER_KIND, "ns", "team-a")]
    body["spec"]["suspend"], body["metadata"]["generation"] = True, 2
    calls = await listener_round(kube, memory)
    assert calls.count("apply") == LISTENER_CHILDREN
    assert "patch_team_listener_status" in calls
    assert kube.objects[("Deployment", "ns", "team-a-listener")]["spec"]["replicas"] == 0
    assert body["status"]["observedGeneration"] == 2


# ---------------------------------------------------------------------------------- NodePool
async def pool_round(kube: FakeCluster, memory: dict[str, Applied]) -> list[str]:
    await pool_service.reconcile_once(cast(Any, kube), "ci", memory)
    return kube.take()


def _node(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels, "resourceVersion": "1"},
            "spec": {"taints": []}}  # fmt: skip


async def test_idle_static_pool_round_only_reads() -> None:
    kube = FakeCluster(nodes=[_node("n1", role="ci"), _node("n2")])
    kube.add(c.RUNNER_NODE_POOL_KIND, make_node_pool(
        "ci", static={"nodeSelector": {"role": "ci"}}, warmCapacity={"replicas": 1}))  # fmt: skip
    memory: dict[str, Applied] = {}
    first = await pool_round(kube, memory)
    assert first.count("patch_node") == 1
    assert first.count("apply") == 2  # PriorityClass and the warm Deployment
    assert "patch_node_pool_status" in first
    reads = ["get_node_pool", "list_scale_sets", "has_karpenter", "list_nodes", "get_deployment"]
    # The placeholders became ready after the first round: that is news, and is written.
    assert await pool_round(kube, memory) == [*reads, "patch_node_pool_status"]
    assert await pool_round(kube, memory) == reads
    status = kube.objects[(c.RUNNER_NODE_POOL_KIND, "", "ci")]["status"]
    assert (status["mode"], status["nodes"], status["warmReady"]) == ("Static", 1, 1)


async def test_idle_karpenter_pool_round_only_reads_and_repairs_a_deleted_nodepool() -> None:
    kube = FakeCluster(karpenter=True)
    kube.add(c.RUNNER_NODE_POOL_KIND, make_node_pool("ci", nodeClassRef=KWOK_CLASS))
    memory: dict[str, Applied] = {}
    first = await pool_round(kube, memory)
    assert first.count("apply") == 1
    assert await pool_round(kube, memory) == [
        "get_node_pool", "list_scale_sets", "has_karpenter", "list_nodes",
        "get_karpenter_nodepool", "get_deployment",
    ]  # fmt: skip
    del kube.objects[("NodePool", "", "runnerfleet-ci")]
    assert (await pool_round(kube, memory)).count("apply") == 1
    assert ("NodePool", "", "runnerfleet-ci") in kube.objects
