"""Container modes (pure): golden runner pods and kubernetes-mode children for each mode, the
default pod unchanged, the user's template winning, and the CRD's rules for the mode."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from runnerfleet import conventions as c
from runnerfleet.builders.container_mode import HOOKS_RULES, build_hooks_children
from runnerfleet.builders.crds import RUNNER_SCALE_SET, build_crd
from runnerfleet.builders.node_pool import placement
from runnerfleet.builders.runner import ScaleSetIdentity, build_runner_pod
from runnerfleet.models.node_pool import RunnerNodePoolSpec
from runnerfleet.models.runner_scale_set import RunnerScaleSetSpec
from tests.support.golden import golden, runner_spec

OWNER = ScaleSetIdentity(name="linux", namespace="team-a", uid="1234", team="team-a")
RUNNER = "linux-abcd12345"
POOL = placement("ci")


def _spec(**overrides: Any) -> RunnerScaleSetSpec:
    return runner_spec(**{"nodePool": "ci", **overrides})


KUBE = {"type": "kubernetes", "workVolumeClaim": {"storageClassName": "fast", "size": "5Gi"}}


def test_kubernetes_mode_pod_matchesgolden() -> None:
    golden("runner_pod_kubernetes.json",
            build_runner_pod(OWNER, _spec(containerMode=KUBE), RUNNER, POOL))  # fmt: skip


def test_dind_mode_pod_matchesgolden() -> None:
    pod = build_runner_pod(OWNER, _spec(containerMode={"type": "dind"}), RUNNER, POOL)
    golden("runner_pod_dind.json", pod)


def test_kubernetes_mode_children_matchgolden() -> None:
    children, digest = build_hooks_children(OWNER, _spec(containerMode=KUBE), POOL)
    golden("container_hooks_children.json", {"hash": digest, "children": children})


def test_default_mode_adds_nothing_to_the_pod() -> None:
    """The default pod is the golden runner_pod_default.json (test_runner_builders.py); an
    unset containerMode and the model's default are the same pod, with no token."""
    pod = build_runner_pod(OWNER, _spec(), RUNNER, POOL)
    assert pod == build_runner_pod(OWNER, _spec(containerMode=None), RUNNER, POOL)
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod["spec"]
    assert "volumes" not in pod["spec"]


def test_kubernetes_mode_runner_has_hooks_env_token_and_ephemeral_work_claim() -> None:
    spec = build_runner_pod(OWNER, _spec(containerMode=KUBE), RUNNER, POOL)["spec"]
    assert spec["serviceAccountName"] == "linux-hooks"
    assert spec["automountServiceAccountToken"] is True
    runner = spec["containers"][0]
    env = {e["name"]: e for e in runner["env"]}
    assert env["ACTIONS_RUNNER_CONTAINER_HOOKS"]["value"] == "/home/runner/k8s/index.js"
    assert env["ACTIONS_RUNNER_POD_NAME"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.name"}}  # fmt: skip
    assert env["ACTIONS_RUNNER_REQUIRE_JOB_CONTAINER"]["value"] == "true"
    assert env[c.JIT_ENV]["valueFrom"]["secretKeyRef"]["name"] == RUNNER
    work = next(v for v in spec["volumes"] if v["name"] == "work")  # claim <pod>-work
    claim = work["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert claim == {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
                     "resources": {"requests": {"storage": "5Gi"}}}  # fmt: skip
    assert {"name": "work", "mountPath": "/home/runner/_work"} in runner["volumeMounts"]
    template = next(v for v in spec["volumes"] if v["name"] == "hooks-job-template")
    assert template["configMap"]["name"] == "linux-hooks"
    # Still restricted: nothing privileged, placement on the pool.
    assert runner["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["nodeSelector"] == {c.LABEL_POOL: "ci"}


def test_require_job_container_can_be_turned_off_and_the_templates_env_wins() -> None:
    mine = {"name": "runner", "env": [{"name": "ACTIONS_RUNNER_CONTAINER_HOOKS",
                                       "value": "/opt/hooks/index.js"}]}  # fmt: skip
    spec = _spec(containerMode={"type": "kubernetes", "requireJobContainer": False},
                 template={"spec": {"containers": [mine]}})  # fmt: skip
    env = {e["name"]: e.get("value") for e in build_runner_pod(OWNER, spec, RUNNER)["spec"][
        "containers"][0]["env"]}  # fmt: skip
    assert env["ACTIONS_RUNNER_REQUIRE_JOB_CONTAINER"] == "false"
    assert env["ACTIONS_RUNNER_CONTAINER_HOOKS"] == "/opt/hooks/index.js"


def test_dind_daemon_is_a_privileged_native_sidecar_and_the_runner_stays_restricted() -> None:
    spec = build_runner_pod(OWNER, _spec(containerMode={"type": "dind"}), RUNNER, POOL)["spec"]
    daemon = next(ct for ct in spec["initContainers"] if ct["name"] == "dind")
    assert daemon["restartPolicy"] == "Always"  # the pod completes when the runner exits
    assert daemon["securityContext"]["privileged"] is True
    assert daemon["securityContext"]["allowPrivilegeEscalation"] is True  # else a 422
    runner = spec["containers"][0]
    assert runner["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"name": "DOCKER_HOST", "value": "unix:///var/run/docker.sock"} in runner["env"]
    assert spec["automountServiceAccountToken"] is False  # no API token in dind mode
    copy = next(ct for ct in spec["initContainers"] if ct["name"] == "init-dind-externals")
    assert copy["securityContext"]["runAsNonRoot"] is True


def test_hooks_role_is_exactly_the_hooks_permissions_in_the_namespace_only() -> None:
    children, _ = build_hooks_children(OWNER, _spec(containerMode=KUBE), POOL)
    kinds = [m["kind"] for m in children]
    assert kinds == ["ServiceAccount", "Role", "RoleBinding", "ConfigMap"]
    role = children[1]
    assert role["rules"] == [dict(r) for r in HOOKS_RULES]
    grants = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
              for r in rule["resources"] for v in rule["verbs"]}  # fmt: skip
    assert len(grants) == 17
    assert not any(v in ("*", "update", "patch", "escalate", "bind", "impersonate")
                   for _, _, v in grants)  # fmt: skip
    binding = children[2]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "linux-hooks", "namespace": "team-a"}]  # fmt: skip
    for manifest in children:
        assert manifest["metadata"]["namespace"] == "team-a"
        assert manifest["metadata"]["ownerReferences"][0]["uid"] == "1234"
    assert c.ANNOTATION_SPEC_HASH in children[-1]["metadata"]["annotations"]


def test_job_pod_template_carries_the_pools_placement_and_restricted_context() -> None:
    children, _ = build_hooks_children(OWNER, _spec(containerMode=KUBE), POOL)
    template = yaml.safe_load(children[-1]["data"]["job.yaml"])
    assert template["spec"]["nodeSelector"] == {c.LABEL_POOL: "ci"}
    assert template["spec"]["tolerations"] == POOL.tolerations
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True
    assert template["spec"]["automountServiceAccountToken"] is False  # the job gets no token
    job = template["spec"]["containers"][0]
    assert job["name"] == "$job"  # the hooks merge `$job` into the job container
    assert job["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # Covered by the team's NetworkPolicy, never taken for a runner by the operator.
    labels = template["metadata"]["labels"]
    assert labels[c.LABEL_TEAM] == "team-a"
    assert c.LABEL_SCALE_SET not in labels


def test_children_hash_changes_with_the_pool_and_not_otherwise() -> None:
    _, a = build_hooks_children(OWNER, _spec(containerMode=KUBE), POOL)
    _, b = build_hooks_children(OWNER, _spec(containerMode=KUBE), POOL)
    _, other = build_hooks_children(OWNER, _spec(containerMode=KUBE), placement("gpu"))
    assert a == b != other


def test_dind_fields_are_refused_with_kubernetes_and_the_other_way_round() -> None:
    schema = build_crd(RUNNER_SCALE_SET)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    mode = schema["properties"]["spec"]["properties"]["containerMode"]
    rules = mode["x-kubernetes-validations"]
    messages = " ".join(r["message"] for r in rules)
    assert "workVolumeClaim applies only to type kubernetes" in messages
    assert "dindImage applies only to type dind" in messages
    with pytest.raises(ValidationError):
        _spec(containerMode={"type": "podman"})


def test_node_pools_do_not_allow_privileged_pods_unless_they_say_so() -> None:
    assert RunnerNodePoolSpec().allow_privileged is False
    assert RunnerNodePoolSpec.model_validate({"allowPrivileged": True}).allow_privileged


def test_a_scale_sets_own_service_account_gets_the_role_and_none_is_rendered() -> None:
    spec = _spec(containerMode={"type": "kubernetes"}, identity={"serviceAccountName": "ci-id"})
    children, _ = build_hooks_children(OWNER, spec, None)
    assert [m["kind"] for m in children] == ["Role", "RoleBinding", "ConfigMap"]
    assert children[1]["subjects"][0]["name"] == "ci-id"
    pod = build_runner_pod(OWNER, spec, RUNNER)
    assert pod["spec"]["serviceAccountName"] == "ci-id"
    assert pod["spec"]["automountServiceAccountToken"] is True  # the hooks need its token
