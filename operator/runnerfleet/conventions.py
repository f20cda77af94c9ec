"""Names every layer agrees on: API group/version, kinds, labels, annotations, finalizers.

Layer: bottom (imported by everything, imports nothing of ours). No I/O.
"""

from __future__ import annotations

import hashlib
from typing import Final

GROUP: Final = "runnerfleet.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

RUNNER_SCALE_SET_KIND: Final = "RunnerScaleSet"
RUNNER_SCALE_SET_PLURAL: Final = "runnerscalesets"
TEAM_LISTENER_KIND: Final = "TeamListener"
TEAM_LISTENER_PLURAL: Final = "teamlisteners"

LABEL_PREFIX: Final = GROUP
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "runnerfleet"
LABEL_SCALE_SET: Final = f"{LABEL_PREFIX}/scale-set"
LABEL_TEAM: Final = f"{LABEL_PREFIX}/team"

FINALIZER: Final = f"{GROUP}/cleanup"

LABEL_RUNNER: Final = f"{LABEL_PREFIX}/runner"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
COMPONENT_RUNNER: Final = "runner"
ANNOTATION_RUNNER_ID: Final = f"{GROUP}/runner-id"
ANNOTATION_JIT_STORED: Final = f"{GROUP}/jit-stored-at"
SECRET_KEY_JITCONFIG: Final = "jitconfig"  # noqa: S105 (a key name, not a secret)
SECRET_KEY_WEBHOOK: Final = "github_webhook_secret"  # noqa: S105 (a key of a TeamListener's webhook Secret)
RUNNER_CONTAINER: Final = "runner"
DEFAULT_RUNNER_IMAGE: Final = "ghcr.io/actions/actions-runner:latest"
DEFAULT_RUNNER_COMMAND: Final = ("/home/runner/run.sh",)
JIT_ENV: Final = "ACTIONS_RUNNER_INPUT_JITCONFIG"
RUNNER_UID: Final = 1001  # the `runner` user of the official image

# Scale-set names are capped so `<name>-<9 chars>` runner names stay valid label values (<= 63).
MAX_SCALE_SET_NAME: Final = 40
_SUFFIX_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyz0123456789"


def namespace_tag(namespace: str) -> str:
    """4 hex chars derived from the namespace, so equal scale-set names in two namespaces
    registering to one GitHub organisation never produce the same runner name."""
    return hashlib.sha256(namespace.encode()).hexdigest()[:4]


def runner_name(scale_set: str, namespace: str, entropy: int) -> str:
    """`<scale-set>-<ns tag><5 chars>`: the pod, its Secret and its GitHub registration share it.

    `entropy` (any non-negative int, e.g. from `secrets.randbits`) picks the 5-char suffix;
    callers supply it so this stays pure.
    """
    chars = []
    for _ in range(5):
        entropy, digit = divmod(entropy, len(_SUFFIX_ALPHABET))
        chars.append(_SUFFIX_ALPHABET[digit])
    return f"{scale_set}-{namespace_tag(namespace)}{''.join(chars)}"


def is_runner_of(name: str, scale_set: str, namespace: str) -> bool:
    """True if `name` is a runner name `runner_name` could produce for this scale set."""
    prefix = f"{scale_set}-{namespace_tag(namespace)}"
    suffix = name[len(prefix) :]
    return (
        name.startswith(prefix)
        and len(suffix) == 5
        and all(ch in _SUFFIX_ALPHABET for ch in suffix)
    )


def runner_owner(name: str) -> tuple[str, str] | None:
    """(scale-set name, namespace tag) of a name `runner_name` could produce, else None."""
    if len(name) < 11 or name[-10] != "-":
        return None
    scale_set, tag, suffix = name[:-10], name[-9:-5], name[-5:]
    if not all(ch in "0123456789abcdef" for ch in tag) or not all(
        ch in _SUFFIX_ALPHABET for ch in suffix
    ):
        return None
    return scale_set, tag


def github_scale_set_name(scale_set: str, namespace: str) -> str:
    """The name a RunnerScaleSet registers under in GitHub (scale-set protocol).

    Unique in a runner group across namespaces (`<namespace>-<name>`), and the same in every
    cluster, so an active and a standby cluster manage one GitHub scale set (only the active
    one holds its session).
    """
    return f"{namespace}-{scale_set}"


def listener_child_name(team_listener: str) -> str:
    """The TeamListener's Deployment, ServiceAccount, Role(Binding) and Service."""
    return f"{team_listener}-listener"


def listener_lease_name(team_listener: str) -> str:
    """The Lease a TeamListener's replicas elect their acting one with."""
    return f"{team_listener}-listener"


# A listener rewrites an unchanged status.poll this often (its lastSuccessfulPoll is the
# operator's evidence that it polls); the Polling condition allows three of these.
LISTENER_REPORT_SECONDS: Final = 60.0
PROTOCOL_SCALE_SET: Final = "scaleSet"  # GitHub's runner scale-set protocol (Actions service)
PROTOCOL_REST: Final = "rest"  # REST JIT registration + listener polling/webhooks

COMPONENT_LISTENER: Final = "listener"
LABEL_LISTENER: Final = f"{LABEL_PREFIX}/listener"
ANNOTATION_SPEC_HASH: Final = f"{GROUP}/spec-hash"
# On a listener's pod template: a digest of the Secrets its pods read as env (never their data).
ANNOTATION_SECRETS_HASH: Final = f"{GROUP}/secrets-hash"
# Every listener Lease carries these, so the webhook relay watches listener Leases only.
LISTENER_LEASE_SELECTOR: Final = f"{LABEL_COMPONENT}={COMPONENT_LISTENER}"


def listener_lease_labels(team_listener: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY_VALUE, LABEL_COMPONENT: COMPONENT_LISTENER,
            LABEL_LISTENER: team_listener}  # fmt: skip


DEFAULT_OPERATOR_IMAGE: Final = "ghcr.io/runnerfleet/runnerfleet:0.1.0"
FIELD_MANAGER: Final = "runnerfleet"

RUNNER_NODE_POOL_KIND: Final = "RunnerNodePool"
RUNNER_NODE_POOL_PLURAL: Final = "runnernodepools"
# Nodes of a pool carry this label and a NoSchedule taint with the same key, both valued
# with the pool's name; runner pods of scale sets using the pool select and tolerate it.
LABEL_POOL: Final = f"{LABEL_PREFIX}/pool"
TAINT_POOL: Final = LABEL_POOL
KARPENTER_GROUP: Final = "karpenter.sh"
KARPENTER_VERSION: Final = "v1"
KARPENTER_NODEPOOL_PLURAL: Final = "nodepools"
ANNOTATION_DO_NOT_DISRUPT: Final = "karpenter.sh/do-not-disrupt"

# Global operating mode (blue/green): `active` reconciles normally; `standby` creates no
# runners anywhere, removes idle ones and lets busy ones finish. Set by RUNNERFLEET_MODE and
# overridden live by key `mode` of this ConfigMap in the operator's namespace.
CONTROL_CONFIGMAP: Final = "runnerfleet-control"
MODE_ACTIVE: Final = "active"
MODE_STANDBY: Final = "standby"
MODES: Final = (MODE_ACTIVE, MODE_STANDBY)

# Warm capacity: placeholder pods below every runner's priority, so runners preempt them.
WARM_PRIORITY_CLASS: Final = "runnerfleet-warm"
WARM_PRIORITY: Final = -100
COMPONENT_WARM: Final = "warm-capacity"
PLACEHOLDER_IMAGE: Final = "registry.k8s.io/pause:3.10"

# Shared registration token (docs/scale-set-protocol.md "Registration tokens"): the operator
# writes the installation's current runner registration token into this Secret of each
# TeamListener, and the listener trades it for its Actions-service admin token instead of
# fetching its own (a REST request counted against the installation's hourly limit).
COMPONENT_REGISTRATION: Final = "listener-registration"
SECRET_KEY_REGISTRATION_TOKEN: Final = "token"  # noqa: S105 (a key name, not a secret)
SECRET_KEY_REGISTRATION_EXPIRES: Final = "expires_at"  # noqa: S105 (epoch s, not secret)
ANNOTATION_REGISTRATION_EXPIRES: Final = f"{GROUP}/registration-token-expires-at"


def listener_registration_secret_name(team_listener: str) -> str:
    """The Secret holding the registration token shared with a TeamListener's listener."""
    return f"{team_listener}-registration"


# Container modes (issue 13 item 5, docs/container-modes.md).
CONTAINER_MODE_KUBERNETES: Final = "kubernetes"
CONTAINER_MODE_DIND: Final = "dind"
# The runner image's copy of GitHub's runner container hooks (actions/runner-container-hooks).
CONTAINER_HOOKS_PATH: Final = "/home/runner/k8s/index.js"
RUNNER_WORK_DIR: Final = "/home/runner/_work"
# The hooks name the work claim `<runner pod>-work`: the ephemeral volume must be named `work`.
WORK_VOLUME: Final = "work"
JOB_TEMPLATE_DIR: Final = "/home/runner/pod-templates"
JOB_TEMPLATE_KEY: Final = "job.yaml"
# Job pods the hooks create carry this label (never the scale-set label: they are no runners).
LABEL_CONTAINER_JOB_OF: Final = f"{LABEL_PREFIX}/container-job-of"
DEFAULT_DIND_IMAGE: Final = "docker:dind"
DOCKER_GROUP_GID: Final = 123  # the `docker` group of the official runner image


def container_hooks_name(scale_set: str) -> str:
    """The ServiceAccount, Role, RoleBinding and job-template ConfigMap of a scale set in
    kubernetes container mode (one name for the four kinds)."""
    return f"{scale_set}-hooks"


# Runner lifecycle (issue 13, docs/runner-scale-set.md "Rollouts" and "Stuck runners").
# The hash of everything a runner is built from (pod template as rendered, placement and, on
# REST, the labels and group it registers with), on every runner pod: a pod whose hash differs
# from the scale set's current one is outdated and is replaced (idle, pending) or not reused
# (busy: one job, then gone). A label, so `kubectl get pods -L` shows it.
LABEL_TEMPLATE_HASH: Final = f"{GROUP}/template-hash"
# When the operator first saw the runner busy (RFC 3339), set with karpenter.sh/do-not-disrupt:
# maxJobDuration counts from here, and a runner that has it took its one job.
ANNOTATION_BUSY_SINCE: Final = f"{GROUP}/busy-since"
# When the operator first saw that runner's job over while its pod still ran (RFC 3339): the
# pod is reaped a grace period later if it has not ended by itself.
ANNOTATION_JOB_DONE_AT: Final = f"{GROUP}/job-done-at"

# issue 13 items 6-7: cloud identity and hardening (docs/cloud-identity.md,
# docs/runner-scale-set.md "Defaults").
# Names and paths, not secrets (S105); the volume is named unlike the clouds' webhooks' own.
IDENTITY_TOKEN_VOLUME: Final = "runnerfleet-identity-token"  # noqa: S105
IDENTITY_TOKEN_DIR: Final = "/var/run/secrets/runnerfleet.dev/identity"  # noqa: S105
IDENTITY_TOKEN_FILE: Final = f"{IDENTITY_TOKEN_DIR}/token"
IDENTITY_TOKEN_ENV: Final = "RUNNERFLEET_IDENTITY_TOKEN_FILE"  # noqa: S105
# Runner pods of a scale set opting in to an identity endpoint carry this label (value
# "true"); the team's NetworkPolicy for that endpoint selects them.
LABEL_IDENTITY_EGRESS_PREFIX: Final = f"egress.{GROUP}/"
# Default resources of the runner container when the template sets none (operator setting,
# chart value `runnerDefaults.resources`); unset: none, as before.
RUNNER_DEFAULT_RESOURCES_ENV: Final = "RUNNERFLEET_RUNNER_DEFAULT_RESOURCES"
