"""Each control-plane component proves itself: apiserver + controller-manager + scheduler + kwok
run a Deployment, the garbage collector removes owned objects, and the scheduler honours taints.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from runnerfleet.localcluster import LocalCluster, NodeSpec
from tests.support.kube import api_client, temporary_namespace, wait_for

PAUSE = "registry.k8s.io/pause:3.10"


def _deployment(name: str, replicas: int) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="main", image=PAUSE)]),
            ),
        ),
    )


async def test_deployment_reaches_running_pods_on_kwok_nodes(
    kube: ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    await apps.create_namespaced_deployment(namespace, _deployment("web", 3))

    async def running() -> list[client.V1Pod]:
        pods = await core.list_namespaced_pod(namespace, label_selector="app=web")
        return [p for p in pods.items if p.status.phase == "Running"]

    pods = await wait_for(running, lambda ps: len(ps) == 3, what="3 Running pods of Deployment web")
    nodes = {p.spec.node_name for p in pods}
    assert all(n and n.startswith("session-node-") for n in nodes), nodes
    await wait_for(
        lambda: apps.read_namespaced_deployment_status("web", namespace),
        lambda d: d.status.ready_replicas == 3,
        what="Deployment web to report 3 ready replicas",
    )


async def test_garbage_collector_deletes_owned_configmap(kube: ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube)
    owner = await core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    ref = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    await core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owned", owner_references=[ref])),
    )
    await core.delete_namespaced_config_map("owner", namespace)

    async def owned_exists() -> bool:
        try:
            await core.read_namespaced_config_map("owned", namespace)
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    await wait_for(owned_exists, lambda exists: not exists, what="GC to delete ConfigMap owned")


@pytest.fixture
def tainted_cluster(tmp_path: Path, local_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """A second cluster, side by side with the session one, whose every node is tainted."""
    second = LocalCluster(tmp_path / "tainted")
    taint = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    try:
        second.up([NodeSpec(count=2, prefix="tainted", taints=(taint,))])
        yield second
    finally:
        second.down()


async def test_scheduler_keeps_pod_pending_when_every_node_is_tainted(
    tainted_cluster: LocalCluster, local_cluster: LocalCluster
) -> None:
    # Two clusters run at once on distinct ports.
    assert tainted_cluster.info.ports["apiserver"] != local_cluster.info.ports["apiserver"]
    assert local_cluster.status()["healthy"]
    async with api_client(tainted_cluster.kubeconfig) as api, temporary_namespace(api) as ns:
        core = client.CoreV1Api(api)
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name="no-toleration"),
            spec=client.V1PodSpec(containers=[client.V1Container(name="main", image=PAUSE)]),
        )
        await core.create_namespaced_pod(ns, pod)

        def unschedulable(p: client.V1Pod) -> bool:
            conds = {c.type: c for c in p.status.conditions or []}
            sched = conds.get("PodScheduled")
            return sched is not None and sched.status == "False" and sched.reason == "Unschedulable"

        seen = await wait_for(
            lambda: core.read_namespaced_pod("no-toleration", ns),
            unschedulable,
            what="the scheduler to mark the pod Unschedulable",
        )
        assert seen.status.phase == "Pending"
        assert seen.spec.node_name is None
        message = next(c.message for c in seen.status.conditions if c.type == "PodScheduled")
        assert "0/2 nodes are available" in message
        assert "untolerated taint" in message

        # Control: the same pod with the toleration is scheduled and runs on a tainted node.
        tolerating = client.V1Pod(
            metadata=client.V1ObjectMeta(name="tolerates"),
            spec=client.V1PodSpec(
                containers=[client.V1Container(name="main", image=PAUSE)],
                tolerations=[
                    client.V1Toleration(
                        key="dedicated", operator="Equal", value="gpu", effect="NoSchedule"
                    )
                ],
            ),
        )
        await core.create_namespaced_pod(ns, tolerating)
        running = await wait_for(
            lambda: core.read_namespaced_pod("tolerates", ns),
            lambda p: p.status.phase == "Running",
            what="the tolerating pod to run",
        )
        assert running.spec.node_name.startswith("tainted-")
