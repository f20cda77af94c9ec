"""CRDs are generated from the models; the committed YAML must match (no drift)."""

from __future__ import annotations

from pathlib import Path

from runnerfleet.builders.crds import ALL_KINDS, build_crd, render_crd_yaml

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_committed_crds_match_the_models() -> None:
    for kind in ALL_KINDS:
        path = CRDS / f"{kind.plural}.runnerfleet.dev.yaml"
        assert path.read_text() == render_crd_yaml(kind), f"{path} drifted: run `make crds`"


def _walk(node: object, path: str = "") -> list[str]:
    problems = []
    if isinstance(node, dict):
        for bad in ("$ref", "anyOf", "title", "$defs"):
            if bad in node:
                problems.append(f"{path}: {bad}")
        if node.get("additionalProperties") is False:
            problems.append(f"{path}: additionalProperties false")
        for key, value in node.items():
            problems += _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            problems += _walk(value, f"{path}[{i}]")
    return problems


def test_schemas_are_structural() -> None:
    for kind in ALL_KINDS:
        schema = build_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert _walk(schema) == []
        assert schema["properties"]["status"]["properties"]["kopf"]["type"] == "object"


def test_scale_set_schema_specifics() -> None:
    for kind in ALL_KINDS[:1]:
        schema = build_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        spec = schema["properties"]["spec"]
        assert spec["properties"]["template"]["x-kubernetes-preserve-unknown-fields"] is True
        assert schema["properties"]["status"]["properties"]["demand"]["type"] == "object"
