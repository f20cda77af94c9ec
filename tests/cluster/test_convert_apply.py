"""`runnerfleet convert`'s output as the apiserver sees it: every manifest converted from the
ARC fixtures is accepted by a server-side apply with `dryRun=All` against our CRDs (schema,
CEL rules, defaults), and nothing is stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from runnerfleet import conventions as c
from runnerfleet.planning.convert import ConvertOptions, convert

ARC = Path(__file__).parents[1] / "unit" / "fixtures" / "arc"
FIXTURES = ("values-lossless.yaml", "values-lossy.yaml", "autoscalingrunnerset.yaml", "legacy.yaml")
PLURALS = {
    c.RUNNER_SCALE_SET_KIND: c.RUNNER_SCALE_SET_PLURAL,
    c.TEAM_LISTENER_KIND: c.TEAM_LISTENER_PLURAL,
    c.RUNNER_NODE_POOL_KIND: c.RUNNER_NODE_POOL_PLURAL,
}


async def _dry_apply(kube: ApiClient, doc: dict[str, Any]) -> dict[str, Any]:
    """`kubectl apply --server-side --dry-run=server`: the apiserver validates, stores nothing."""
    ns = doc["metadata"].get("namespace")
    where = f"/namespaces/{ns}" if ns else ""
    path = f"/apis/{c.API_VERSION}{where}/{PLURALS[doc['kind']]}/{doc['metadata']['name']}"
    resp = await kube.call_api(
        path, "PATCH",
        query_params=[("fieldManager", "convert-test"), ("dryRun", "All"), ("force", "true")],
        header_params={"Content-Type": "application/apply-patch+yaml",
                       "Accept": "application/json"},
        body=doc, auth_settings=["BearerToken"], _preload_content=False,
    )  # fmt: skip
    if not 200 <= resp.status <= 299:  # 201: a dry-run create
        err = ApiException(status=resp.status, reason=resp.reason)
        err.body = await resp.text()
        raise err
    result: dict[str, Any] = json.loads(await resp.read())
    return result


def _contains(stored: Any, sent: Any) -> bool:
    """What we sent is in what the apiserver returned (which adds the CRD's defaults)."""
    if isinstance(sent, dict):
        return isinstance(stored, dict) and all(
            k in stored and _contains(stored[k], v) for k, v in sent.items()
        )
    return bool(stored == sent)


def _converted(namespace: str) -> list[dict[str, Any]]:
    inputs = [(n, list(yaml.safe_load_all((ARC / n).read_text()))) for n in FIXTURES]
    manifests = convert(inputs, ConvertOptions(namespace=namespace, team="conv")).manifests
    # Pools are cluster-scoped: a per-test suffix keeps parallel runs apart.
    for m in manifests:
        if m["kind"] == c.RUNNER_NODE_POOL_KIND:
            m["metadata"]["name"] += f"-{namespace}"[-20:]
    return manifests


@pytest.mark.usefixtures("crds")
async def test_converted_manifests_pass_a_server_side_dry_run(
    kube: ApiClient, namespace: str
) -> None:
    manifests = _converted(namespace)
    kinds = {m["kind"] for m in manifests}
    assert kinds == set(PLURALS), kinds  # every kind the converter writes is exercised
    for doc in manifests:
        stored = await _dry_apply(kube, doc)
        assert stored["kind"] == doc["kind"]
        assert stored["metadata"]["name"] == doc["metadata"]["name"]
        assert _contains(stored["spec"], doc["spec"]), (doc["spec"], stored["spec"])
    listed = await client.CustomObjectsApi(kube).list_namespaced_custom_object(
        c.GROUP, c.VERSION, namespace, c.RUNNER_SCALE_SET_PLURAL
    )
    assert listed["items"] == []  # a dry run stores nothing


@pytest.mark.usefixtures("crds")
async def test_the_dry_run_does_validate(kube: ApiClient, namespace: str) -> None:
    """The same path refuses what the CRD refuses, so the test above proves something."""
    [doc] = [m for m in _converted(namespace) if m["metadata"]["name"] == "arc-linux"]
    doc["spec"]["containerMode"] = {"type": "dind", "workVolumeClaim": {"size": "1Gi"}}
    with pytest.raises(ApiException) as err:
        await _dry_apply(kube, doc)
    assert err.value.status == 422
    assert "spec.containerMode.workVolumeClaim" in str(err.value.body)
