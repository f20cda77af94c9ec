"""Shared pytest wiring: markers by directory, and the local control plane for cluster tests.

The control plane starts once per test session. If it cannot start, every cluster test fails
with the reason: nothing here ever skips because the cluster is missing.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from runnerfleet.localcluster import ClusterError, LocalCluster, NodeSpec
from tests.support.kube import api_client, temporary_namespace

_MARK_BY_DIR = {
    "unit": pytest.mark.unit,
    "cluster": pytest.mark.cluster,
    "e2e": pytest.mark.e2e,
    "image": pytest.mark.image,
}
SESSION_NODES = 3
# Operators started by tests sweep GitHub's runner list sooner than production's 5 s / 60 s,
# so a test sees a runner online within about a second (operator subprocesses inherit this).
os.environ.setdefault("RUNNERFLEET_SWEEP_MIN_SECONDS", "1")
os.environ.setdefault("RUNNERFLEET_SWEEP_MAX_SECONDS", "10")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        room = Path(str(item.fspath)).parent.name
        if room in _MARK_BY_DIR:
            item.add_marker(_MARK_BY_DIR[room])


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One real control plane for the whole session, with SESSION_NODES untainted kwok nodes."""
    cluster = LocalCluster(tmp_path_factory.mktemp("rf") / "cluster")
    try:
        cluster.up([NodeSpec(count=SESSION_NODES, prefix="session-node")])
    except ClusterError as err:
        cluster.down()
        pytest.fail(f"the local control plane could not start: {err}", pytrace=False)
    yield cluster
    cluster.down()


@pytest.fixture
async def kube(local_cluster: LocalCluster) -> AsyncIterator[ApiClient]:
    """An async Kubernetes client for the session cluster (admin credentials)."""
    async with api_client(local_cluster.kubeconfig) as client:
        yield client


@pytest.fixture
async def namespace(kube: ApiClient) -> AsyncIterator[str]:
    """A fresh namespace per test, with its default ServiceAccount present; deleted afterwards."""
    async with temporary_namespace(kube) as name:
        yield name


CRDS = Path(__file__).resolve().parents[1] / "crds"


@pytest.fixture(scope="session")
def crds(local_cluster: LocalCluster) -> list[str]:
    """runnerfleet's CRDs applied (server-side) to the session cluster and Established."""
    return local_cluster.apply_crds(CRDS)
