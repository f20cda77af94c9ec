"""Pure builders for `spec.containerMode`: the runner pod's additions for each mode, and the
per-scale-set ServiceAccount, Role, RoleBinding and job-pod template of `kubernetes` mode.

- `kubernetes`: the runner runs GitHub's runner container hooks (actions/runner-container-hooks),
  which create each job container and service as a pod in the runner's namespace. The runner
  pod gets the hooks' env, a token for a ServiceAccount bound to `HOOKS_RULES` only, the work
  directory on a per-runner ephemeral volume claim (named `work`, so the claim is
  `<pod>-work`, the name the hooks mount in job pods) and the job-pod template (a ConfigMap
  carrying the pool's placement and the restricted security context).
- `dind`: a privileged Docker daemon as a native sidecar (an init container with
  `restartPolicy: Always`, so the pod completes when the runner exits), sharing its socket
  with the runner through an emptyDir. Whether the pool allows it is decided by the service.

The user's template wins where it sets a value (an env var, a volume named `work`), as in
builders/runner.py. Layer: builders. Pure.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import yaml

from runnerfleet import conventions as c
from runnerfleet.builders.hashing import manifests_hash, stamped
from runnerfleet.builders.node_pool import Placement
from runnerfleet.models.runner_scale_set import ContainerMode, RunnerScaleSetSpec

if TYPE_CHECKING:  # runner.py imports this module
    from runnerfleet.builders.runner import ScaleSetIdentity

# Exactly what the hooks use, and what their prepare-job step checks with
# SelfSubjectAccessReviews before running (`requiredPermissions` in the hooks' k8s client):
# job pods (create, read, prune by label, delete), exec into them (websocket exec is
# authorised as `get`, and also as `create` on recent Kubernetes), follow their logs,
# container-step Jobs, and the Secrets holding a step's env and registry credentials.
HOOKS_RULES: tuple[dict[str, Any], ...] = (
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "create", "delete"]},
    {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "create", "delete"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "create", "delete"]},
)

# Job pods run the user's `container:` image: as the runner's user (its files on the shared
# work volume are the runner's) and under the restricted profile, like the runner.
JOB_POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": c.RUNNER_UID,
    "runAsGroup": c.RUNNER_UID,
    "fsGroup": c.RUNNER_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
JOB_CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
# Every key set, so builders/runner.py's restricted defaults add nothing to it (privileged
# with allowPrivilegeEscalation false is refused by the apiserver).
_DIND_SECURITY: dict[str, Any] = {
    "privileged": True,
    "allowPrivilegeEscalation": True,
    "runAsNonRoot": False,
    "runAsUser": 0,
    "capabilities": {"drop": []},
    "seccompProfile": {"type": "Unconfined"},
}
_TEMPLATE_VOLUME = "hooks-job-template"
_DIND_SOCKET_VOLUME = "dind-sock"
_DIND_EXTERNALS_VOLUME = "dind-externals"
_DOCKER_SOCKET = "/var/run/docker.sock"


def hooks_service_account(scale_set: str, spec: RunnerScaleSetSpec) -> str:
    """The account runner pods use in kubernetes mode: the scale set's own
    (`spec.identity.serviceAccountName`, cloud identity) when it names one, else the rendered
    one."""
    if spec.identity is not None:
        return spec.identity.service_account_name
    return c.container_hooks_name(scale_set)


def apply_container_mode(
    pod_spec: dict[str, Any], scale_set: str, spec: RunnerScaleSetSpec, runner: str
) -> None:
    """Add the mode's parts to a runner pod spec (in place; nothing for the default mode).
    Called before builders/runner.py fills the restricted defaults of other containers."""
    mode = spec.container_mode
    if mode is None:
        return
    runner_container = next(
        ct for ct in pod_spec["containers"] if ct.get("name") == c.RUNNER_CONTAINER
    )
    if mode.type == c.CONTAINER_MODE_KUBERNETES:
        _kubernetes(pod_spec, runner_container, scale_set, spec, mode, runner)
    else:
        _dind(pod_spec, runner_container, mode)


def _add_env(container: dict[str, Any], env: list[dict[str, Any]]) -> None:
    have = {e.get("name") for e in container.get("env", [])}
    container["env"] = [*container.get("env", []), *(e for e in env if e["name"] not in have)]


def _add_mounts(container: dict[str, Any], mounts: list[dict[str, Any]]) -> None:
    have = {m.get("name") for m in container.get("volumeMounts", [])}
    paths = {m.get("mountPath") for m in container.get("volumeMounts", [])}
    extra = [m for m in mounts if m["name"] not in have and m["mountPath"] not in paths]
    container["volumeMounts"] = [*container.get("volumeMounts", []), *extra]


def _add_volumes(pod_spec: dict[str, Any], volumes: list[dict[str, Any]]) -> None:
    have = {v.get("name") for v in pod_spec.get("volumes", [])}
    pod_spec["volumes"] = [
        *pod_spec.get("volumes", []),
        *(v for v in volumes if v["name"] not in have),
    ]


def _kubernetes(
    pod_spec: dict[str, Any],
    runner_container: dict[str, Any],
    scale_set: str,
    spec: RunnerScaleSetSpec,
    mode: ContainerMode,
    runner: str,
) -> None:
    # The hooks call the API with the pod's token: mounted only in this mode.
    pod_spec["serviceAccountName"] = hooks_service_account(scale_set, spec)
    pod_spec["automountServiceAccountToken"] = True
    require = "false" if mode.require_job_container is False else "true"
    template_path = f"{c.JOB_TEMPLATE_DIR}/{c.JOB_TEMPLATE_KEY}"
    _add_env(runner_container, [
        {"name": "ACTIONS_RUNNER_CONTAINER_HOOKS", "value": c.CONTAINER_HOOKS_PATH},
        {"name": "ACTIONS_RUNNER_POD_NAME",
         "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "ACTIONS_RUNNER_REQUIRE_JOB_CONTAINER", "value": require},
        {"name": "ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE", "value": template_path},
    ])  # fmt: skip
    _add_mounts(runner_container, [
        {"name": c.WORK_VOLUME, "mountPath": c.RUNNER_WORK_DIR},
        {"name": _TEMPLATE_VOLUME, "mountPath": c.JOB_TEMPLATE_DIR, "readOnly": True},
    ])  # fmt: skip
    claim = mode.work_volume_claim
    claim_spec: dict[str, Any] = {
        "accessModes": list(claim.access_modes) if claim else ["ReadWriteOnce"],
        "resources": {"requests": {"storage": claim.size if claim else "1Gi"}},
    }
    if claim is not None and claim.storage_class_name:
        claim_spec["storageClassName"] = claim.storage_class_name
    _add_volumes(pod_spec, [
        # Ephemeral: the claim `<pod>-work` is created with the pod and goes with it.
        {"name": c.WORK_VOLUME, "ephemeral": {"volumeClaimTemplate": {
            "metadata": {"labels": {c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE,
                                    c.LABEL_RUNNER: runner}},
            "spec": claim_spec}}},
        {"name": _TEMPLATE_VOLUME, "configMap": {
            "name": c.container_hooks_name(scale_set),
            "items": [{"key": c.JOB_TEMPLATE_KEY, "path": c.JOB_TEMPLATE_KEY}]}},
    ])  # fmt: skip


def _dind(pod_spec: dict[str, Any], runner_container: dict[str, Any], mode: ContainerMode) -> None:
    """As ARC's dind mode: the runner's externals copied to a shared volume (the daemon's
    containers mount them), the daemon as a sidecar, the socket shared through /var/run."""
    image = runner_container.get("image", c.DEFAULT_RUNNER_IMAGE)
    copy_externals = {
        "name": "init-dind-externals",
        "image": image,
        "command": ["cp"],
        "args": ["-r", "/home/runner/externals/.", "/home/runner/tmpDir/"],
        "volumeMounts": [{"name": _DIND_EXTERNALS_VOLUME, "mountPath": "/home/runner/tmpDir"}],
    }
    daemon = {
        "name": "dind",
        "image": mode.dind_image or c.DEFAULT_DIND_IMAGE,
        "restartPolicy": "Always",  # a native sidecar: started first, stopped with the runner
        "args": ["dockerd", f"--host=unix://{_DOCKER_SOCKET}",
                 f"--group={c.DOCKER_GROUP_GID}"],
        "securityContext": copy.deepcopy(_DIND_SECURITY),
        # The runner starts once the daemon answers.
        "startupProbe": {"exec": {"command": ["docker", "info"]},
                         "periodSeconds": 5, "failureThreshold": 24},
        "volumeMounts": [
            {"name": c.WORK_VOLUME, "mountPath": c.RUNNER_WORK_DIR},
            {"name": _DIND_SOCKET_VOLUME, "mountPath": "/var/run"},
            {"name": _DIND_EXTERNALS_VOLUME, "mountPath": "/home/runner/externals"},
        ],
    }  # fmt: skip
    names = {ct.get("name") for ct in pod_spec.get("initContainers", [])}
    pod_spec["initContainers"] = [
        *pod_spec.get("initContainers", []),
        *(ct for ct in (copy_externals, daemon) if ct["name"] not in names),
    ]
    _add_env(runner_container, [
        {"name": "DOCKER_HOST", "value": f"unix://{_DOCKER_SOCKET}"},
        {"name": "RUNNER_WAIT_FOR_DOCKER_IN_SECONDS", "value": "120"},
    ])  # fmt: skip
    _add_mounts(runner_container, [
        {"name": c.WORK_VOLUME, "mountPath": c.RUNNER_WORK_DIR},
        {"name": _DIND_SOCKET_VOLUME, "mountPath": "/var/run"},
    ])  # fmt: skip
    _add_volumes(pod_spec, [
        {"name": c.WORK_VOLUME, "emptyDir": {}},
        {"name": _DIND_SOCKET_VOLUME, "emptyDir": {}},
        {"name": _DIND_EXTERNALS_VOLUME, "emptyDir": {}},
    ])  # fmt: skip
    security = pod_spec.setdefault("securityContext", {})
    if "supplementalGroups" not in security:
        security["supplementalGroups"] = [c.DOCKER_GROUP_GID]  # the socket's group


# ------------------------------------------------------------------ kubernetes-mode children
def _meta(owner: ScaleSetIdentity, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": {c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE, c.LABEL_SCALE_SET: owner.name,
                   c.LABEL_COMPONENT: "container-hooks"},
        "ownerReferences": [{
            "apiVersion": c.API_VERSION, "kind": c.RUNNER_SCALE_SET_KIND, "name": owner.name,
            "uid": owner.uid, "controller": True, "blockOwnerDeletion": True,
        }],
    }  # fmt: skip


def build_job_pod_template(owner: ScaleSetIdentity, place: Placement | None) -> dict[str, Any]:
    """The pod template the hooks merge into every job pod and container-step Job: the
    pool's node selector and toleration, no API token, the restricted security context (pod,
    and the job container: `$job` is the hooks' name for extending it) and the team's label,
    so the team's NetworkPolicy (which selects runner pods) covers job pods too."""
    labels = {c.LABEL_COMPONENT: c.COMPONENT_RUNNER, c.LABEL_CONTAINER_JOB_OF: owner.name}
    if owner.team:
        labels[c.LABEL_TEAM] = owner.team
    # No token in job pods: the hooks set no ServiceAccount, so they would get the namespace's
    # `default` account's token, mounted where the job's own code runs.
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": copy.deepcopy(JOB_POD_SECURITY),
    }
    if place is not None:
        pod["nodeSelector"] = dict(place.node_selector)
        pod["tolerations"] = [dict(t) for t in place.tolerations]
    pod["containers"] = [{"name": "$job", "securityContext": copy.deepcopy(JOB_CONTAINER_SECURITY)}]
    return {"metadata": {"labels": labels}, "spec": pod}


def build_hooks_children(
    owner: ScaleSetIdentity, spec: RunnerScaleSetSpec, place: Placement | None
) -> tuple[list[dict[str, Any]], str]:
    """The kubernetes-mode children of a scale set, in apply order, and their hash (stamped
    on the last, the ConfigMap: the group's anchor, planning/children.py). No ServiceAccount
    when the scale set names its own; the RoleBinding then binds the Role to that one."""
    name = c.container_hooks_name(owner.name)
    account = hooks_service_account(owner.name, spec)
    children: list[dict[str, Any]] = []
    if account == name:
        children.append({"apiVersion": "v1", "kind": "ServiceAccount",
                         "metadata": _meta(owner, name)})  # fmt: skip
    children.append({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": _meta(owner, name), "rules": [copy.deepcopy(r) for r in HOOKS_RULES],
    })  # fmt: skip
    children.append({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": _meta(owner, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": owner.namespace}],
    })  # fmt: skip
    template = yaml.safe_dump(build_job_pod_template(owner, place), sort_keys=True)
    children.append({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(owner, name),
        "data": {c.JOB_TEMPLATE_KEY: template},
    })  # fmt: skip
    digest = manifests_hash(children)
    children[-1] = stamped(children[-1], digest)
    return children, digest
