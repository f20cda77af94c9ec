"""Pure builders for a TeamListener's children: ServiceAccount, Role, RoleBinding, Deployment
(running `runnerfleet listen`), Service (webhook + metrics) and the team's NetworkPolicy; and,
outside the hashed children set, the Secret carrying the shared registration token (written
when the token turns over, not when the spec changes).

Layer: builders. Pure.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from runnerfleet import conventions as c
from runnerfleet.builders.hashing import manifests_hash, stamped
from runnerfleet.builders.identity import identity_egress_policies
from runnerfleet.models.team_listener import TeamListenerSpec

WEBHOOK_PORT = 8080
METRICS_PORT = 9090
METADATA_CIDR = "169.254.169.254/32"


@dataclass(frozen=True)
class ListenerIdentity:
    name: str
    namespace: str
    uid: str
    image: str
    lease_seconds: int | None = None  # the listener's Lease (None: the listener's default)
    # A digest of the Secrets the pods read as env (GitHub credentials, webhook secret), on
    # the pod template: a rotated key or secret rolls the pods, which read env only at start.
    secrets_hash: str | None = None
    # The operator's RUNNERFLEET_LOG_FORMAT, so listener pods log the same way (text, the
    # default, is not written: upgrading does not roll every listener).
    log_format: str = "text"

    @property
    def child_name(self) -> str:
        return c.listener_child_name(self.name)

    @property
    def lease_name(self) -> str:
        return c.listener_lease_name(self.name)

    @property
    def registration_secret_name(self) -> str:
        return c.listener_registration_secret_name(self.name)


def _meta(owner: ListenerIdentity, spec: TeamListenerSpec, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": listener_labels(owner, spec),
        "ownerReferences": [{
            "apiVersion": c.API_VERSION, "kind": c.TEAM_LISTENER_KIND, "name": owner.name,
            "uid": owner.uid, "controller": True, "blockOwnerDeletion": True,
        }],
    }  # fmt: skip


def listener_labels(owner: ListenerIdentity, spec: TeamListenerSpec) -> dict[str, str]:
    return {
        c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE,
        c.LABEL_COMPONENT: c.COMPONENT_LISTENER,
        c.LABEL_LISTENER: owner.name,
        c.LABEL_TEAM: spec.team,
    }


def build_service_account(owner: ListenerIdentity, spec: TeamListenerSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(owner, spec, owner.child_name),
        "automountServiceAccountToken": True,
    }


def build_role(owner: ListenerIdentity, spec: TeamListenerSpec) -> dict[str, Any]:
    """Least privilege: read the namespace's scale sets, write only their status (demand),
    read its own TeamListener and write only its status (the poll report). Of Secrets, only
    `get` on the one holding the shared registration token (read through the API, not
    mounted, so a new token needs no pod restart)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(owner, spec, owner.child_name),
        "rules": [
            {"apiGroups": [c.GROUP], "resources": [c.RUNNER_SCALE_SET_PLURAL],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": [c.GROUP], "resources": [f"{c.RUNNER_SCALE_SET_PLURAL}/status"],
             "verbs": ["get", "patch"]},
            {"apiGroups": [c.GROUP], "resources": [c.TEAM_LISTENER_PLURAL],
             "resourceNames": [owner.name], "verbs": ["get", "watch"]},
            {"apiGroups": [c.GROUP], "resources": [f"{c.TEAM_LISTENER_PLURAL}/status"],
             "resourceNames": [owner.name], "verbs": ["get", "patch"]},
            # Leader election among the listener's replicas. `create` cannot be narrowed to
            # a name by RBAC; get/update can.
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": [owner.lease_name], "verbs": ["get", "update", "list", "watch"]},
            {"apiGroups": [""], "resources": ["secrets"],
             "resourceNames": [owner.registration_secret_name], "verbs": ["get"]},
        ],
    }  # fmt: skip


def build_registration_secret(
    owner: ListenerIdentity, spec: TeamListenerSpec, token: str, expires_at: float
) -> dict[str, Any]:
    """The Secret sharing the installation's runner registration token with the listener.

    The expiry (not secret) is both an annotation, for people and for the operator's next
    decision, and a data key, because the listener may `get` only this Secret and reads its
    data. Owned by the TeamListener, so it goes with it.
    """
    meta = _meta(owner, spec, owner.registration_secret_name)
    meta["labels"] = {**meta["labels"], c.LABEL_COMPONENT: c.COMPONENT_REGISTRATION}
    expiry = dt.datetime.fromtimestamp(expires_at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta["annotations"] = {c.ANNOTATION_REGISTRATION_EXPIRES: expiry}
    data = {
        c.SECRET_KEY_REGISTRATION_TOKEN: token,
        c.SECRET_KEY_REGISTRATION_EXPIRES: str(int(expires_at)),
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": meta,
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def build_role_binding(owner: ListenerIdentity, spec: TeamListenerSpec) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(owner, spec, owner.child_name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": owner.child_name},
        "subjects": [{"kind": "ServiceAccount", "name": owner.child_name,
                      "namespace": owner.namespace}],
    }  # fmt: skip


def spec_hash(spec: TeamListenerSpec) -> str:
    """Changes whenever the spec does: put on the pod template, it rolls the Deployment."""
    text = json.dumps(spec.to_wire(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _pod_annotations(owner: ListenerIdentity, spec: TeamListenerSpec) -> dict[str, str]:
    annotations = {c.ANNOTATION_SPEC_HASH: spec_hash(spec)}
    if owner.secrets_hash is not None:
        annotations[c.ANNOTATION_SECRETS_HASH] = owner.secrets_hash
    return annotations


def listener_secrets(spec: TeamListenerSpec) -> list[str]:
    """The Secrets a listener pod reads as env: its GitHub credentials, its webhook secret."""
    names = [spec.github.secret_ref.name]
    if spec.webhook.enabled and spec.webhook.secret_ref is not None:
        names.append(spec.webhook.secret_ref.name)
    return sorted(set(names))


def build_deployment(
    owner: ListenerIdentity, spec: TeamListenerSpec, standby: bool = False
) -> dict[str, Any]:
    """`standby`: the operator is in standby (blue/green): the listener holds no scale-set
    session, so the active cluster's listener can."""
    labels = listener_labels(owner, spec)
    env: list[dict[str, Any]] = [
        {"name": "RUNNERFLEET_LISTENER_NAMESPACE", "value": owner.namespace},
        {"name": "RUNNERFLEET_LISTENER_NAME", "value": owner.name},
        # The replica's identity in the Lease, and where standbys forward webhooks to.
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    if standby:
        env.append({"name": "RUNNERFLEET_MODE", "value": c.MODE_STANDBY})
    if owner.lease_seconds is not None:
        env.append({"name": "RUNNERFLEET_LEASE_SECONDS", "value": str(owner.lease_seconds)})
    if owner.log_format != "text":
        env.append({"name": "RUNNERFLEET_LOG_FORMAT", "value": owner.log_format})
    if spec.webhook.enabled and spec.webhook.secret_ref is not None:
        env.append({"name": "RUNNERFLEET_WEBHOOK_SECRET", "valueFrom": {"secretKeyRef": {
            "name": spec.webhook.secret_ref.name, "key": c.SECRET_KEY_WEBHOOK}}})  # fmt: skip
    container = {
        "name": "listener",
        "image": owner.image,
        "command": ["runnerfleet", "listen"],
        "env": env,
        # GitHub credentials arrive as env from the Secret (github_token or the App keys).
        "envFrom": [{"secretRef": {"name": spec.github.secret_ref.name}}],
        "ports": [
            {"name": "webhook", "containerPort": WEBHOOK_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"},
                           "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"},
                          "periodSeconds": 20, "failureThreshold": 6},
        "resources": spec.resources or {
            "requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True, "readOnlyRootFilesystem": True,
            "seccompProfile": {"type": "RuntimeDefault"}},
    }  # fmt: skip
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(owner, spec, owner.child_name),
        "spec": {
            "replicas": 0 if spec.suspend else spec.replicas,
            "selector": {"matchLabels": {c.LABEL_LISTENER: owner.name,
                                         c.LABEL_COMPONENT: c.COMPONENT_LISTENER}},
            # Only the Lease holder acts, so old and new pods may overlap in a rollout: the
            # standby stays up until its successor is ready.
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels, "annotations": _pod_annotations(owner, spec)},
                "spec": {
                    "serviceAccountName": owner.child_name,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                },
            },
        },
    }  # fmt: skip


def build_service(owner: ListenerIdentity, spec: TeamListenerSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(owner, spec, owner.child_name),
        "spec": {
            "selector": {c.LABEL_LISTENER: owner.name, c.LABEL_COMPONENT: c.COMPONENT_LISTENER},
            "ports": [
                {"name": "webhook", "port": 80, "targetPort": "webhook"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"},
            ],
        },
    }


def build_network_policy(owner: ListenerIdentity, spec: TeamListenerSpec) -> dict[str, Any]:
    """Runner pods of the team: no ingress; egress only DNS, 443 (not the cloud metadata
    address), and the spec's extra allowlist."""
    dns = {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    https = {
        "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [METADATA_CIDR]}}],
        "ports": [{"protocol": "TCP", "port": 443}],
    }
    extra = []
    for rule in spec.extra_egress:
        entry: dict[str, Any] = {"to": [{"ipBlock": {"cidr": rule.cidr}}]}
        if rule.ports:
            entry["ports"] = [{"protocol": "TCP", "port": p} for p in rule.ports]
        extra.append(entry)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(owner, spec, f"{owner.name}-runners"),
        "spec": {
            "podSelector": {"matchLabels": {
                c.LABEL_TEAM: spec.team, c.LABEL_COMPONENT: c.COMPONENT_RUNNER}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [dns, https, *extra],
        },
    }  # fmt: skip


def build_identity_network_policies(
    owner: ListenerIdentity, spec: TeamListenerSpec
) -> list[dict[str, Any]]:
    """One NetworkPolicy per cloud identity endpoint (builders/identity.py), each opening
    only that endpoint, only to the team's runner pods whose scale set opted in to it
    (`spec.identity.egress`, a label on the pods). Rendered for every team, so a scale set
    opting in needs no change here; they select no pod until one does."""
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta(owner, spec, f"{owner.name}-runners-{suffix}"),
            "spec": body,
        }
        for suffix, body in identity_egress_policies(spec.team).items()
    ]


def build_all(
    owner: ListenerIdentity, spec: TeamListenerSpec, standby: bool = False
) -> list[dict[str, Any]]:
    """Every child, in apply order (RBAC before the pods that use it)."""
    return [
        build_service_account(owner, spec),
        build_role(owner, spec),
        build_role_binding(owner, spec),
        build_service(owner, spec),
        build_network_policy(owner, spec),
        *build_identity_network_policies(owner, spec),
        build_deployment(owner, spec, standby),
    ]


def build_children(
    owner: ListenerIdentity, spec: TeamListenerSpec, standby: bool = False
) -> tuple[list[dict[str, Any]], str]:
    """Every child in apply order, and the hash of them all, stamped on the Deployment (last,
    and the one the reconciler reads each round) as its `runnerfleet.dev/spec-hash`
    annotation. The pod template keeps its own spec-only hash, so a new children hash that
    does not touch the pod rolls nothing."""
    children = build_all(owner, spec, standby)
    digest = manifests_hash(children)
    return [*children[:-1], stamped(children[-1], digest)], digest
