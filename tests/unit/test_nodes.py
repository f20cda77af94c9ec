"""Fake-node options and manifests (pure)."""

from __future__ import annotations

import pytest

from runnerfleet.localcluster import NodeSpec, parse_taint
from runnerfleet.localcluster.nodes import KWOK_ANNOTATION, parse_label


@pytest.mark.parametrize(
    ("text", "taint"),
    [
        ("dedicated=gpu:NoSchedule", {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}),
        ("team-a:NoExecute", {"key": "team-a", "effect": "NoExecute"}),
        (
            "runnerfleet.dev/pool=x:PreferNoSchedule",
            {"key": "runnerfleet.dev/pool", "value": "x", "effect": "PreferNoSchedule"},
        ),
    ],
)
def test_parse_taint(text: str, taint: dict[str, str]) -> None:
    assert parse_taint(text) == taint


@pytest.mark.parametrize("text", ["gpu", "gpu=yes", "gpu=yes:Sometimes", ":NoSchedule"])
def test_parse_taint_rejects_with_the_input_named(text: str) -> None:
    with pytest.raises(ValueError, match="taint"):
        parse_taint(text)


def test_parse_label() -> None:
    assert parse_label("pool=gpu") == ("pool", "gpu")
    with pytest.raises(ValueError, match="'pool'"):
        parse_label("pool")


def test_node_manifests_are_kwok_managed_and_carry_labels_and_taints() -> None:
    taint = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    spec = NodeSpec(count=2, prefix="gpu", labels={"pool": "gpu"}, taints=(taint,), cpu="8")
    manifests = spec.manifests()
    assert [m["metadata"]["name"] for m in manifests] == ["gpu-0", "gpu-1"]
    first = manifests[0]
    assert first["metadata"]["annotations"][KWOK_ANNOTATION] == "fake"
    assert first["metadata"]["labels"]["pool"] == "gpu"
    assert first["metadata"]["labels"]["kubernetes.io/hostname"] == "gpu-0"
    assert first["spec"]["taints"] == [taint]
    assert first["status"]["allocatable"]["cpu"] == "8"
    # Manifests do not share mutable taint dicts with the spec.
    first["spec"]["taints"][0]["effect"] = "NoExecute"
    assert spec.taints[0]["effect"] == "NoSchedule"
