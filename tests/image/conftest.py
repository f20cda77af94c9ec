"""Fixtures for the image smoke test (`make test-image`): the built image unpacked once per
session, and a fleet whose operator and listeners run from it (tests/support/image.py)."""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from runnerfleet.localcluster import LocalCluster
from tests.support.fleet import Fleet, fleet
from tests.support.image import ROOT, ImageRoot, unpack_image


@pytest.fixture(scope="session")
def version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        value: str = tomllib.load(f)["project"]["version"]
    return value


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory, version: str) -> ImageRoot:
    """dist/image:<version> (`make image`) unpacked; fails if it or umoci is missing."""
    return unpack_image(tmp_path_factory.mktemp("image"), version)


@pytest.fixture
async def image_fleet(
    image: ImageRoot,
    local_cluster: LocalCluster,
    crds: list[str],
    kube: ApiClient,
    namespace: str,
    tmp_path: Path,
) -> AsyncIterator[Fleet]:
    """The e2e harness with the operator and the listener pods' processes from the image."""
    async with fleet(local_cluster, kube, namespace, tmp_path, launch=image.launch) as f:
        yield f
