"""A TeamListener's children are applied when needed, not every round: an idle listener costs
the apiserver no writes, and a deleted or hand-scaled Deployment is put back."""

from __future__ import annotations

import asyncio
from collections import Counter

from kubernetes_asyncio import client
from prometheus_client.parser import text_string_to_metric_families

from runnerfleet import conventions as c
from runnerfleet.localcluster import LocalCluster
from tests.support.factories import make_team_listener
from tests.support.fleet import Fleet
from tests.support.kube import wait_for

CHILD_RESOURCES = ("serviceaccounts", "roles", "rolebindings", "services", "networkpolicies",
                   "deployments")  # fmt: skip
WINDOW = 12.0  # four of the TeamListener loop's 3 s resyncs


async def child_writes(cluster: LocalCluster) -> Counter[str]:
    """Server-side applies and patches the apiserver has served on the children's kinds (the
    operator's verbs; the controllers' own UPDATEs are left out)."""
    resp = await asyncio.to_thread(cluster.api().get, "/metrics")
    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(str(resp.body)):
        for sample in family.samples:
            labels = sample.labels
            if (sample.name == "apiserver_request_total" and not labels.get("subresource")
                    and labels.get("resource") in CHILD_RESOURCES
                    and labels.get("verb") in ("APPLY", "PATCH")):  # fmt: skip
                out[f"{labels['verb']} {labels['resource']}"] += int(sample.value)
    return out


async def test_idle_listener_writes_no_children_and_a_lost_deployment_comes_back(
    running_fleet: Fleet, local_cluster: LocalCluster
) -> None:
    f = running_fleet
    await f.apply_team_listener(make_team_listener(
        "team-a", team="team-a", config_url=f.config_url, repositories=["app"], pollInterval="2s",
    ))  # fmt: skip
    await wait_for(
        lambda: f.team_listener("team-a"),
        lambda t: t.get("status", {}).get("listenerReady") is True,
        what="TeamListener listenerReady",
    )
    apps = client.AppsV1Api(f.kube)
    name = "team-a-listener"
    first = await apps.read_namespaced_deployment(name, f.namespace)
    digest = first.metadata.annotations[c.ANNOTATION_SPEC_HASH]

    # Idle: the operator reads each round but sends nothing (before: 6 applies every 3 s).
    # The window is a measurement, not a synchronisation.
    before = await child_writes(local_cluster)
    await asyncio.sleep(WINDOW)
    after = await child_writes(local_cluster)
    writes = after - before
    print(f"children writes in {WINDOW:.0f}s idle: {dict(writes)}")
    assert (await apps.read_namespaced_deployment(name, f.namespace)).metadata.generation == (
        first.metadata.generation
    )
    assert not writes, f"idle listener children written: {dict(writes)}"

    # Scaled by hand: drift, put back on the next round.
    await apps.patch_namespaced_deployment_scale(name, f.namespace, {"spec": {"replicas": 3}})
    await wait_for(
        lambda: apps.read_namespaced_deployment(name, f.namespace),
        lambda d: d.spec.replicas == 1, what="the Deployment scaled back to 1", within=15,
    )  # fmt: skip

    # Deleted: missing, recreated with the same children hash.
    await apps.delete_namespaced_deployment(name, f.namespace)
    back = await wait_for(
        lambda: _uid_or_none(apps, name, f.namespace),
        lambda uid: uid not in (None, first.metadata.uid),
        what="the Deployment recreated", within=15,
    )  # fmt: skip
    assert back is not None
    again = await apps.read_namespaced_deployment(name, f.namespace)
    assert again.metadata.annotations[c.ANNOTATION_SPEC_HASH] == digest


async def _uid_or_none(apps: client.AppsV1Api, name: str, namespace: str) -> str | None:
    try:
        found = await apps.read_namespaced_deployment(name, namespace)
    except client.ApiException as err:
        if err.status == 404:
            return None
        raise
    return str(found.metadata.uid)
