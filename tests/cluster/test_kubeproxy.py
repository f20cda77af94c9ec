"""The chaos proxy (tests/support/kubeproxy.py) against the real apiserver: it relays
requests and watches, expires a watch with 410 Gone, and answers 409 to status writes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from runnerfleet.localcluster import LocalCluster
from tests.support.kube import api_client, wait_for
from tests.support.kubeproxy import KubeProxy


@pytest.fixture
async def proxy(local_cluster: LocalCluster, tmp_path: Path) -> AsyncIterator[KubeProxy]:
    made = KubeProxy(local_cluster, tmp_path, seed=1)
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


async def _follow(core: client.CoreV1Api, namespace: str, seen: list[str]) -> None:
    w = watch.Watch()
    # timeout_seconds: kubernetes_asyncio then raises a 410 instead of silently re-watching.
    async for event in w.stream(core.list_namespaced_config_map, namespace, timeout_seconds=60):
        seen.append(f"{event['type']} {event['object'].metadata.name}")


async def test_proxy_relays_and_expires_watches_with_410(proxy: KubeProxy, namespace: str) -> None:
    async with api_client(proxy.kubeconfig) as api:
        core = client.CoreV1Api(api)
        seen: list[str] = []
        following = asyncio.create_task(_follow(core, namespace, seen))
        await wait_for(lambda: asyncio.sleep(0, proxy.counters.watches), bool,
                       what="the watch open through the proxy")  # fmt: skip
        await core.create_namespaced_config_map(
            namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="relayed"))
        )
        await wait_for(lambda: asyncio.sleep(0, seen), lambda s: "ADDED relayed" in s,
                       what="the event relayed")  # fmt: skip
        assert proxy.expire_watches() == 1
        with pytest.raises(ApiException) as gone:
            await asyncio.wait_for(following, 10)
        assert gone.value.status == 410
        assert proxy.counters.expired == 1


async def test_proxy_answers_conflict_to_status_writes_only(
    local_cluster: LocalCluster, tmp_path: Path, namespace: str
) -> None:
    proxy = KubeProxy(local_cluster, tmp_path, seed=1, conflict_share=1.0)
    await proxy.start()
    try:
        async with api_client(proxy.kubeconfig) as api:
            core = client.CoreV1Api(api)
            body: dict[str, Any] = {"metadata": {"labels": {"touched": "yes"}}}
            await core.patch_namespace(namespace, body)  # not a status write: forwarded
            with pytest.raises(ApiException) as conflict:
                await core.patch_namespace_status(namespace, {"status": {}})
            assert conflict.value.status == 409
            assert proxy.counters.conflicts == 1
            got = await core.read_namespace(namespace)
            assert got.metadata.labels["touched"] == "yes"
    finally:
        with contextlib.suppress(Exception):
            await proxy.stop()
