"""The CRD's containerMode rules, as the apiserver applies them: a field of one mode set with
the other is a 422 naming it; an unknown mode is refused; a valid one is stored as sent."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from runnerfleet import conventions as c
from tests.support.factories import make_scale_set


async def _create(kube: ApiClient, namespace: str, mode: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await client.CustomObjectsApi(kube).create_namespaced_custom_object(
        c.GROUP, c.VERSION, namespace, c.RUNNER_SCALE_SET_PLURAL,
        make_scale_set("s", containerMode=mode),
    )  # fmt: skip
    return result


@pytest.mark.usefixtures("crds")
@pytest.mark.parametrize(
    ("mode", "field"),
    [
        (
            {"type": "dind", "workVolumeClaim": {"size": "1Gi"}},
            "spec.containerMode.workVolumeClaim",
        ),
        ({"type": "dind", "requireJobContainer": False}, "spec.containerMode.requireJobContainer"),
        ({"type": "kubernetes", "dindImage": "docker:27-dind"}, "spec.containerMode.dindImage"),
        ({"type": "podman"}, "spec.containerMode.type"),
        ({"type": "kubernetes", "workVolumeClaim": {"size": "lots"}}, "workVolumeClaim.size"),
    ],
)
async def test_a_field_of_the_other_mode_is_refused_naming_it(
    kube: ApiClient, namespace: str, mode: dict[str, Any], field: str
) -> None:
    with pytest.raises(ApiException) as err:
        await _create(kube, namespace, mode)
    assert err.value.status == 422, err.value.body
    assert field in str(err.value.body)


@pytest.mark.usefixtures("crds")
async def test_kubernetes_mode_defaults_its_claim(kube: ApiClient, namespace: str) -> None:
    stored = await _create(kube, namespace, {"type": "kubernetes", "workVolumeClaim": {}})
    claim = stored["spec"]["containerMode"]["workVolumeClaim"]
    assert claim == {"size": "1Gi", "accessModes": ["ReadWriteOnce"]}
