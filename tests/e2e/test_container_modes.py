"""Container modes against the real apiserver, with the operator running.

- kubernetes: the operator renders the scale set's ServiceAccount, Role, RoleBinding and
  job-pod template (owned by the scale set); SubjectAccessReviews show the account may do
  exactly what the runner container hooks check for, in its namespace only; acting as the
  account, a job container pod is created in the namespace and refused in another; a
  deleted account is put back as soon as a runner pod is refused for it.
- dind on a pool that does not allow privileged pods: a condition naming the field and the
  pool, an Event, and no pod; once the pool allows it, runners with the daemon sidecar.
"""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from runnerfleet import conventions as c
from runnerfleet.builders.container_mode import (
    HOOKS_RULES,
    JOB_CONTAINER_SECURITY,
    JOB_POD_SECURITY,
)
from runnerfleet.localcluster import LocalCluster
from tests.support.factories import make_node_pool, make_scale_set
from tests.support.fleet import Fleet
from tests.support.kube import allowed, impersonating, temporary_namespace, wait_for

GRANTED = [
    (group, resource, verb)
    for rule in HOOKS_RULES
    for group in rule["apiGroups"]
    for resource in rule["resources"]
    for verb in rule["verbs"]
]
# Near misses: other verbs on the same resources, other subresources, and what a token able to
# create pods must never reach (RBAC, ServiceAccounts, ConfigMaps, workloads).
NOT_GRANTED = [
    ("", "pods", "update"), ("", "pods", "patch"), ("", "pods", "watch"),
    ("", "pods/attach", "create"), ("", "pods/portforward", "create"),
    ("", "pods/ephemeralcontainers", "update"), ("", "pods/log", "delete"),
    ("", "secrets", "update"), ("", "secrets", "watch"), ("batch", "jobs", "patch"),
    ("", "configmaps", "get"), ("", "serviceaccounts", "create"),
    ("", "serviceaccounts/token", "create"), ("rbac.authorization.k8s.io", "roles", "create"),
    ("rbac.authorization.k8s.io", "rolebindings", "create"), ("apps", "deployments", "create"),
    (c.GROUP, c.RUNNER_SCALE_SET_PLURAL, "get"), ("", "persistentvolumeclaims", "create"),
]  # fmt: skip


def _job_pod(name: str) -> client.V1Pod:
    """What the hooks create for a job's `container:`, under the rendered template's context."""
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"runner-pod": "linux-x"}),
        spec=client.V1PodSpec(
            restart_policy="Never",
            security_context=JOB_POD_SECURITY,
            containers=[client.V1Container(name="job", image="node:20", command=["tail"],
                                           security_context=JOB_CONTAINER_SECURITY)],
        ),
    )  # fmt: skip


async def test_kubernetes_mode_grants_exactly_the_hooks_permissions_in_its_namespace(
    running_fleet: Fleet, local_cluster: LocalCluster
) -> None:
    f, ns = running_fleet, running_fleet.namespace
    created = await f.apply_scale_set(make_scale_set(
        "linux", config_url=f.config_url, min_runners=1,
        containerMode={"type": "kubernetes", "workVolumeClaim": {"size": "2Gi"}},
    ))  # fmt: skip
    rbac, core = client.RbacAuthorizationV1Api(f.kube), client.CoreV1Api(f.kube)

    async def role() -> client.V1Role | None:
        try:
            return await rbac.read_namespaced_role("linux-hooks", ns)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    rendered = await wait_for(role, lambda r: r is not None, what="the hooks Role")
    assert rendered is not None
    assert [f.kube.sanitize_for_serialization(r) for r in rendered.rules] == list(HOOKS_RULES)
    account = await core.read_namespaced_service_account("linux-hooks", ns)
    binding = await rbac.read_namespaced_role_binding("linux-hooks", ns)
    template = await core.read_namespaced_config_map("linux-hooks", ns)
    for obj in (rendered, account, binding, template):
        assert obj.metadata.owner_references[0].uid == created["metadata"]["uid"]
    assert binding.role_ref.name == "linux-hooks"
    assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == [
        ("ServiceAccount", "linux-hooks", ns)]  # fmt: skip

    pods = await wait_for(lambda: f.pods("linux"), lambda p: len(p) == 1, what="a runner pod")
    pod = pods[0]
    assert pod.spec.service_account_name == "linux-hooks"
    assert pod.spec.automount_service_account_token is True
    claims = await wait_for(
        lambda: core.list_namespaced_persistent_volume_claim(ns),
        lambda found: any(pvc.metadata.name == f"{pod.metadata.name}-work" for pvc in found.items),
        what="the runner's ephemeral work claim",
    )  # fmt: skip
    claim = next(p for p in claims.items if p.metadata.name == f"{pod.metadata.name}-work")
    assert claim.metadata.owner_references[0].name == pod.metadata.name  # goes with the pod

    user = f"system:serviceaccount:{ns}:linux-hooks"
    async with temporary_namespace(f.kube, "other") as other:
        for group, resource, verb in GRANTED:
            assert await allowed(f.kube, user, verb, resource, ns, group), (verb, resource)
            assert not await allowed(f.kube, user, verb, resource, other, group), (verb, other)
            assert not await allowed(f.kube, user, verb, resource, "", group), (verb, "cluster")
        for group, resource, verb in NOT_GRANTED:
            assert not await allowed(f.kube, user, verb, resource, ns, group), (verb, resource)

        async with impersonating(local_cluster.kubeconfig, user) as as_runner:
            runner_core = client.CoreV1Api(as_runner)
            job = await runner_core.create_namespaced_pod(ns, _job_pod("linux-x-workflow"))
            assert job.metadata.namespace == ns
            with pytest.raises(ApiException) as refused:
                await runner_core.create_namespaced_pod(other, _job_pod("escape"))
            assert refused.value.status == 403
            with pytest.raises(ApiException) as refused:
                await runner_core.list_namespaced_config_map(ns)
            assert refused.value.status == 403
            await runner_core.delete_namespaced_pod("linux-x-workflow", ns)

    # The account deleted by hand: the next runner pod is refused for it, and the operator
    # puts the account back at once (not at the 5-minute resync); the runner then starts.
    await core.delete_namespaced_service_account("linux-hooks", ns)
    await client.CustomObjectsApi(f.kube).patch_namespaced_custom_object(
        c.GROUP, c.VERSION, ns, c.RUNNER_SCALE_SET_PLURAL, "linux", {"spec": {"minRunners": 2}},
        _content_type="application/merge-patch+json",
    )  # fmt: skip
    await wait_for(lambda: f.pods("linux"), lambda p: len(p) == 2, what="the second runner pod",
                   within=60)  # fmt: skip
    await core.read_namespaced_service_account("linux-hooks", ns)


async def test_dind_on_a_pool_without_privileged_is_a_condition_not_a_pod(
    running_fleet: Fleet,
) -> None:
    f = running_fleet
    pool = f"plain-{f.namespace}"
    await f.apply_node_pool(make_node_pool(pool, static={"nodeSelector": {"none": f.namespace}}))
    dind = {"type": "dind"}
    await f.apply_scale_set(make_scale_set("docker", config_url=f.config_url, min_runners=2,
                                           nodePool=pool, containerMode=dind))  # fmt: skip
    refused = await f.wait_condition(
        "rss", "docker", "NodePoolReady", "False", "PrivilegedNotAllowed"
    )
    assert "spec.containerMode.type" in refused["message"]
    assert pool in refused["message"]
    assert await f.pods("docker") == []
    events = await client.CoreV1Api(f.kube).list_namespaced_event(f.namespace)
    assert any(e.reason == "PrivilegedNotAllowed" and e.involved_object.name == "docker"
               for e in events.items)  # fmt: skip

    # The platform team marks the pool for privileged pods: runners with the daemon appear.
    await client.CustomObjectsApi(f.kube).patch_cluster_custom_object(
        c.GROUP, c.VERSION, c.RUNNER_NODE_POOL_PLURAL, pool, {"spec": {"allowPrivileged": True}},
        _content_type="application/merge-patch+json",
    )  # fmt: skip
    pods = await wait_for(lambda: f.pods("docker"), lambda p: len(p) == 2,
                          what="two dind runner pods", within=60)  # fmt: skip
    for pod in pods:
        daemon = next(ct for ct in pod.spec.init_containers if ct.name == "dind")
        assert daemon.security_context.privileged is True
        assert daemon.restart_policy == "Always"
    await f.wait_condition("rss", "docker", "NodePoolReady", "True", within=60)
