"""Node pools in static mode (no Karpenter in the session cluster): the operator labels and
taints the nodes a pool selects, runners land only there, and bad references are conditions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client

from runnerfleet import conventions as c
from runnerfleet.localcluster import LocalCluster, NodeSpec
from tests.support.factories import make_node_pool, make_scale_set
from tests.support.fleet import Fleet
from tests.support.kube import wait_for

SELECT = "runnerfleet-test/static-pool"


@pytest.fixture
async def pool_nodes(local_cluster: LocalCluster, running_fleet: Fleet) -> AsyncIterator[list[str]]:
    """Two extra kwok nodes carrying a label only this test's pool selects."""
    spec = NodeSpec(count=2, prefix=f"pool-{running_fleet.namespace}",
                    labels={SELECT: running_fleet.namespace})  # fmt: skip
    names = local_cluster.add_nodes(spec)
    yield names
    core = client.CoreV1Api(running_fleet.kube)
    for name in names:
        await core.delete_node(name)


async def _nodes(f: Fleet) -> dict[str, Any]:
    found = await client.CoreV1Api(f.kube).list_node()
    return {n.metadata.name: n for n in found.items}


def _marked(node: Any, pool: str) -> bool:
    taints = node.spec.taints or []
    return (node.metadata.labels or {}).get(c.LABEL_POOL) == pool and any(
        t.key == c.TAINT_POOL and t.value == pool and t.effect == "NoSchedule" for t in taints
    )


async def test_static_pool_marks_selected_nodes_runners_land_only_there_and_release_on_delete(
    running_fleet: Fleet, pool_nodes: list[str]
) -> None:
    f = running_fleet
    pool = f"ci-{f.namespace}"
    await f.apply_node_pool(make_node_pool(pool, static={"nodeSelector": {SELECT: f.namespace}}))
    await f.wait_condition("rnp", pool, "Ready", "True")
    nodes = await _nodes(f)
    assert sorted(n for n, node in nodes.items() if _marked(node, pool)) == sorted(pool_nodes)
    status = (await f.node_pool(pool) or {})["status"]
    assert (status["mode"], status["nodes"]) == ("Static", 2)

    await f.apply_scale_set(make_scale_set("ci", config_url=f.config_url, min_runners=4,
                                           nodePool=pool))  # fmt: skip
    await f.expect_runners("ci", idle=4)
    pods = await f.pods("ci")
    assert {p.spec.node_name for p in pods} <= set(pool_nodes)
    for p in pods:
        assert p.spec.node_selector == {c.LABEL_POOL: pool}
    used = await wait_for(lambda: f.node_pool(pool), lambda o: bool(o and o["status"].get(
        "scaleSets")), what="pool lists its scale set")  # fmt: skip
    assert used is not None
    assert used["status"]["scaleSets"] == [f"{f.namespace}/ci"]

    # Deleting a pool still in use is held (condition + Event); its runners are untouched.
    api = client.CustomObjectsApi(f.kube)
    await api.delete_cluster_custom_object(c.GROUP, c.VERSION, c.RUNNER_NODE_POOL_PLURAL, pool)
    blocked = await f.wait_condition("rnp", pool, "Ready", "False", "DeletionBlocked")
    assert f"{f.namespace}/ci" in blocked["message"]
    # A settled scale set learns it at its next resync (30 s ± 20 %) through its pool cache
    # (10 s): up to 46 s, by design (docs/node-pools.md).
    await f.wait_condition("rss", "ci", "NodePoolReady", "False", "NodePoolDeleting", within=60)
    events = await client.CoreV1Api(f.kube).list_namespaced_event("default")
    assert any(e.reason == "DeletionBlocked" and e.involved_object.name == pool
               for e in events.items)  # fmt: skip
    await f.expect_runners("ci", idle=4)
    assert all(_marked(n, pool) for name, n in (await _nodes(f)).items() if name in pool_nodes)

    # Once no scale set names it, the pool goes and its nodes are released.
    await api.patch_namespaced_custom_object(
        c.GROUP, c.VERSION, f.namespace, c.RUNNER_SCALE_SET_PLURAL, "ci",
        {"spec": {"nodePool": None}}, _content_type="application/merge-patch+json",
    )  # fmt: skip
    await wait_for(lambda: f.node_pool(pool), lambda o: o is None, what=f"pool {pool} gone")
    nodes = await _nodes(f)
    for name in pool_nodes:
        assert c.LABEL_POOL not in (nodes[name].metadata.labels or {})
        assert not any(t.key == c.TAINT_POOL for t in nodes[name].spec.taints or [])


async def test_unknown_or_foreign_pool_is_a_condition_and_creates_nothing_until_fixed(
    running_fleet: Fleet, pool_nodes: list[str]
) -> None:
    f = running_fleet
    pool = f"team-a-{f.namespace}"
    await f.apply_scale_set(make_scale_set("b", config_url=f.config_url, min_runners=2,
                                           team="team-b", nodePool=pool))  # fmt: skip
    missing = await f.wait_condition("rss", "b", "NodePoolReady", "False", "NodePoolNotFound")
    assert "spec.nodePool" in missing["message"]
    assert pool in missing["message"]
    assert await f.pods("b") == []

    # An isolated pool of another team: still refused, with the reason.
    await f.apply_node_pool(make_node_pool(
        pool, teams=["team-a"], static={"nodeSelector": {SELECT: f.namespace}}))  # fmt: skip
    forbidden = await f.wait_condition("rss", "b", "NodePoolReady", "False", "NodePoolForbidden")
    assert "team-a" in forbidden["message"]
    assert "'team-b'" in forbidden["message"]
    assert await f.pods("b") == []

    # Fixed by the platform team (team-b admitted): runners appear on the pool's nodes.
    api = client.CustomObjectsApi(f.kube)
    await api.patch_cluster_custom_object(
        c.GROUP,
        c.VERSION,
        c.RUNNER_NODE_POOL_PLURAL,
        pool,
        {"spec": {"teams": ["team-a", "team-b"]}},
        _content_type="application/merge-patch+json",
    )
    await f.expect_runners("b", idle=2)
    assert {p.spec.node_name for p in await f.pods("b")} <= set(pool_nodes)
    await f.wait_condition("rss", "b", "NodePoolReady", "True")


async def test_warm_capacity_placeholders_are_preempted_by_runners(
    running_fleet: Fleet, local_cluster: LocalCluster
) -> None:
    """Placeholders hold a small node's CPU; runners preempt them instead of waiting."""
    f = running_fleet
    pool = f"warm-{f.namespace}"
    [node] = local_cluster.add_nodes(NodeSpec(count=1, prefix=f"warm-{f.namespace}", cpu="4",
                                              labels={SELECT: f"warm-{f.namespace}"}))  # fmt: skip
    core = client.CoreV1Api(f.kube)
    try:
        await f.apply_node_pool(make_node_pool(
            pool, static={"nodeSelector": {SELECT: f"warm-{f.namespace}"}},
            warmCapacity={"replicas": 3, "cpu": "1", "memory": "256Mi"},
        ))  # fmt: skip
        selector = f"{c.LABEL_COMPONENT}=warm-capacity,{c.LABEL_POOL}={pool}"

        async def placeholders() -> list[Any]:
            found = await core.list_namespaced_pod("default", label_selector=selector)
            return [p for p in found.items if not p.metadata.deletion_timestamp]

        running = await wait_for(
            placeholders, lambda ps: sum(p.status.phase == "Running" for p in ps) == 3,
            what="3 placeholders Running", within=30,
        )  # fmt: skip
        assert {p.spec.node_name for p in running} == {node}
        assert all(p.spec.priority == c.WARM_PRIORITY for p in running)
        ready = await wait_for(lambda: f.node_pool(pool),
                               lambda o: (o or {}).get("status", {}).get("warmReady") == 3,
                               what="status.warmReady == 3")  # fmt: skip
        assert ready is not None

        # Two runners of 1.5 CPU need 3 of the node's 4 CPUs: the scheduler evicts two
        # placeholders for them (which, with Karpenter, would bring a node up for themselves).
        template = {"spec": {"containers": [{"name": "runner", "resources": {
            "requests": {"cpu": "1500m", "memory": "256Mi"}}}]}}  # fmt: skip
        await f.apply_scale_set(make_scale_set("warm", config_url=f.config_url, min_runners=2,
                                               nodePool=pool, template=template))  # fmt: skip
        await f.expect_runners("warm", idle=2, within=45)
        assert {p.spec.node_name for p in await f.pods("warm")} == {node}
        after = await wait_for(
            placeholders, lambda ps: sum(p.status.phase == "Pending" for p in ps) == 2,
            what="2 preempted placeholders Pending again", within=30,
        )  # fmt: skip
        assert sum(p.status.phase == "Running" for p in after) == 1
    finally:
        await f.remove_node_pools()
        f.node_pools.clear()
        await core.delete_node(node)
