"""Cloud identity of runner pods (issue 13 item 6, docs/cloud-identity.md): the
ServiceAccount they run as, an optional projected token with an audience, and the team's
NetworkPolicies that open an identity endpoint to the scale sets that opt in.

What the operator renders and what it leaves to the clouds' admission webhooks:
- it sets `serviceAccountName` and keeps `automountServiceAccountToken: false` (no token for
  the Kubernetes API; the template may still ask for one);
- with `tokenAudience` it projects one token of that audience into the runner container at
  `c.IDENTITY_TOKEN_FILE` and names it in `c.IDENTITY_TOKEN_ENV`: a name of our own, so
  the EKS and Azure webhooks (which skip a container already carrying their variables or
  volume names) still inject theirs;
- it sets none of the clouds' variables (AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE,
  AZURE_FEDERATED_TOKEN_FILE, AWS_CONTAINER_*): their webhooks own them.

Layer: builders. Pure.
"""

from __future__ import annotations

from typing import Any, Final

from runnerfleet import conventions as c
from runnerfleet.models.runner_scale_set import RunnerScaleSetSpec


def _to(cidrs: list[str], port: int) -> dict[str, Any]:
    return {
        "to": [{"ipBlock": {"cidr": cidr}} for cidr in cidrs],
        "ports": [{"protocol": "TCP", "port": port}],
    }


# Each endpoint's egress rules, from the clouds' documentation (docs/cloud-identity.md):
# - EKS Pod Identity agent: 169.254.170.23 (IPv4) and fd00:ec2::23 (IPv6), HTTP on 80;
# - GKE metadata server: 169.254.169.254:80 as pods dial it (Dataplane V2 evaluates the
#   policy before NAT), and 169.254.169.252:988 where the iptables dataplane has already
#   DNATed it by the time the policy is evaluated.
# The metadata address on AWS or Azure is the node's instance identity: never opened here.
ENDPOINT_EGRESS: Final[dict[str, list[dict[str, Any]]]] = {
    "awsPodIdentity": [_to(["169.254.170.23/32", "fd00:ec2::23/128"], 80)],
    "gkeMetadataServer": [
        _to(["169.254.169.254/32"], 80),
        _to(["169.254.169.252/32"], 988),
    ],
}
_POLICY_SUFFIX: Final = {"awsPodIdentity": "aws-pod-identity", "gkeMetadataServer": "gke-metadata"}


def service_account_name(spec: RunnerScaleSetSpec) -> str | None:
    """The ServiceAccount runner pods run as (None: the namespace's default, with no token)."""
    return spec.identity.service_account_name if spec.identity is not None else None


def egress_label(endpoint: str) -> str:
    """The runner pod label that the team's policy for `endpoint` selects."""
    return f"{c.LABEL_IDENTITY_EGRESS_PREFIX}{endpoint}"


def identity_labels(spec: RunnerScaleSetSpec) -> dict[str, str]:
    endpoints = spec.identity.egress if spec.identity is not None else []
    return {egress_label(e): "true" for e in endpoints}


def apply_identity(pod: dict[str, Any], spec: RunnerScaleSetSpec) -> None:
    """Edit a rendered runner pod in place: the ServiceAccount, the projected token and the
    egress opt-in labels. Without `spec.identity` only labels a template tried to set are
    dropped (an opt-in is the scale set's field, not a template label)."""
    meta = pod["metadata"]
    labels = {k: v for k, v in meta["labels"].items()
              if not k.startswith(c.LABEL_IDENTITY_EGRESS_PREFIX)}  # fmt: skip
    meta["labels"] = {**labels, **identity_labels(spec)}
    ident = spec.identity
    if ident is None:
        return
    pod_spec = pod["spec"]
    pod_spec["serviceAccountName"] = ident.service_account_name
    pod_spec.pop("serviceAccount", None)  # the deprecated alias must not disagree
    if ident.token_audience is None:
        return
    projection = {
        "audience": ident.token_audience,
        "expirationSeconds": ident.token_expiration_seconds,
        "path": "token",
    }
    volumes = [v for v in pod_spec.get("volumes", []) if v.get("name") != c.IDENTITY_TOKEN_VOLUME]
    volumes.append({"name": c.IDENTITY_TOKEN_VOLUME,
                    "projected": {"sources": [{"serviceAccountToken": projection}]}})  # fmt: skip
    pod_spec["volumes"] = volumes
    runner = next(x for x in pod_spec["containers"] if x.get("name") == c.RUNNER_CONTAINER)
    mounts = [m for m in runner.get("volumeMounts", []) if m.get("name") != c.IDENTITY_TOKEN_VOLUME]
    mounts.append({"name": c.IDENTITY_TOKEN_VOLUME, "mountPath": c.IDENTITY_TOKEN_DIR,
                   "readOnly": True})  # fmt: skip
    runner["volumeMounts"] = mounts
    env = [e for e in runner.get("env", []) if e.get("name") != c.IDENTITY_TOKEN_ENV]
    runner["env"] = [*env, {"name": c.IDENTITY_TOKEN_ENV, "value": c.IDENTITY_TOKEN_FILE}]


def identity_egress_policies(team: str) -> dict[str, dict[str, Any]]:
    """Name suffix -> NetworkPolicy spec, one per identity endpoint: it selects the team's
    runner pods carrying that endpoint's opt-in label and allows exactly its addresses and
    ports. Policies add up, so the team's main policy stays closed for every other pod."""
    return {
        _POLICY_SUFFIX[endpoint]: {
            "podSelector": {"matchLabels": {
                c.LABEL_TEAM: team, c.LABEL_COMPONENT: c.COMPONENT_RUNNER,
                egress_label(endpoint): "true"}},
            "policyTypes": ["Egress"],
            "egress": rules,
        }
        for endpoint, rules in ENDPOINT_EGRESS.items()
    }  # fmt: skip
