"""The generated CRDs are accepted by the apiserver and their rules reject bad input (422)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from runnerfleet import conventions as c
from tests.support.factories import make_node_pool, make_scale_set, make_team_listener


async def _create(kube: ApiClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    api = client.CustomObjectsApi(kube)
    result: dict[str, Any] = await api.create_namespaced_custom_object(
        c.GROUP, c.VERSION, namespace, c.RUNNER_SCALE_SET_PLURAL, body
    )
    return result


async def _rejected(kube: ApiClient, namespace: str, body: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as err:
        await _create(kube, namespace, body)
    assert err.value.status == 422, err.value.body
    return str(err.value.body)


@pytest.mark.usefixtures("crds")
async def test_min_above_max_is_rejected_naming_the_field(kube: ApiClient, namespace: str) -> None:
    body = await _rejected(kube, namespace, make_scale_set(min_runners=5, max_runners=2))
    assert "spec.minRunners" in body
    assert "less than or equal to spec.maxRunners" in body


@pytest.mark.usefixtures("crds")
@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"labels": []}, "spec.labels"),
        ({"labels": ["linux", "linux"]}, "spec.labels"),
        ({"config_url": "github.com/acme"}, "spec.github.configUrl"),
        ({"config_url": "https://github.com/"}, "spec.github.configUrl"),
        ({"min_runners": -1}, "spec.minRunners"),
        ({"registrationTimeout": "five minutes"}, "spec.registrationTimeout"),
        ({"registrationTimeout": "250ms"}, "spec.registrationTimeout must be at least 1s"),
        ({"maxRunnerAge": "30s"}, "spec.maxRunnerAge must be at least 1m"),
        (
            {
                "github": {
                    "configUrl": "https://github.com/acme",
                    "secretRef": {"name": "s"},
                    "runnerGroup": "x" * 300,
                }
            },
            "spec.github.runnerGroup",
        ),
    ],
)
async def test_bad_fields_are_rejected_by_name(
    kube: ApiClient, namespace: str, override: dict[str, Any], field: str
) -> None:
    body = await _rejected(kube, namespace, make_scale_set(**override))
    assert field in body


@pytest.mark.usefixtures("crds")
async def test_the_shortest_durations_allowed_are_accepted(kube: ApiClient, namespace: str) -> None:
    created = await _create(kube, namespace, make_scale_set(
        registrationTimeout="1s", maxRunnerAge="1m", scaleDownDelay="0s"))  # fmt: skip
    assert created["spec"]["maxRunnerAge"] == "1m"


@pytest.mark.usefixtures("crds")
async def test_defaults_are_applied_by_the_apiserver(kube: ApiClient, namespace: str) -> None:
    created = await _create(kube, namespace, make_scale_set(min_runners=1))
    spec = created["spec"]
    assert spec["github"]["runnerGroup"] == "Default"
    assert spec["registrationTimeout"] == "5m"
    assert spec["suspend"] is False


@pytest.mark.usefixtures("crds")
async def test_overlong_name_is_rejected(kube: ApiClient, namespace: str) -> None:
    body = await _rejected(kube, namespace, make_scale_set(name="x" * 41))
    assert "metadata.name must be at most 40 characters" in body


async def _create_tl(kube: ApiClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    api = client.CustomObjectsApi(kube)
    result: dict[str, Any] = await api.create_namespaced_custom_object(
        c.GROUP, c.VERSION, namespace, c.TEAM_LISTENER_PLURAL, body
    )
    return result


@pytest.mark.usefixtures("crds")
@pytest.mark.parametrize(
    ("override", "field", "text"),
    [
        ({"repositories": []}, "spec.repositories", "either names or all"),
        (
            {"repositories": ["app"], "webhook": {"enabled": True}},
            "spec.webhook.secretRef",
            "required when spec.webhook.enabled",
        ),
        ({"team": "Team A"}, "spec.team", "should match"),
        ({"pollInterval": "soon"}, "spec.pollInterval", "should match"),
    ],
)
async def test_team_listener_rules(
    kube: ApiClient, namespace: str, override: dict[str, Any], field: str, text: str
) -> None:
    with pytest.raises(ApiException) as err:
        await _create_tl(kube, namespace, make_team_listener(**override))
    assert err.value.status == 422
    assert field in str(err.value.body)
    assert text in str(err.value.body)


@pytest.mark.usefixtures("crds")
async def test_team_listener_defaults(kube: ApiClient, namespace: str) -> None:
    created = await _create_tl(kube, namespace, make_team_listener())
    assert created["spec"]["pollInterval"] == "15s"
    assert created["spec"]["repositories"]["all"] is False


async def _create_pool(kube: ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    api = client.CustomObjectsApi(kube)
    result: dict[str, Any] = await api.create_cluster_custom_object(
        c.GROUP, c.VERSION, c.RUNNER_NODE_POOL_PLURAL, body
    )
    await api.delete_cluster_custom_object(
        c.GROUP, c.VERSION, c.RUNNER_NODE_POOL_PLURAL, body["metadata"]["name"]
    )
    return result


@pytest.mark.usefixtures("crds")
@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"requirements": [{"key": "k", "operator": "In"}]}, "spec.requirements"),
        ({"requirements": [{"key": "k", "operator": "Exists", "values": ["x"]}]},
         "spec.requirements"),
        ({"requirements": [{"key": "k", "operator": "Near", "values": ["x"]}]},
         "spec.requirements[0].operator"),
        ({"capacityTypes": ["cheap"]}, "spec.capacityTypes[0]"),
        ({"capacityTypes": []}, "spec.capacityTypes"),
        ({"disruption": {"consolidationPolicy": "Sometimes"}},
         "spec.disruption.consolidationPolicy"),
        ({"disruption": {"consolidateAfter": "soon"}}, "spec.disruption.consolidateAfter"),
        ({"limits": {"cpu": "lots"}}, "spec.limits.cpu"),
        ({"static": {"nodeSelector": {}}}, "spec.static.nodeSelector"),
    ],
)  # fmt: skip
async def test_node_pool_rules_name_the_field(
    kube: ApiClient, spec: dict[str, Any], field: str
) -> None:
    body = make_node_pool(f"bad-{uuid.uuid4().hex[:6]}", **spec)
    with pytest.raises(ApiException) as err:
        await _create_pool(kube, body)
    assert err.value.status == 422, err.value.body
    assert field in str(err.value.body)


@pytest.mark.usefixtures("crds")
async def test_node_pool_defaults(kube: ApiClient) -> None:
    created = await _create_pool(kube, make_node_pool(f"ok-{uuid.uuid4().hex[:6]}"))
    spec = created["spec"]
    assert spec["capacityTypes"] == ["on-demand"]
    assert spec["disruption"]["consolidationPolicy"] == "WhenEmpty"
    assert spec["disruption"]["consolidateAfter"] == "1m"
    assert spec["expireAfter"] == "720h"
