"""tools/release/release.py's pure parts: versions agree, the digest is found and checked,
the chart archive is reproducible, install.yaml puts the Namespace between the CRDs and the
objects that live in it, and SHA256SUMS is `sha256sum -c` input. The chart's `image.digest`
and the listener image the operator passes on (tests/cluster/test_release.py renders and
applies the real artifacts)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import tarfile
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from runnerfleet.services import team_listener

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("release", ROOT / "tools/release/release.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


release = _load()


def test_chart_version_and_app_version_are_the_package_version() -> None:
    version = release.project_version((ROOT / "pyproject.toml").read_text())
    chart = (ROOT / "charts/runnerfleet/Chart.yaml").read_text()
    assert release.version_problems(version, chart) == []


def test_a_chart_behind_the_package_is_named() -> None:
    problems = release.version_problems("0.2.0", "version: 0.2.0\nappVersion: '0.1.0'\n")
    assert problems == ["Chart.yaml appVersion is '0.1.0', pyproject.toml's version is '0.2.0'"]


def test_digest_comes_from_the_argument_then_the_file(tmp_path: Path) -> None:
    file = tmp_path / "image.digest"
    assert release.resolve_digest(None, file) == (None, "none (the image tag)")
    file.write_text("sha256:" + "cd" * 32 + "\n")
    assert release.resolve_digest(None, file) == ("sha256:" + "cd" * 32, str(file))
    assert release.resolve_digest(DIGEST, file) == (DIGEST, "IMAGE_DIGEST")


@pytest.mark.parametrize("bad", ["sha256:abc", "ab" * 32, "sha512:" + "ab" * 32,
                                 "sha256:" + "AB" * 32])  # fmt: skip
def test_a_malformed_digest_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(release.ReleaseError, match="want sha256:<64 hex>"):
        release.resolve_digest(bad, tmp_path / "none")


def _archive(files: dict[str, bytes], mtime: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.uid, info.mode = len(body), mtime, 1000, 0o600
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


def test_chart_archive_bytes_depend_on_contents_only() -> None:
    files = {"runnerfleet/Chart.yaml": b"name: runnerfleet\n", "runnerfleet/values.yaml": b"a: 1\n"}
    first, later = _archive(files, 1_700_000_000), _archive(files, 1_800_000_000)
    assert first != later
    assert release.normalise_tgz(first, 0) == release.normalise_tgz(later, 0)
    with tarfile.open(fileobj=io.BytesIO(release.normalise_tgz(first, 5)), mode="r:gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == list(files)  # helm's order kept
        assert {(m.mtime, m.uid, m.mode) for m in members} == {(5, 0, 0o644)}
        bodies = [tar.extractfile(m) for m in members]
        assert [b.read() if b else None for b in bodies] == list(files.values())


RENDERED = """---
# Source: runnerfleet/crds/a.yaml
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: as.runnerfleet.dev}
---
# Source: runnerfleet/templates/serviceaccount.yaml
apiVersion: v1
kind: ServiceAccount
metadata: {name: runnerfleet, namespace: runnerfleet-system}
"""


def test_install_yaml_creates_the_namespace_after_the_crds_before_its_objects() -> None:
    text = release.install_yaml(RENDERED, "runnerfleet-system", "0.1.0", "img@" + DIGEST)
    assert text.startswith("# runnerfleet 0.1.0: CRDs and the operator in namespace")
    assert f"# Image: img@{DIGEST}\n" in text
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert [d["kind"] for d in docs] == ["CustomResourceDefinition", "Namespace", "ServiceAccount"]
    assert docs[1]["metadata"]["name"] == "runnerfleet-system"


def test_install_yaml_needs_rendered_templates() -> None:
    with pytest.raises(release.ReleaseError, match="no templates"):
        release.install_yaml(RENDERED.split("---\n# Source: runnerfleet/templates")[0], "ns",
                             "0.1.0", "img")  # fmt: skip


def test_sha256sums_is_sha256sum_format(tmp_path: Path) -> None:
    (tmp_path / "install.yaml").write_text("kind: x\n")
    expected = hashlib.sha256(b"kind: x\n").hexdigest()
    assert release.sha256sums([tmp_path / "install.yaml"]) == f"{expected}  install.yaml\n"


def test_listener_image_is_the_operators_reference_verbatim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The chart sets RUNNERFLEET_IMAGE to the operator's own reference, by digest if pinned.
    monkeypatch.setenv("RUNNERFLEET_IMAGE", f"ghcr.io/runnerfleet/runnerfleet@{DIGEST}")
    assert team_listener.listener_image() == f"ghcr.io/runnerfleet/runnerfleet@{DIGEST}"
