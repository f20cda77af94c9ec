"""Fixtures for end-to-end tests: a running fleet (operator + fake GitHub + sim runners)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from runnerfleet.localcluster import LocalCluster
from tests.support.fleet import Fleet, fleet


@pytest.fixture
async def running_fleet(
    local_cluster: LocalCluster, crds: list[str], kube: ApiClient, namespace: str, tmp_path: Path
) -> AsyncIterator[Fleet]:
    """Token credentials."""
    async with fleet(local_cluster, kube, namespace, tmp_path) as f:
        yield f


@pytest.fixture
async def app_fleet(
    local_cluster: LocalCluster, crds: list[str], kube: ApiClient, namespace: str, tmp_path: Path
) -> AsyncIterator[Fleet]:
    """GitHub App credentials (JWT -> installation token)."""
    async with fleet(local_cluster, kube, namespace, tmp_path, auth="app") as f:
        yield f
