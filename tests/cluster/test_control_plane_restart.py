"""`LocalCluster.restart`: kube-apiserver and etcd restarted in place (issue 12, scenario 2).

The session's control plane is shared by every test of a pytest run, so each test here ends,
whatever happened, by waiting until the apiserver answers /readyz again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from runnerfleet.localcluster import ClusterError, LocalCluster
from tests.support.kube import api_client, wait_for


@pytest.fixture
async def healthy_after(local_cluster: LocalCluster) -> AsyncIterator[LocalCluster]:
    """The session cluster, checked healthy (/readyz) when the test is over."""
    try:
        yield local_cluster
    finally:
        await wait_for(
            lambda: asyncio.to_thread(lambda: local_cluster.status().get("healthy")),
            bool, what="the session apiserver ready again after the restart test", within=90,
        )  # fmt: skip


def _pids(cluster: LocalCluster) -> dict[str, int]:
    return {c["name"]: c["pid"] for c in cluster.info.components}


async def _config_map(kubeconfig: Path, namespace: str, name: str) -> dict[str, str]:
    """Read through a fresh client: the restart closed every connection of the old ones."""
    async with api_client(kubeconfig) as fresh:
        got = await client.CoreV1Api(fresh).read_namespaced_config_map(name, namespace)
        return dict(got.data)


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
async def test_restart_keeps_ports_and_data_and_comes_back_ready(
    healthy_after: LocalCluster, kube: ApiClient, namespace: str, component: str
) -> None:
    cluster = healthy_after
    core = client.CoreV1Api(kube)
    await core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="before"), data={"kept": "yes"},
    ))  # fmt: skip
    server, pids = cluster.info.server, _pids(cluster)
    began = time.monotonic()

    took = await asyncio.to_thread(cluster.restart, component, down_for=1.0)

    assert time.monotonic() - began >= 1.0, "down_for: stays down that long"
    assert 1.0 <= took < 110, "the whole outage: stop, down_for, start, ready"
    after = _pids(cluster)
    assert after[component] != pids[component], "a new process"
    assert {k: v for k, v in after.items() if k != component} == {
        k: v for k, v in pids.items() if k != component
    }, "only that component restarted"
    assert cluster.info.server == server, "same port: clients' kubeconfigs stay valid"
    assert cluster.running_components()[component]
    status = await asyncio.to_thread(cluster.status)
    assert status["healthy"], "the apiserver answers /readyz (after etcd: it recovered itself)"
    assert await _config_map(cluster.kubeconfig, namespace, "before") == {"kept": "yes"}
    async with api_client(cluster.kubeconfig) as fresh:
        await client.CoreV1Api(fresh).create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="after"))
        )  # writes reach etcd again


async def test_restart_refuses_other_components(healthy_after: LocalCluster) -> None:
    with pytest.raises(ClusterError, match="only kube-apiserver, etcd can be restarted"):
        healthy_after.restart("kube-scheduler")
