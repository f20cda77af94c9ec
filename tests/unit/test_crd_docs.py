"""docs/reference/crds.md is generated from crds/*.yaml; the committed file must match and
name every spec field of every CRD."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_crd_docs", ROOT / "tools" / "gen_crd_docs.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def _crds() -> list[dict[str, Any]]:
    crds = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml"))]
    assert len(crds) >= 3
    return crds


def _field_paths(schema: dict[str, Any], path: str) -> list[str]:
    """Every field under `schema` as the reference writes it: `spec.a.b`, `spec.list[].c`."""
    out = []
    for name, prop in (schema.get("properties") or {}).items():
        child = f"{path}.{name}"
        out.append(child)
        out += _field_paths(prop, child)
        items = prop.get("items")
        if isinstance(items, dict):
            out += _field_paths(items, f"{child}[]")
    return out


def test_committed_reference_matches_the_crds() -> None:
    committed = (ROOT / "docs" / "reference" / "crds.md").read_text()
    assert committed == GEN.render_docs(ROOT / "crds"), (
        "docs/reference/crds.md drifted from crds/*.yaml: run `make docs`"
    )


def test_every_spec_field_of_every_crd_is_documented() -> None:
    text = (ROOT / "docs" / "reference" / "crds.md").read_text()
    for crd in _crds():
        kind = crd["spec"]["names"]["kind"]
        assert f"## {kind}\n" in text
        for version in crd["spec"]["versions"]:
            spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
            paths = _field_paths(spec, "spec")
            assert paths, kind
            missing = [p for p in paths if f"| `{p}` |" not in text]
            assert missing == [], f"{kind}: fields missing from the reference: {missing}"


def test_reference_shows_names_columns_and_validation() -> None:
    text = GEN.render_docs(ROOT / "crds")
    for crd in _crds():
        names = crd["spec"]["names"]
        for short in names.get("shortNames") or []:
            assert f"`{short}`" in text
        for column in crd["spec"]["versions"][0].get("additionalPrinterColumns") or []:
            assert f"`{column['jsonPath']}`" in text
        rules = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        for rule in rules.get("x-kubernetes-validations") or []:
            assert " ".join(rule["message"].split()) in text
    # A pattern with `|` stays inside its table cell.
    assert r"(ms\|s\|m\|h)" in text


def test_output_is_deterministic_and_links_resolve() -> None:
    first = GEN.render_docs(ROOT / "crds")
    assert first == GEN.render_docs(ROOT / "crds")
    anchors = re.findall(r'<a id="([^"]+)"></a>', first)
    assert len(anchors) == len(set(anchors))
    links = set(re.findall(r"\]\(#([^)]+)\)", first))
    assert links, "no section links"
    assert links <= set(anchors), f"links to missing anchors: {links - set(anchors)}"


def test_check_mode_names_the_file_and_the_make_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "crds.md"
    stale.write_text("old\n")
    monkeypatch.setattr(GEN, "DOCS", stale)
    assert GEN.main(["--check"]) == 1
    out = capsys.readouterr().out
    assert str(stale) in out
    assert "run `make docs`" in out
    stale.write_text(GEN.render_docs())
    assert GEN.main(["--check"]) == 0
