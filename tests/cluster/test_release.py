"""The release artifacts `make release` writes, checked by the apiserver: install.yaml applied
server-side brings up the CRDs (Established) and the operator Deployment (Available on the
kwok nodes), the packaged .tgz installs and upgrades with helm, and a pinned image reaches the
operator container and the RUNNERFLEET_IMAGE it gives every listener as `repository@digest`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from runnerfleet import conventions as c
from runnerfleet.localcluster import LocalCluster
from runnerfleet.localcluster.binaries import helm_binary

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "5e" * 32
REPOSITORY = c.DEFAULT_OPERATOR_IMAGE.rpartition(":")[0]
NAMESPACE = "runnerfleet-system"  # install.yaml's fixed namespace


@dataclass(frozen=True)
class Built:
    tagged: Path  # dist/ without a digest: the image by tag
    pinned: Path  # dist/ built with --image-digest DIGEST

    def tgz(self) -> Path:
        return next(self.tagged.glob("runnerfleet-*.tgz"))


def _release(out: Path, *args: str) -> Path:
    done = subprocess.run([sys.executable, str(ROOT / "tools/release/release.py"), "--out",
                           str(out), *args], capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("release")
    return Built(_release(base / "tagged"), _release(base / "pinned", "--image-digest", DIGEST))


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _operator(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def _env(container: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container["env"]}


def helm(cluster: LocalCluster, *args: str) -> str:
    done = subprocess.run([str(helm_binary()), "--kubeconfig", str(cluster.kubeconfig), *args],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, f"helm {' '.join(args)}: {done.stderr}"
    return done.stdout


def test_checksums_match_and_only_the_image_differs_when_pinned(built: Built) -> None:
    for dist in (built.tagged, built.pinned):
        check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=dist, capture_output=True,
                               text=True, check=False)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
        assert sorted(check.stdout.split()) == sorted(
            ["install.yaml:", "OK", f"{built.tgz().name}:", "OK"]
        )
    # The chart archive does not depend on the digest (helm installs pin with --set).
    assert (built.tagged / built.tgz().name).read_bytes() == (
        built.pinned / built.tgz().name
    ).read_bytes()
    tagged = (built.tagged / "install.yaml").read_text()
    pinned = (built.pinned / "install.yaml").read_text()
    assert pinned == tagged.replace(c.DEFAULT_OPERATOR_IMAGE, f"{REPOSITORY}@{DIGEST}")
    assert c.DEFAULT_OPERATOR_IMAGE in tagged


def test_pinned_install_yaml_applies_server_side_and_brings_up_crds_and_operator(
    local_cluster: LocalCluster, built: Built
) -> None:
    manifest = built.pinned / "install.yaml"
    docs = _docs(manifest.read_text())
    assert [d["kind"] for d in docs[:4]] == ["CustomResourceDefinition"] * 3 + ["Namespace"]
    crds = [f"crd/{d['metadata']['name']}" for d in docs if d["kind"] == "CustomResourceDefinition"]
    try:
        out = local_cluster.kubectl("apply", "--server-side", "-f", str(manifest))
        assert f"namespace/{NAMESPACE} serverside-applied" in out
        assert "deployment.apps/runnerfleet serverside-applied" in out
        local_cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s", *crds)
        local_cluster.kubectl("-n", NAMESPACE, "wait", "--for=condition=Available",
                              "--timeout=90s", "deployment/runnerfleet")  # fmt: skip
        live = json.loads(local_cluster.kubectl("-n", NAMESPACE, "get", "deployment",
                                                "runnerfleet", "-o", "json"))  # fmt: skip
        pod = live["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["image"] == f"{REPOSITORY}@{DIGEST}"
        assert _env(container)["RUNNERFLEET_IMAGE"] == f"{REPOSITORY}@{DIGEST}"
        local_cluster.kubectl("-n", NAMESPACE, "get", "serviceaccount", pod["serviceAccountName"])
        # Applied again: nothing changes (no field the apiserver defaults differently).
        again = local_cluster.kubectl("apply", "--server-side", "-f", str(manifest))
        after = json.loads(local_cluster.kubectl("-n", NAMESPACE, "get", "deployment",
                                                 "runnerfleet", "-o", "json"))  # fmt: skip
        assert "deployment.apps/runnerfleet serverside-applied" in again
        assert after["metadata"]["generation"] == live["metadata"]["generation"]
    finally:
        # Everything but the CRDs: the session's other tests use them.
        rest = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
        local_cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-",
                              stdin=yaml.safe_dump_all(rest))  # fmt: skip


def test_packaged_chart_installs_by_tag_then_upgrades_to_the_digest(
    local_cluster: LocalCluster, built: Built
) -> None:
    namespace, release = f"rf-{uuid.uuid4().hex[:6]}", f"rel{uuid.uuid4().hex[:6]}"
    deployment = ("-n", namespace, "get", "deployment", f"{release}-runnerfleet", "-o", "json")
    try:
        helm(local_cluster, "install", release, str(built.tgz()), "-n", namespace,
             "--create-namespace", "--set", "replicaCount=1")  # fmt: skip
        first = _operator([json.loads(local_cluster.kubectl(*deployment))])
        assert first["image"] == c.DEFAULT_OPERATOR_IMAGE
        assert _env(first)["RUNNERFLEET_IMAGE"] == c.DEFAULT_OPERATOR_IMAGE

        helm(local_cluster, "upgrade", release, str(built.tgz()), "-n", namespace,
             "--reuse-values", "--set", f"image.digest={DIGEST}")  # fmt: skip
        pinned = _operator([json.loads(local_cluster.kubectl(*deployment))])
        assert pinned["image"] == f"{REPOSITORY}@{DIGEST}"
        assert _env(pinned)["RUNNERFLEET_IMAGE"] == f"{REPOSITORY}@{DIGEST}"
        status = json.loads(helm(local_cluster, "status", release, "-n", namespace, "-o", "json"))
        assert (status["info"]["status"], status["version"]) == ("deployed", 2)
    finally:
        subprocess.run([str(helm_binary()), "--kubeconfig", str(local_cluster.kubeconfig),
                        "uninstall", release, "-n", namespace, "--wait=false"],
                       capture_output=True, timeout=60, check=False)  # fmt: skip
        local_cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found",
                              "--wait=false")  # fmt: skip


@pytest.mark.parametrize("bad", ["sha256:abc", "5e" * 32, "latest"])
def test_packaged_chart_refuses_a_malformed_digest_by_name(built: Built, bad: str) -> None:
    done = subprocess.run([str(helm_binary()), "template", "x", str(built.tgz()), "--set",
                           f"image.digest={bad}"], capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    assert done.returncode != 0
    assert "/image/digest" in done.stderr
