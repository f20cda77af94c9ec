"""Every example applies server-side and reconciles to Ready, and what the operator and the
listeners write never shows as drift to a GitOps tool: no manager but the applier owns spec."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from runnerfleet import conventions as c
from runnerfleet.localcluster import LocalCluster, NodeSpec
from tests.support.fleet import Fleet
from tests.support.kube import wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TEAMS = sorted((EXAMPLES / "teams").glob("*/team.yaml"))
APPLIER = "gitops"  # the field manager a GitOps tool would use


def _docs(path: Path, config_url: str) -> list[dict[str, Any]]:
    text = path.read_text().replace("https://github.com/acme", config_url)
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture
async def pool_nodes(local_cluster: LocalCluster, running_fleet: Fleet) -> AsyncIterator[None]:
    """One node per static pool selector in examples/nodepools.yaml."""
    names: list[str] = []
    for pool in _docs(EXAMPLES / "nodepools.yaml", ""):
        labels = pool["spec"]["static"]["nodeSelector"]
        names += local_cluster.add_nodes(NodeSpec(
            count=1, prefix=f"ex-{pool['metadata']['name']}-{running_fleet.namespace}",
            labels=labels,
        ))  # fmt: skip
    yield
    core = client.CoreV1Api(running_fleet.kube)
    for name in names:
        await core.delete_node(name)


async def _apply(f: Fleet, doc: dict[str, Any], namespace: str | None) -> None:
    """Server-side apply, as `kubectl apply --server-side --field-manager=gitops` does."""
    kind = doc["kind"]
    plural = {"RunnerScaleSet": c.RUNNER_SCALE_SET_PLURAL, "TeamListener": c.TEAM_LISTENER_PLURAL,
              "RunnerNodePool": c.RUNNER_NODE_POOL_PLURAL}[kind]  # fmt: skip
    where = f"/namespaces/{namespace}" if namespace else ""
    path = f"/apis/{c.API_VERSION}{where}/{plural}/{doc['metadata']['name']}"
    await f.kube.call_api(
        path, "PATCH", query_params=[("fieldManager", APPLIER), ("force", "true")],
        header_params={"Content-Type": "application/apply-patch+yaml"}, body=doc,
        auth_settings=["BearerToken"],
    )  # fmt: skip


def _ready(obj: dict[str, Any] | None) -> bool:
    return any(
        cond["type"] == "Ready" and cond["status"] == "True"
        for cond in ((obj or {}).get("status") or {}).get("conditions") or []
    )


def _spec_owners(obj: dict[str, Any]) -> dict[str, set[str]]:
    """Field manager -> top-level keys of `spec` it owns."""
    owners: dict[str, set[str]] = {}
    for entry in obj["metadata"].get("managedFields") or []:
        spec = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if spec:
            owners.setdefault(entry["manager"], set()).update(spec)
    return owners


@pytest.mark.usefixtures("pool_nodes")
async def test_every_example_applies_server_side_and_reconciles_to_ready(
    running_fleet: Fleet,
) -> None:
    f = running_fleet
    await client.CoreV1Api(f.kube).create_namespaced_secret(f.namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="github-webhook"),
        data={"github_webhook_secret": base64.b64encode(b"example").decode()},
    ))  # fmt: skip
    pools = _docs(EXAMPLES / "nodepools.yaml", f.config_url)
    for pool in pools:
        await _apply(f, pool, None)
        f.node_pools.append(pool["metadata"]["name"])  # removed at teardown
    objects: list[tuple[str, str]] = []
    for team in TEAMS:
        for doc in _docs(team, f.config_url):
            await _apply(f, doc, f.namespace)
            objects.append((doc["kind"], doc["metadata"]["name"]))
    assert {k for k, _ in objects} == {"TeamListener", "RunnerScaleSet"}
    assert len(TEAMS) == 3

    for pool in pools:
        name = pool["metadata"]["name"]
        await wait_for(lambda n=name: f.node_pool(n), _ready, what=f"pool {name} Ready",  # type: ignore[misc]
                       within=30)  # fmt: skip
    read = {"RunnerScaleSet": f.scale_set, "TeamListener": f.team_listener}
    for kind, name in objects:
        await wait_for(lambda k=kind, n=name: read[k](n), _ready,  # type: ignore[misc]
                       what=f"{kind} {name} Ready", within=60)  # fmt: skip

    # GitOps: after the operator and the listeners have written status (demand included),
    # only the applier owns anything under spec, so nothing shows as drift.
    for kind, name in objects:
        obj = await read[kind](name)
        owners = _spec_owners(obj)
        assert set(owners) == {APPLIER}, (kind, name, owners)
    api = client.CustomObjectsApi(f.kube)
    for pool in pools:
        obj = await api.get_cluster_custom_object(
            c.GROUP, c.VERSION, c.RUNNER_NODE_POOL_PLURAL, pool["metadata"]["name"]
        )
        assert set(_spec_owners(obj)) == {APPLIER}
