"""TeamListener decisions: when to apply the listener's children, and its status as a pure fold.

The reconciler (services/team_listener.py) reads the TeamListener and its Deployment (the
anchor of its children, planning/children.py), has the builders render the six children with
their hash stamped on the Deployment, and asks `plan` whether to apply them this round:
only when they are missing, changed, drifted or due for the periodic resync. A child the
apiserver refused (422) is not re-sent every round: the refusal is remembered with the hash
it was for and retried when the spec changes or at the resync interval; meanwhile Ready stays
False with reason ChildRejected.

`fold_status` builds the `TeamListenerStatus` from the Deployment's status and the listener's
own poll report; it owns `listenerReady`, `observedGeneration` and `conditions`, never `poll`.

The shared registration token (docs/scale-set-protocol.md, "Registration tokens"): the
operator writes the installation's token into the listener's Secret only when the Secret is
missing or the token it holds has less than `OPERATOR_MARGIN` left (`registration_due`), so
about twice an hour per listener, never per round; the listener uses the Secret's token while it
has more than `LISTENER_MARGIN` left and otherwise fetches its own (`shared_token`).

Layer: planning. Pure.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from runnerfleet import conventions as c
from runnerfleet.models.base import epoch
from runnerfleet.models.team_listener import TeamListenerSpec, TeamListenerStatus
from runnerfleet.planning.children import RESYNC_SECONDS, Applied, adoptions, apply_reason
from runnerfleet.planning.status import condition

OWNED = ("listenerReady", "observedGeneration", "conditions")
ANCHOR = "listener"
# A registration token lasts 1 h. The operator hands one on (and reuses its cached one) while
# it has more than 20 min left, so a listener that reads it just before the operator replaces
# it still holds one for 20 min: far more than the admin-token exchange needs.
OPERATOR_MARGIN = 20 * 60.0
# The listener trades the token for an admin token at once; 2 min covers a slow exchange.
LISTENER_MARGIN = 2 * 60.0
REGISTRATION_RETRY_SECONDS = 60.0  # after a failed fetch or write (no hot loop on GitHub)


@dataclass(frozen=True)
class Rejected:
    """The apiserver refused a child of the children set with this hash."""

    hash: str
    message: str
    at: float


@dataclass(frozen=True)
class ListenerMemory:
    """What the reconciler remembers between rounds (in process; empty after a restart)."""

    applied: Applied | None = None
    rejected: Rejected | None = None


@dataclass(frozen=True)
class ListenerPlan:
    apply: str | None  # why the children are applied this round (None: they are not)
    problem: str | None  # a refusal still standing (Ready False, ChildRejected)
    memory: ListenerMemory = field(default_factory=ListenerMemory)  # if nothing is applied


def plan(
    desired_hash: str,
    deployment: dict[str, Any] | None,
    memory: ListenerMemory,
    now: float,
    resync: float = RESYNC_SECONDS,
) -> ListenerPlan:
    """Apply the children, or not, this round (see planning/children.py for the rule)."""
    refused = memory.rejected
    if refused is not None and refused.hash == desired_hash and now - refused.at < resync:
        return ListenerPlan(None, refused.message, memory)
    reason = apply_reason(desired_hash, deployment, memory.applied, now, resync)
    if reason is not None:
        return ListenerPlan(reason, None, memory)
    known = {} if memory.applied is None else {ANCHOR: memory.applied}
    adopted = adoptions([(ANCHOR, desired_hash, deployment)], known, now).get(ANCHOR)
    return ListenerPlan(None, None, ListenerMemory(adopted or memory.applied, None))


def after_apply(
    desired_hash: str, deployment: dict[str, Any] | None, problem: str | None, now: float
) -> ListenerMemory:
    """Memory after applying: the anchor's new generation, and the refusal if there was one."""
    generation = ((deployment or {}).get("metadata") or {}).get("generation")
    applied = Applied(desired_hash, None if generation is None else int(generation), now)
    rejected = Rejected(desired_hash, problem, now) if problem else None
    return ListenerMemory(applied, rejected)


def invalid_egress(spec: TeamListenerSpec) -> str | None:
    """The first `extraEgress` CIDR a NetworkPolicy's ipBlock would refuse, as
    `spec.extraEgress[i].cidr: why`; None if all are CIDRs (host bits may be set, as
    Kubernetes allows)."""
    for i, rule in enumerate(spec.extra_egress):
        try:
            if "/" not in rule.cidr:
                raise ValueError("no prefix length")
            ipaddress.ip_network(rule.cidr, strict=False)
        except ValueError as err:
            return f"spec.extraEgress[{i}].cidr: {rule.cidr!r} is not a CIDR ({err})"
    return None


def fold_status(
    deployment: dict[str, Any] | None,
    previous: dict[str, Any],
    generation: int,
    poll_interval: float,
    suspended: bool,
    now: float,
    problem: str | None = None,
    missing: str | None = None,
    invalid: str | None = None,
) -> TeamListenerStatus:
    """listenerReady and conditions (Ready, Polling); `deployment` is the Deployment's status.

    Messages never carry timestamps that move every poll (the time of the last poll is in
    `status.poll`), so a steady listener's status does not change and is not rewritten.
    """
    conds: list[dict[str, Any]] = previous.get("conditions", []) or []
    ready = bool(deployment) and int((deployment or {}).get("readyReplicas") or 0) >= 1
    poll = previous.get("poll") or {}
    last = epoch(poll.get("lastSuccessfulPoll"))
    limited_until = epoch(poll.get("rateLimitedUntil"))
    # The listener rewrites an unchanged report once a LISTENER_REPORT_SECONDS: three missed.
    window = max(3 * poll_interval, 3 * c.LISTENER_REPORT_SECONDS)
    polling = last is not None and now - last <= window
    limited = limited_until is not None and limited_until > now
    if invalid:
        # The spec fails a check the CRD cannot make (the model, or `invalid_egress`):
        # nothing was applied; the children of the last valid spec, if any, run on untouched.
        ready_reason, ready_msg = "InvalidSpec", f"{invalid}; nothing applied until it is fixed"
        problem = ready_msg
    elif problem:
        ready_reason, ready_msg = "ChildRejected", problem
    elif missing and not suspended:
        # A Secret the pods read as env is missing: a kubelet never starts the container
        # (CreateContainerConfigError), whatever the Deployment says.
        ready_reason, ready_msg = "SecretNotFound", missing
    elif suspended:
        ready_reason, ready_msg = "Suspended", "spec.suspend is true: the listener is scaled to 0"
    elif ready:
        ready_reason, ready_msg = "ListenerReady", "the listener pod is ready"
    else:
        ready_reason, ready_msg = "ListenerNotReady", "waiting for the listener pod to be ready"
    return TeamListenerStatus.model_validate({
        "listenerReady": ready,
        "observedGeneration": generation,
        "conditions": [
            condition(conds, "Ready", ready and not suspended and not problem and not missing,
                      ready_reason,
                      ready_msg, generation, now),
            condition(conds, "Polling", polling and not limited,
                  "RateLimited" if limited else ("Polling" if polling else "NoRecentPoll"),
                  (f"GitHub rate limit exhausted until {poll.get('rateLimitedUntil')}; "
                   "backing off, existing runners untouched") if limited else
                  (f"the listener polled GitHub successfully within the last {window:.0f}s"
                   if polling else "no successful poll recently"),
                  generation, now),
        ],
    })  # fmt: skip


def status_wire(status: TeamListenerStatus) -> dict[str, Any]:
    """The keys this reconciler owns, camelCase (never `poll`: the listener writes it)."""
    dumped = status.model_dump(by_alias=True, mode="json")
    return {key: dumped.get(key) for key in OWNED}


def registration_due(
    held_expiry: float | None, now: float, retry_at: float = 0.0, margin: float = OPERATOR_MARGIN
) -> str | None:
    """Why the listener's registration Secret is written this round, or None.

    `held_expiry` is when the token the Secret holds expires (None: there is no Secret, or
    it has no readable expiry). `retry_at` holds the next attempt back after a failure.
    """
    if now < retry_at:
        return None
    if held_expiry is None:
        return "missing"
    if held_expiry - now < margin:
        return "expiring"
    return None


def secret_expiry(data: dict[str, str] | None) -> float | None:
    """The expiry (epoch s) a registration Secret's data records, None if absent or unreadable."""
    if not data:
        return None
    try:
        return float(data.get(c.SECRET_KEY_REGISTRATION_EXPIRES, ""))
    except ValueError:
        return None


@dataclass(frozen=True)
class SharedToken:
    """The listener's choice: the shared token (`token`, `expires_at`), or why not (`why`)."""

    token: str | None = field(default=None, repr=False)
    expires_at: float = 0.0
    why: str = ""


def shared_token(
    data: dict[str, str] | None, now: float, margin: float = LISTENER_MARGIN
) -> SharedToken:
    """Use the Secret's token if it has more than `margin` left; else say why not (the
    reason never contains the token)."""
    if data is None:
        return SharedToken(why="the registration Secret does not exist (yet)")
    token = data.get(c.SECRET_KEY_REGISTRATION_TOKEN) or ""
    expires = secret_expiry(data)
    if not token or expires is None:
        return SharedToken(why="the registration Secret has no token or no expiry")
    if expires - now <= margin:
        return SharedToken(why=f"the shared token expires in {max(0, int(expires - now))} s")
    return SharedToken(token, expires)
