"""Status of a RunnerScaleSet as a pure fold over the plan and the round's problems.

Layer: planning. Pure.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from runnerfleet.models.base import epoch
from runnerfleet.planning.audit import AuditEvent
from runnerfleet.planning.runners import FAILING_AFTER, Memory, Plan, State


@dataclass(frozen=True)
class Problem:
    """Something that kept this round from converging, for a condition (and an Event)."""

    condition: str  # condition type it sets to False/True
    reason: str
    message: str


@dataclass(frozen=True)
class RoundOutcome:
    plan: Plan | None  # None when nothing could be planned (bad config, GitHub down)
    problems: list[Problem] = field(default_factory=list)
    scaled: bool = False
    standby: bool = False  # the operator is in global standby (no new runners anywhere)
    template_hash: str | None = None  # the current runner template's (None: not known)
    kept_busy: frozenset[str] = frozenset()  # runners whose removal GitHub refused (busy)
    # New runners were held back this round (node pool, ServiceAccount, container mode...):
    # the plan's creations did not happen.
    creates_blocked: bool = False
    # Steps the round took that the plan does not show (e.g. rollout steps), posted as Events
    # after the plan's own (planning/audit.py: `audit.normal(reason, message)`).
    audit: tuple[AuditEvent, ...] = ()
    # When the next scheduled floor starts or ends (epoch seconds): the loop wakes then.
    wake_at: float | None = None


def rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def memory_from_status(status: dict[str, Any]) -> Memory:
    return Memory(
        scale_down_pending_since=epoch(status.get("scaleDownPendingSince")),
        consecutive_failures=int(status.get("consecutiveFailures", 0)),
        last_failure_at=epoch(status.get("lastFailureTime")),
    )


def condition(
    previous: list[dict[str, Any]],
    ctype: str,
    ok: bool,
    reason: str,
    message: str,
    generation: int,
    now: float,
) -> dict[str, Any]:
    """A condition of `ctype`; lastTransitionTime kept from `previous` unless status flipped."""
    status = "True" if ok else "False"
    old = next((c for c in previous if c.get("type") == ctype), None)
    if old is None or old.get("status") != status:
        since = rfc3339(now)
    else:
        since = str(old.get("lastTransitionTime") or rfc3339(now))
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since,
    }


def build_status(
    outcome: RoundOutcome, previous: dict[str, Any], generation: int, now: float
) -> dict[str, Any]:
    """The status patch for this round (never includes `demand`: the listener owns it)."""
    prev_conditions: list[dict[str, Any]] = previous.get("conditions", []) or []
    by_type = {p.condition: p for p in outcome.problems}
    plan = outcome.plan
    status: dict[str, Any] = {"observedGeneration": generation}

    def cond(ctype: str, ok_reason: str, ok_message: str) -> dict[str, Any]:
        problem = by_type.get(ctype)
        if problem:
            return condition(
                prev_conditions, ctype, False, problem.reason, problem.message, generation, now
            )
        return condition(prev_conditions, ctype, True, ok_reason, ok_message, generation, now)

    conditions = [
        cond("ConfigValid", "Valid", "spec and credentials are usable"),
        cond("GitHubReachable", "Reachable", "GitHub answered the last round"),
        cond("PodsAdmitted", "Admitted", "runner pods are accepted by the apiserver"),
        cond("NodePoolReady", "Resolved", "spec.nodePool is usable (or unset)"),
    ]
    standby_message = (
        "the operator is in standby: no new runners; idle ones are removed, busy ones finish"
        if outcome.standby
        else "the operator is active"
    )
    reason = "OperatorStandby" if outcome.standby else "OperatorActive"
    conditions.append(
        condition(
            prev_conditions, "Standby", outcome.standby, reason, standby_message, generation, now
        )
    )
    if plan is not None:
        counts = plan.counts
        status.update(
            desired=plan.desired,
            pending=counts[State.REGISTERING] + counts[State.STARTING] + counts[State.PENDING],
            idle=counts[State.IDLE],
            busy=counts[State.BUSY],
            failed=counts[State.FAILED] + counts[State.KEPT],
            consecutiveFailures=plan.memory.consecutive_failures,
            lastFailureTime=_opt(plan.memory.last_failure_at),
            scaleDownPendingSince=_opt(plan.memory.scale_down_pending_since),
        )
        if plan.updated is not None:
            status.update(updated=plan.updated, outdated=plan.outdated)
        if outcome.template_hash is not None:
            status["templateHash"] = outcome.template_hash
        failing = plan.memory.consecutive_failures >= FAILING_AFTER
        last = plan.failures[-1][1] if plan.failures else previous.get("lastFailureReason", "")
        if plan.failures:
            status["lastFailureReason"] = last
        conditions.append(
            condition(
                prev_conditions,
                "RunnersHealthy",
                not failing,
                "RunnersFailing" if failing else "Healthy",
                (
                    f"{plan.memory.consecutive_failures} runner failures in a row (last: {last}); "
                    "new runners are created with backoff"
                )
                if failing
                else "runners register and run",
                generation,
                now,
            )
        )
        if outcome.scaled:
            status["lastScaleTime"] = rfc3339(now)
    ready, reason, message = _readiness(outcome)
    conditions.insert(
        0, condition(prev_conditions, "Ready", ready, reason, message, generation, now)
    )
    status["conditions"] = conditions
    return status


def _readiness(outcome: RoundOutcome) -> tuple[bool, str, str]:
    """Ready claims only what is there: no problem this round and at least `desired` runners
    online (idle + busy). Runners still starting, or held back by the failure backoff, are
    not there yet: Ready was True ("runners match the desired count") with desired 7 and no
    runner at all (issue 12). Messages carry no counts (they are in the status already), so
    a steady scale set writes the same condition every round."""
    if outcome.problems:
        return False, outcome.problems[0].reason, outcome.problems[0].message
    plan = outcome.plan
    if plan is None:
        return False, "Unknown", "not reconciled yet"
    online = plan.counts[State.IDLE] + plan.counts[State.BUSY]
    if plan.rolling_out:
        # Until no outdated runner can take a job; outdated busy ones only finish theirs,
        # so they do not hold Ready (a long job would hold it for hours).
        return False, "RollingOut", (
            "the runner template changed: outdated idle and pending runners are being "
            "replaced (status.updated / status.outdated)"
        )  # fmt: skip
    if online >= plan.desired:
        return True, "Reconciled", "runners match the desired count"
    if plan.backing_off_until is not None:
        return False, "BackingOff", (
            "fewer runners online than desired; new runners wait for the failure backoff "
            f"(until {rfc3339(plan.backing_off_until)})"
        )  # fmt: skip
    return False, "ScalingUp", "fewer runners online than desired; new ones are starting"


def _opt(ts: float | None) -> str | None:
    return rfc3339(ts) if ts is not None else None
