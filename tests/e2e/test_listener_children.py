"""A TeamListener's children are applied when needed, not every round: an idle listener costs
the apiserver no writes, and a deleted or hand-scaled Deployment is put back."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
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


async def test_bad_egress_cidr_is_refused_by_field_and_applies_nothing_until_fixed(
    running_fleet: Fleet,
) -> None:
    """A CIDR the CRD cannot tell from a good one stops every child (not only the
    NetworkPolicy): the team's runners never run without their policy, and a listener that
    had a good spec keeps its children as they were."""
    f = running_fleet
    api = client.CustomObjectsApi(f.kube)
    net, apps = client.NetworkingV1Api(f.kube), client.AppsV1Api(f.kube)

    def listener(cidr: str) -> dict[str, object]:
        return make_team_listener("egress", team="egress", config_url=f.config_url,
                                  extraEgress=[{"cidr": cidr, "ports": [5000]}])  # fmt: skip

    # Not CIDR-shaped: the apiserver refuses it, naming the field.
    with pytest.raises(client.ApiException) as refused:
        await f.apply_team_listener(listener("registry.internal"))
    assert refused.value.status == 422
    assert "spec.extraEgress[0].cidr" in str(refused.value.body)

    # CIDR-shaped but not one: admitted, then refused by the operator before any child.
    await f.apply_team_listener(listener("1:2/64"))
    cond = await f.wait_condition("tl", "egress", "Ready", "False", "InvalidSpec")
    assert cond["message"].startswith("spec.extraEgress[0].cidr: '1:2/64' is not a CIDR")
    events = await client.CoreV1Api(f.kube).list_namespaced_event(f.namespace)
    assert any(e.reason == "InvalidSpec" and e.type == "Warning"
               and e.involved_object.name == "egress" for e in events.items)  # fmt: skip
    policies = await net.list_namespaced_network_policy(f.namespace)
    assert [p.metadata.name for p in policies.items if p.metadata.name.startswith("egress")] == []
    deployments = await apps.list_namespaced_deployment(f.namespace)
    assert "egress-listener" not in {d.metadata.name for d in deployments.items}

    # Fixed: every child comes, the policy with the team's CIDR.
    async def set_cidr(cidr: str) -> int:
        patched = await api.patch_namespaced_custom_object(
            c.GROUP, c.VERSION, f.namespace, c.TEAM_LISTENER_PLURAL, "egress",
            {"spec": {"extraEgress": [{"cidr": cidr, "ports": [5000]}]}},
            _content_type="application/merge-patch+json",
        )  # fmt: skip
        return int(patched["metadata"]["generation"])

    def blocks(policy: client.V1NetworkPolicy) -> list[str]:
        return [peer.ip_block.cidr for rule in policy.spec.egress for peer in rule.to or []
                if peer.ip_block]  # fmt: skip

    await set_cidr("fd00::/64")
    policy = await wait_for(
        lambda: _policy_or_none(net, "egress-runners", f.namespace),
        lambda p: p is not None and "fd00::/64" in blocks(p), what="the NetworkPolicy applied",
    )  # fmt: skip
    assert policy is not None
    deployment = await apps.read_namespaced_deployment("egress-listener", f.namespace)

    # Broken again: refused, and what runs stays as it was.
    generation = await set_cidr("1:2/64")
    # The condition of this generation's round, not the first InvalidSpec's (still shown if
    # the round that applied the fix has not written its status yet).
    await wait_for(
        lambda: f.team_listener("egress"),
        lambda tl: any(x["type"] == "Ready" and x["reason"] == "InvalidSpec"
                       and x.get("observedGeneration") == generation
                       for x in tl.get("status", {}).get("conditions", [])),
        what=f"Ready=False InvalidSpec for generation {generation}",
    )  # fmt: skip
    again = await _policy_or_none(net, "egress-runners", f.namespace)
    assert again is not None
    assert "fd00::/64" in blocks(again)
    assert again.metadata.resource_version == policy.metadata.resource_version
    kept = await apps.read_namespaced_deployment("egress-listener", f.namespace)
    assert (
        kept.metadata.annotations[c.ANNOTATION_SPEC_HASH]
        == (deployment.metadata.annotations[c.ANNOTATION_SPEC_HASH])
    )

    # Gone before the test ends: a webhook relay of a later test on this cluster watches
    # every namespace and would count this invalid TeamListener as skipped.
    await api.delete_namespaced_custom_object(
        c.GROUP, c.VERSION, f.namespace, c.TEAM_LISTENER_PLURAL, "egress"
    )
    await wait_for(lambda: _listener_or_none(api, f.namespace), lambda o: o is None,
                   what="TeamListener egress deleted")  # fmt: skip


async def _listener_or_none(api: client.CustomObjectsApi, namespace: str) -> object:
    try:
        return await api.get_namespaced_custom_object(
            c.GROUP, c.VERSION, namespace, c.TEAM_LISTENER_PLURAL, "egress"
        )
    except client.ApiException as err:
        if err.status == 404:
            return None
        raise


async def _policy_or_none(
    net: client.NetworkingV1Api, name: str, namespace: str
) -> client.V1NetworkPolicy | None:
    try:
        return await net.read_namespaced_network_policy(name, namespace)
    except client.ApiException as err:
        if err.status == 404:
            return None
        raise
