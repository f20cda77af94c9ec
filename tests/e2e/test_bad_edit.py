"""Reliability item 22 on a running scale set: a bad edit to a healthy scale set (its Secret
lacks the key, its GitHub URL is unreachable) is a condition naming the field or key, and
its runners are kept; undoing the edit resumes without replacing them."""

from __future__ import annotations

import base64

from kubernetes_asyncio import client

from runnerfleet import conventions as c
from tests.support.factories import make_scale_set
from tests.support.fleet import Fleet


async def _patch(f: Fleet, github: dict[str, object]) -> None:
    await client.CustomObjectsApi(f.kube).patch_namespaced_custom_object(
        c.GROUP, c.VERSION, f.namespace, c.RUNNER_SCALE_SET_PLURAL, "linux",
        {"spec": {"github": github}}, _content_type="application/merge-patch+json",
    )  # fmt: skip


async def _uids(f: Fleet) -> list[str]:
    pods = await f.pods("linux")
    return sorted(p.metadata.uid for p in pods if not p.metadata.deletion_timestamp)


async def test_a_bad_edit_to_a_healthy_scale_set_keeps_its_runners(running_fleet: Fleet) -> None:
    f = running_fleet
    await f.apply_scale_set(make_scale_set(
        "linux", config_url=f.config_url, min_runners=2, protocol="scaleSet"))  # fmt: skip
    await f.expect_runners("linux", idle=2, within=60)
    await f.wait_condition("rss", "linux", "Ready", "True", within=30)
    runners = await _uids(f)
    await client.CoreV1Api(f.kube).create_namespaced_secret(f.namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="half"),
        data={"github_app_id": base64.b64encode(b"42").decode()},
    ))  # fmt: skip

    await _patch(f, {"secretRef": {"name": "half"}})
    cond = await f.wait_condition("rss", "linux", "ConfigValid", "False", within=30)
    assert "Secret half" in cond["message"]
    assert "github_app_private_key" in cond["message"], "names the missing key"
    assert await _uids(f) == runners

    await _patch(f, {"secretRef": {"name": "github-app"}, "configUrl": "http://127.0.0.1:9/acme"})
    cond = await f.wait_condition("rss", "linux", "GitHubReachable", "False", within=60)
    assert "spec.github.configUrl: http://127.0.0.1:9/acme" in cond["message"]
    assert "existing runners are kept" in cond["message"]
    assert await _uids(f) == runners

    await _patch(f, {"configUrl": f.config_url})
    await f.wait_condition("rss", "linux", "Ready", "True", within=60)
    await f.expect_runners("linux", idle=2, within=30)
    assert await _uids(f) == runners, "undoing the edit resumes with the same runners"
