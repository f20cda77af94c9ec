"""What containerMode costs a scale-set round, and what it refuses (services/container_mode.py
against a recording stand-in for the Kubernetes gateway).

kubernetes: the four children are applied when missing or changed and at the resync; an idle
round makes no request; after a restart a current anchor is adopted with one read and no
write; a refused apply is a condition that is not re-sent every round.
dind: refused, naming the field and the pool, unless the pool allows privileged pods.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from runnerfleet.builders.node_pool import placement
from runnerfleet.builders.runner import ScaleSetIdentity
from runnerfleet.gateways.kubernetes import InvalidError
from runnerfleet.models.runner_scale_set import RunnerScaleSetSpec
from runnerfleet.services.container_mode import prepare
from runnerfleet.services.runtime import Runtime
from tests.support.factories import make_node_pool, make_scale_set

OWNER = ScaleSetIdentity("linux", "team-a", "uid-1", "team-a")


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.pools: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.refuse: str | None = None

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append("get ConfigMap")
        found = self.objects.get(("ConfigMap", name))
        return copy.deepcopy(found) if found else None

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(f"apply {manifest['kind']}")
        if self.refuse == manifest["kind"]:
            raise InvalidError(f"apply {manifest['kind']}: refused", 422)
        self.objects[(manifest["kind"], manifest["metadata"]["name"])] = copy.deepcopy(manifest)
        return manifest

    async def get_node_pool(self, name: str) -> dict[str, Any]:
        self.calls.append("get RunnerNodePool")
        return copy.deepcopy(self.pools[name])

    def take(self) -> list[str]:
        calls, self.calls = self.calls, []
        return calls


def _spec(**spec: Any) -> RunnerScaleSetSpec:
    return RunnerScaleSetSpec.model_validate(make_scale_set(**spec)["spec"])


KUBE = _spec(containerMode={"type": "kubernetes"}, nodePool="ci")
APPLY_ALL = ["get ConfigMap", "apply ServiceAccount", "apply Role", "apply RoleBinding",
             "apply ConfigMap"]  # fmt: skip


async def test_hooks_children_are_applied_once_then_idle_rounds_cost_nothing() -> None:
    kube = FakeKube()
    runtime = Runtime(kube=kube)  # type: ignore[arg-type]
    assert await prepare(runtime, KUBE, OWNER, placement("ci")) is None
    assert kube.take() == APPLY_ALL
    for _ in range(3):
        assert await prepare(runtime, KUBE, OWNER, placement("ci")) is None
    assert kube.take() == []

    # A restarted operator (or a new leader) adopts the current anchor: one read, no write.
    fresh = Runtime(kube=kube)  # type: ignore[arg-type]
    assert await prepare(fresh, KUBE, OWNER, placement("ci")) is None
    assert await prepare(fresh, KUBE, OWNER, placement("ci")) is None
    assert kube.take() == ["get ConfigMap"]

    # Another pool changes the job template: applied again at once.
    assert await prepare(fresh, KUBE, OWNER, placement("gpu")) is None
    assert kube.take() == APPLY_ALL

    # The resync re-applies (repairing a hand-edited Role or a deleted ServiceAccount).
    key = (OWNER.namespace, OWNER.name)
    applied, _ = fresh.hooks_applied[key]
    fresh.hooks_applied[key] = (dataclasses.replace(applied, at=applied.at - 301), None)
    del kube.objects[("ServiceAccount", "linux-hooks")]
    assert await prepare(fresh, KUBE, OWNER, placement("gpu")) is None
    assert kube.take() == APPLY_ALL
    assert ("ServiceAccount", "linux-hooks") in kube.objects


async def test_a_refused_apply_is_a_condition_not_a_write_per_round() -> None:
    kube = FakeKube()
    kube.refuse = "Role"
    runtime = Runtime(kube=kube)  # type: ignore[arg-type]
    problem = await prepare(runtime, KUBE, OWNER, None)
    assert problem is not None
    assert (problem.condition, problem.reason) == ("PodsAdmitted", "ContainerHooksRejected")
    assert problem.message.startswith("spec.containerMode.type: kubernetes")
    kube.take()
    assert await prepare(runtime, KUBE, OWNER, None) == problem
    assert kube.take() == []


async def test_dind_needs_a_pool_that_allows_privileged_pods() -> None:
    kube = FakeKube()
    runtime = Runtime(kube=kube)  # type: ignore[arg-type]
    kube.pools["plain"] = make_node_pool("plain")
    kube.pools["docker"] = make_node_pool("docker", allowPrivileged=True)
    dind = {"type": "dind"}

    problem = await prepare(runtime, _spec(containerMode=dind, nodePool="plain"), OWNER, None)
    assert problem is not None
    assert (problem.condition, problem.reason) == ("NodePoolReady", "PrivilegedNotAllowed")
    assert problem.message.startswith("spec.containerMode.type: dind")
    assert "'plain'" in problem.message
    assert "existing runners are kept" in problem.message

    nowhere = await prepare(runtime, _spec(containerMode=dind), OWNER, None)
    assert nowhere is not None
    assert "no spec.nodePool" in nowhere.message

    assert await prepare(runtime, _spec(containerMode=dind, nodePool="docker"), OWNER, None) is None
    assert kube.objects == {}  # dind renders no RBAC


async def test_pods_refused_for_a_deleted_account_bring_the_reapply_forward() -> None:
    kube = FakeKube()
    runtime = Runtime(kube=kube)  # type: ignore[arg-type]
    await prepare(runtime, KUBE, OWNER, None)
    key = (OWNER.namespace, OWNER.name)
    applied, _ = runtime.hooks_applied[key]
    del kube.objects[("ServiceAccount", "linux-hooks")]
    kube.take()
    refused = {"type": "PodsAdmitted", "status": "False", "reason": "PodRejected", "message": (
        'create Pod team-a/linux-x: pods "linux-x" is forbidden: error looking up service '
        'account team-a/linux-hooks: serviceaccount "linux-hooks" not found')}  # fmt: skip
    runtime.written[key] = {"conditions": [refused]}
    assert await prepare(runtime, KUBE, OWNER, None) is None
    assert kube.take() == []  # applied moments ago: not again within REPAIR_GAP
    runtime.hooks_applied[key] = (dataclasses.replace(applied, at=applied.at - 11), None)
    assert await prepare(runtime, KUBE, OWNER, None) is None
    assert kube.take() == APPLY_ALL
    assert ("ServiceAccount", "linux-hooks") in kube.objects

    # Refused for another reason (say Pod Security): no early re-apply.
    runtime.written[key] = {"conditions": [{**refused, "message": "violates PodSecurity"}]}
    applied, _ = runtime.hooks_applied[key]
    runtime.hooks_applied[key] = (dataclasses.replace(applied, at=applied.at - 11), None)
    assert await prepare(runtime, KUBE, OWNER, None) is None
    assert kube.take() == []
