"""Reconcile one TeamListener: observe → plan (planning/team_listener.py) → apply → status.

Each round reads the TeamListener and its Deployment: from kopf's live body and the operator's
Deployment informer when it runs (no API call; a Deployment change wakes the loop), else with
2 GETs. The six children are applied
(server-side) only when the plan says so: missing, changed, drifted, or the periodic resync
(planning/children.py). Status is built through `TeamListenerStatus` and written only when it
changed (planning/status_diff.py).

Every TeamListener also gets the installation's runner registration token in a Secret of its
own (`<name>-registration`, services/registration_token.py), written only when missing or
when the token it holds has less than 20 min left. Every listener, not only those whose team
has scale sets on the scale-set protocol: the listener's Actions-service client asks for a
token only when it holds a session, and the operator's token is cached per installation, so
a team without such scale sets costs one Secret write every ~40 min and at most the
installation's one shared fetch, while deciding per team would need to list its scale sets
every round and would race a scale set created after the listener. What the Secret holds is
remembered between rounds; it is read back only on the first round and when the children are
(re)applied, so an idle listener costs no API call for it.

Layer: services. I/O only through the gateways.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from runnerfleet import conventions as c
from runnerfleet import logs
from runnerfleet.builders.listener import (
    ListenerIdentity,
    build_children,
    build_registration_secret,
    listener_secrets,
)
from runnerfleet.gateways.github import GitHubError
from runnerfleet.gateways.kubernetes import InvalidError, KubeError, KubeGateway, NotFoundError
from runnerfleet.models.base import invalid_field, parse_duration
from runnerfleet.models.github import InvalidGitHubConfigError
from runnerfleet.models.team_listener import TeamListenerSpec, TeamListenerStatus
from runnerfleet.planning.status_diff import status_patch
from runnerfleet.planning.team_listener import (
    REGISTRATION_RETRY_SECONDS,
    ListenerMemory,
    after_apply,
    fold_status,
    invalid_egress,
    plan,
    registration_due,
    secret_expiry,
    status_wire,
)
from runnerfleet.services.loop import reconcile_loop
from runnerfleet.services.registration_token import ListenerTokens

log = logging.getLogger("runnerfleet.teamlistener")
RESYNC_SECONDS = 3.0  # without the informer (no wake-ups from the Deployment)
IDLE_RESYNC_SECONDS = 30.0  # with it: changes wake the loop; this only catches the rest


@dataclass
class Memory:
    """One loop's memory across rounds (what it last applied, what was refused)."""

    current: ListenerMemory = field(default_factory=ListenerMemory)
    registration: float | None = None  # expiry of the token the registration Secret holds
    registration_known: bool = False  # False: read the Secret back before deciding
    registration_retry_at: float = 0.0  # after a failed fetch or write
    secrets_hash: str | None = None  # of the Secrets the pods read as env, last read
    secrets_missing: str | None = None  # which of them is missing, as a condition message


def listener_image() -> str:
    """The image listener pods run (the operator's own), overridable for air-gapped installs."""
    return os.environ.get("RUNNERFLEET_IMAGE", c.DEFAULT_OPERATOR_IMAGE)


def listener_lease_seconds() -> int | None:
    """RUNNERFLEET_LISTENER_LEASE_SECONDS: the listeners' Lease duration (default: the
    listener's own, 30 s). Shorter fails over faster and costs the apiserver more: the
    holder renews every third of it (docs/team-listener.md)."""
    value = os.environ.get("RUNNERFLEET_LISTENER_LEASE_SECONDS")
    return int(value) if value else None


async def apply_children(
    kube: KubeGateway, children: list[dict[str, Any]]
) -> tuple[dict[str, Any] | None, str | None]:
    """Apply every child in order; the last applied Deployment and the last refusal, if any."""
    deployment = problem = None
    for manifest in children:
        try:
            applied = await kube.apply(manifest)
        except InvalidError as err:
            problem = str(err)
            continue
        if manifest["kind"] == "Deployment":
            deployment = applied
    return deployment, problem


DeploymentReader = Callable[[str, str], Awaitable[dict[str, Any] | None]]
SecretsHash = Callable[[str, Sequence[str]], Awaitable[str]]


def _missing_message(spec: TeamListenerSpec) -> str:
    fields = [f"Secret {spec.github.secret_ref.name} (spec.github.secretRef.name)"]
    if spec.webhook.enabled and spec.webhook.secret_ref is not None:
        fields.append(f"Secret {spec.webhook.secret_ref.name} (spec.webhook.secretRef.name)")
    return f"{' or '.join(fields)} not found: the listener pod cannot start"


async def _secrets_hash(
    read: SecretsHash | None, namespace: str, spec: TeamListenerSpec, memory: Memory
) -> str | None:
    """The digest of the listener's env Secrets; the last one read when a read fails (a
    missing Secret is the listener's own condition to report, not a reason to roll pods)."""
    if read is None:
        return None
    try:
        memory.secrets_hash = await read(namespace, listener_secrets(spec))
        memory.secrets_missing = None
    except NotFoundError:
        memory.secrets_missing = _missing_message(spec)
    except KubeError as err:
        log.debug("listener Secrets of %s not read (%s); pods keep their hash", namespace, err)
    return memory.secrets_hash


async def reconcile_once(
    kube: KubeGateway,
    namespace: str,
    name: str,
    image: str,
    memory: Memory | None = None,
    live: Callable[[], Mapping[str, Any]] | None = None,
    read_deployment: DeploymentReader | None = None,
    mode: str = c.MODE_ACTIVE,
    tokens: ListenerTokens | None = None,
    lease_seconds: int | None = None,
    secrets_hash: SecretsHash | None = None,
) -> None:
    memory = Memory() if memory is None else memory
    body = dict(live()) if live is not None else await kube.get_team_listener(namespace, name)
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return
    # Admitted by the CRD (an older one, or a check it cannot make) but not usable: apply
    # none of the children (a bad extraEgress CIDR would have the NetworkPolicy refused and
    # the Deployment applied without it); the last valid ones run on untouched.
    try:
        spec = TeamListenerSpec.model_validate(body["spec"])
    except ValidationError as err:
        await _report_invalid(kube, body, name, invalid_field(err), read_deployment)
        return
    if (bad := invalid_egress(spec)) is not None:
        await _report_invalid(kube, body, name, bad, read_deployment)
        return
    owner = ListenerIdentity(
        name=name, namespace=namespace, uid=meta["uid"], image=image,
        lease_seconds=lease_seconds,
        secrets_hash=await _secrets_hash(secrets_hash, namespace, spec, memory),
        log_format=logs.configured_format(),
    )  # fmt: skip
    deployment = await (read_deployment or kube.get_deployment)(namespace, owner.child_name)
    children, digest = build_children(owner, spec, standby=mode == c.MODE_STANDBY)
    now = time.time()
    decided = plan(digest, deployment, memory.current, now)
    problem, memory.current = decided.problem, decided.memory
    if decided.apply is not None:
        log.info("applying TeamListener %s/%s children (%s)", namespace, name, decided.apply)
        applied, problem = await apply_children(kube, children)
        deployment = applied or deployment
        memory.current = after_apply(digest, applied, problem, now)
        memory.registration_known = False  # re-check the Secret with the other children
    if tokens is not None:
        await share_registration_token(kube, owner, spec, memory, tokens, now)
    previous = dict(body.get("status") or {})
    status = fold_status(
        (deployment or {}).get("status") if deployment else None, previous,
        int(meta.get("generation", 0)), parse_duration(spec.poll_interval), spec.suspend,
        now, problem, memory.secrets_missing,
    )  # fmt: skip
    await _write_status(kube, body, previous, status)


async def _report_invalid(
    kube: KubeGateway,
    body: dict[str, Any],
    name: str,
    invalid: str,
    read_deployment: DeploymentReader | None,
) -> None:
    """Ready False (InvalidSpec) naming the field, and its Warning Event; nothing applied."""
    namespace, raw = body["metadata"]["namespace"], body.get("spec") or {}
    deployment = await (read_deployment or kube.get_deployment)(
        namespace, c.listener_child_name(name)
    )
    try:
        poll_interval = parse_duration(str(raw.get("pollInterval") or "15s"))
    except ValueError:
        poll_interval = 15.0
    previous = dict(body.get("status") or {})
    status = fold_status(
        (deployment or {}).get("status") if deployment else None, previous,
        int(body["metadata"].get("generation", 0)), poll_interval, raw.get("suspend") is True,
        time.time(), invalid=invalid,
    )  # fmt: skip
    await _write_status(kube, body, previous, status)


WARNED = ("InvalidSpec", "ChildRejected", "SecretNotFound")


async def _write_status(
    kube: KubeGateway, body: dict[str, Any], previous: dict[str, Any], status: TeamListenerStatus
) -> None:
    """A Warning Event when Ready turns False for a reason the team must fix (or its message
    changes), then the status, only if it changed."""
    meta = body["metadata"]
    ready = next((x for x in status.conditions if x.type == "Ready"), None)
    old: dict[str, Any] = next(
        (x for x in previous.get("conditions") or [] if x.get("type") == "Ready"), {}
    )
    if (
        ready is not None and ready.status == "False" and ready.reason in WARNED
        and (old.get("status") != "False" or old.get("message") != ready.message)
    ):  # fmt: skip
        await kube.event(body, "Warning", ready.reason, ready.message)
    patch = status_patch(previous, status_wire(status))
    if patch is not None:
        await kube.patch_team_listener_status(meta["namespace"], meta["name"], patch)


async def share_registration_token(
    kube: KubeGateway,
    owner: ListenerIdentity,
    spec: TeamListenerSpec,
    memory: Memory,
    tokens: ListenerTokens,
    now: float,
) -> None:
    """Write the installation's registration token into the listener's Secret when the plan
    says so. A failure is logged (without the token) and retried a minute later: the listener
    then fetches its own token, as it did before the Secret existed, so nothing stops."""
    where = f"{owner.namespace}/{owner.registration_secret_name}"
    try:
        if not memory.registration_known:
            memory.registration = await _held_expiry(kube, owner)
            memory.registration_known = True
        why = registration_due(memory.registration, now, memory.registration_retry_at)
        if why is None:
            return
        token, expires_at = await tokens(owner.namespace, spec)
        await kube.apply(build_registration_secret(owner, spec, token, expires_at))
    except (GitHubError, KubeError, InvalidGitHubConfigError) as err:
        memory.registration_retry_at = now + REGISTRATION_RETRY_SECONDS
        log.warning("registration Secret %s not written (%s: %s); the listener fetches its own "
                    "token meanwhile", where, type(err).__name__, err)  # fmt: skip
        return
    memory.registration, memory.registration_retry_at = expires_at, 0.0
    log.info("registration Secret %s written (%s; the token expires in %d min)",
             where, why, (expires_at - now) // 60)  # fmt: skip


async def _held_expiry(kube: KubeGateway, owner: ListenerIdentity) -> float | None:
    """When the token in the listener's registration Secret expires (None: no Secret)."""
    try:
        data = await kube.read_secret_data(owner.namespace, owner.registration_secret_name)
    except NotFoundError:
        return None
    return secret_expiry(data)


async def run(
    kube: KubeGateway,
    namespace: str,
    name: str,
    stopped: Callable[[], bool],
    wake: asyncio.Event,
    live: Callable[[], Mapping[str, Any]] | None = None,
    read_deployment: DeploymentReader | None = None,
    mode: Callable[[], str] = lambda: c.MODE_ACTIVE,
    tokens: ListenerTokens | None = None,
    secrets_hash: SecretsHash | None = None,
) -> None:
    """Reconcile until stopped. With `live` (kopf's current body) and `read_deployment` (the
    informer's copy, whose changes set `wake`) a settled round makes no API call and the
    loop resyncs every 30 s ± 20 %; without them it reads both every 3 s. With `tokens` the
    listener's registration Secret is kept fresh (None: not written, e.g. service tests).
    With `secrets_hash`, a change of the Secrets the pods read as env (a rotated App key or
    webhook secret, seen within the credentials cache's 5 min) rolls the pods."""
    image, lease_seconds = listener_image(), listener_lease_seconds()  # read once per loop
    memory = Memory()

    def resync(_: object) -> float:
        if read_deployment is None:
            return RESYNC_SECONDS
        return IDLE_RESYNC_SECONDS * random.uniform(0.8, 1.2)  # noqa: S311 (jitter)

    await reconcile_loop(
        f"TeamListener {namespace}/{name}",
        lambda: reconcile_once(
            kube, namespace, name, image, memory, live, read_deployment, mode(), tokens,
            lease_seconds, secrets_hash,
        ),
        wake, stopped, resync,
    )  # fmt: skip
