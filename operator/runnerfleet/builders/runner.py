"""Pure builders for one runner: its Secret (JIT config holder) and its pod.

Defaults follow the Pod Security "restricted" profile and never mount a service-account token;
the user's template wins wherever it sets a value, so a template asking for more than the
namespace allows is refused by the apiserver (and reported), not silently altered.

Layer: builders. Pure: no client, clock or environment.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from runnerfleet import conventions as c
from runnerfleet.builders.container_mode import apply_container_mode
from runnerfleet.builders.hardening import apply_default_resources, apply_hardening
from runnerfleet.builders.hashing import manifests_hash
from runnerfleet.builders.identity import apply_identity
from runnerfleet.builders.node_pool import Placement
from runnerfleet.models.runner_scale_set import RunnerScaleSetSpec


@dataclass(frozen=True)
class ScaleSetIdentity:
    """What a child needs to know about its RunnerScaleSet."""

    name: str
    namespace: str
    uid: str
    team: str | None = None  # from the scale set's `runnerfleet.dev/team` label


def runner_labels(owner: ScaleSetIdentity, runner: str) -> dict[str, str]:
    labels = {
        c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE,
        c.LABEL_COMPONENT: c.COMPONENT_RUNNER,
        c.LABEL_SCALE_SET: owner.name,
        c.LABEL_RUNNER: runner,
    }
    if owner.team:
        labels[c.LABEL_TEAM] = owner.team  # selects the team's NetworkPolicy
    return labels


def scale_set_labels(owner: ScaleSetIdentity) -> dict[str, str]:
    """The labels every child (pods, Secrets) of one scale set carries."""
    return {c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE, c.LABEL_SCALE_SET: owner.name}


def scale_set_selector(owner: ScaleSetIdentity) -> str:
    """Label selector for every child (pods, Secrets) of one scale set."""
    return ",".join(f"{k}={v}" for k, v in scale_set_labels(owner).items())


def owner_reference(owner: ScaleSetIdentity) -> dict[str, Any]:
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.RUNNER_SCALE_SET_KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_runner_secret(owner: ScaleSetIdentity, runner: str) -> dict[str, Any]:
    """The runner's Secret, created first as the runner's intent record (no JIT data yet)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": runner,
            "namespace": owner.namespace,
            "labels": runner_labels(owner, runner),
            "ownerReferences": [owner_reference(owner)],
        },
    }


_POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": c.RUNNER_UID,
    "runAsGroup": c.RUNNER_UID,
    "fsGroup": c.RUNNER_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _fill(target: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Set every default the target lacks, recursing into nested dicts; target values win."""
    for key, value in defaults.items():
        if key not in target:
            target[key] = copy.deepcopy(value)
        elif isinstance(target[key], dict) and isinstance(value, dict):
            _fill(target[key], value)


def _runner_container(spec: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = spec.setdefault("containers", [])
    for container in containers:
        if container.get("name") == c.RUNNER_CONTAINER:
            return container
    container = {"name": c.RUNNER_CONTAINER}
    containers.insert(0, container)
    return container


# The runner name a template hash is computed with: the hash must not depend on the name.
_HASH_RUNNER = "runner"


def runner_template_hash(
    owner: ScaleSetIdentity, spec: RunnerScaleSetSpec, place: Placement | None = None
) -> str:
    """The hash of everything a runner is built from: the pod exactly as `build_runner_pod`
    renders it (template, defaults, placement, and so any builder change that comes with a
    new operator version), and on REST the labels and runner group it registers with (a
    scale-set runner takes both from its scale set, so changing them replaces no runner).
    Equal hashes: the runner is what the spec asks for today."""
    basis: list[dict[str, Any]] = [_render_pod(owner, spec, _HASH_RUNNER, place)]
    if spec.github.protocol == c.PROTOCOL_REST:
        basis.append({"labels": sorted(spec.labels), "runnerGroup": spec.github.runner_group})
    return manifests_hash(basis)[:10]


def build_runner_pod(
    owner: ScaleSetIdentity,
    spec: RunnerScaleSetSpec,
    runner: str,
    place: Placement | None = None,
    default_resources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The runner pod: the template, completed with runnerfleet's defaults and the JIT env,
    placed on its node pool (the pool's selector and toleration win over the template's),
    with its cloud identity and hardening (builders/identity.py, builders/hardening.py),
    labelled with its template hash. `default_resources`: the operator's default for a
    runner container without resources (an operator setting, outside the hash: changing it
    reaches new runners only)."""
    pod = _render_pod(owner, spec, runner, place)
    pod["metadata"]["labels"][c.LABEL_TEMPLATE_HASH] = runner_template_hash(owner, spec, place)
    apply_default_resources(pod, default_resources)
    return pod


def _render_pod(
    owner: ScaleSetIdentity,
    spec: RunnerScaleSetSpec,
    runner: str,
    place: Placement | None = None,
) -> dict[str, Any]:
    template = copy.deepcopy(spec.template)
    meta = template.get("metadata") or {}
    pod_spec: dict[str, Any] = template.get("spec") or {}

    _fill(
        pod_spec,
        {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": _POD_SECURITY,
        },
    )
    container = _runner_container(pod_spec)
    _fill(
        container,
        {
            "image": c.DEFAULT_RUNNER_IMAGE,
            "command": list(c.DEFAULT_RUNNER_COMMAND),
            "securityContext": _CONTAINER_SECURITY,
        },
    )
    env = [e for e in container.get("env", []) if e.get("name") != c.JIT_ENV]
    env.append(
        {
            "name": c.JIT_ENV,
            "valueFrom": {"secretKeyRef": {"name": runner, "key": c.SECRET_KEY_JITCONFIG}},
        }
    )
    container["env"] = env
    apply_container_mode(pod_spec, owner.name, spec, runner)  # containerMode: hooks or dind
    for other in pod_spec["containers"] + pod_spec.get("initContainers", []):
        _fill(other, {"securityContext": _CONTAINER_SECURITY})
    if place is not None:
        pod_spec["nodeSelector"] = {**pod_spec.get("nodeSelector", {}), **place.node_selector}
        tolerations = list(pod_spec.get("tolerations", []))
        tolerations += [t for t in place.tolerations if t not in tolerations]
        pod_spec["tolerations"] = tolerations
    annotations = dict(meta.get("annotations", {}))
    annotations.pop(c.ANNOTATION_DO_NOT_DISRUPT, None)  # runnerfleet sets it while busy

    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": runner,
            "namespace": owner.namespace,
            "labels": {**meta.get("labels", {}), **runner_labels(owner, runner)},
            "annotations": annotations,
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": pod_spec,
    }
    apply_identity(pod, spec)
    apply_hardening(pod, spec)
    return pod
