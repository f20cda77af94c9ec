"""Pinned versions agree with the Go wrapper modules, and missing binaries explain the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runnerfleet.localcluster import binaries
from runnerfleet.localcluster.binaries import BinaryPaths, MissingBinariesError

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _required(wrapper: str, module: str) -> str:
    text = (TOOLS / wrapper / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    assert match, f"{module} not required in tools/{wrapper}/go.mod"
    return match.group(1)


def test_python_pins_match_go_modules() -> None:
    assert _required("k8s", "k8s.io/kubernetes") == binaries.KUBERNETES_VERSION
    assert _required("etcd", "go.etcd.io/etcd/server/v3") == binaries.ETCD_VERSION
    assert _required("kwok", "sigs.k8s.io/kwok") == binaries.KWOK_VERSION
    assert _required("karpenter", "sigs.k8s.io/karpenter") == binaries.KARPENTER_VERSION
    assert _required("helm", "helm.sh/helm/v3") == binaries.HELM_VERSION


def test_karpenter_wrapper_builds_with_the_installed_go() -> None:
    """Karpenter releases after v1.14.1 ask for a newer Go than these machines carry; the
    wrapper's `go` line must not exceed what `.ci/run` checks for (go 1.26.8)."""
    text = (TOOLS / "karpenter" / "go.mod").read_text()
    match = re.search(r"^go (\S+)$", text, re.MULTILINE)
    assert match
    assert tuple(int(x) for x in match.group(1).split(".")) <= (1, 26, 8)


def test_staging_modules_are_replaced_at_the_matching_minor() -> None:
    text = (TOOLS / "k8s" / "go.mod").read_text()
    minor = binaries.KUBERNETES_VERSION.removeprefix("v1.")
    replaced = re.findall(r"^\s*(k8s\.io/\S+) => \1 (v\S+)$", text, re.MULTILINE)
    assert len(replaced) > 20
    assert {v for _, v in replaced} == {f"v0.{minor}"}


def test_missing_binaries_name_the_make_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNERFLEET_BIN_DIR", str(tmp_path))
    (tmp_path / "etcd").write_text("")  # present but not executable counts as missing
    with pytest.raises(MissingBinariesError, match="make cluster-binaries") as err:
        BinaryPaths.locate()
    assert "etcd" in str(err.value)
    assert "kube-apiserver" in str(err.value)


def test_missing_karpenter_names_its_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNERFLEET_BIN_DIR", str(tmp_path))
    for name in binaries.BINARIES:
        (tmp_path / name).write_text("")
        (tmp_path / name).chmod(0o755)
    BinaryPaths.locate()  # the control plane alone is complete
    with pytest.raises(MissingBinariesError, match="Karpenter's kwok provider is not built"):
        BinaryPaths.locate(karpenter=True)
