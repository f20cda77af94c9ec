"""A release pinned by digest runs its listeners by that digest too: the operator, started with
the RUNNERFLEET_IMAGE that `make release IMAGE_DIGEST=...`'s install.yaml gives its container,
renders every TeamListener Deployment with the operator's own `repository@digest`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from runnerfleet import conventions as c
from tests.support.factories import make_team_listener
from tests.support.fleet import Fleet
from tests.support.kube import wait_for

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "7a" * 32


@pytest.fixture(autouse=True)
def pinned_image(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The operator's RUNNERFLEET_IMAGE from the pinned install.yaml, in the environment the
    fleet's operator process starts with (autouse: set up before `running_fleet`)."""
    done = subprocess.run([sys.executable, str(ROOT / "tools/release/release.py"), "--out",
                           str(tmp_path / "dist"), "--image-digest", DIGEST],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    docs = yaml.safe_load_all((tmp_path / "dist" / "install.yaml").read_text())
    deployment = next(d for d in docs if d and d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    image = str(next(e["value"] for e in container["env"] if e["name"] == "RUNNERFLEET_IMAGE"))
    assert image == container["image"] == c.DEFAULT_OPERATOR_IMAGE.rpartition(":")[0] + "@" + DIGEST
    monkeypatch.setenv("RUNNERFLEET_IMAGE", image)
    return image


async def _deployment(
    apps: client.AppsV1Api, name: str, namespace: str
) -> client.V1Deployment | None:
    try:
        return await apps.read_namespaced_deployment(name, namespace)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


async def test_listener_deployment_runs_the_operators_pinned_image(
    running_fleet: Fleet, pinned_image: str
) -> None:
    f = running_fleet
    await f.apply_team_listener(make_team_listener("team-a", config_url=f.config_url))
    apps = client.AppsV1Api(f.kube)
    deployment = await wait_for(
        lambda: _deployment(apps, "team-a-listener", f.namespace),
        lambda d: d is not None,
        what="the TeamListener's Deployment",
    )
    pod = deployment.spec.template.spec
    images = [x.image for x in [*pod.containers, *(pod.init_containers or [])]]
    assert images, "the listener Deployment has no containers"
    assert set(images) == {pinned_image}
