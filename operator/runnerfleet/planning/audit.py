"""The audit trail of a RunnerScaleSet round: which Events it posts, and what they say.

A round's plan becomes at most a few Events, each summing up one kind of step with its counts
("creating 3 runners (desired 5, busy 2, idle 0, pending 0)"), never one per runner where a
round acts on many:

- `ScaledUp` (Normal): the round creates more runners than it replaces, i.e. the scale set
  grows. Replacing a runner that finished its one job is routine and posts nothing.
- `ScaledDown` (Normal): the round removes surplus idle or pending runners.
- `RunnerReplaced` (Normal): a runner removed for a reason worth an audit line (maxRunnerAge,
  a rollout, maxJobDuration, an idle runner's pod deleted or its node lost, ...), naming the
  runner and why; at most NAMED_PER_ROUND named, then one summary of the rest by reason.
- `RunnerFailed` (Warning): a runner that failed (and is replaced); the same bound.
- `MaxJobDuration` (Warning): a busy runner removed past spec.maxJobDuration (its job ends),
  naming how long it was busy; the same bound.
- rollout steps (`rollout_events`): `RolloutStarted` when the runner template's hash
  changes and runners on the old one remain, `RolloutComplete` when no outdated runner can
  take a job any more; and any other step a caller describes: `normal(reason, message)`.

Events are Kubernetes writes, so a round's count is bounded whatever the number of runners:
2 + 3 x (NAMED_PER_ROUND + 1) plus the caller's own. Repeats across rounds are folded by the
gateway (see gateways/event_series.py).

Layer: planning. Pure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runnerfleet.planning.runners import Action, CreateRunners, Plan, RemoveRunner, State

NAMED_PER_ROUND = 5  # runner-naming Events per kind per round; the rest in one summary

# Removals that are the runner's normal end, or a step counted elsewhere: no RunnerReplaced.
ROUTINE = frozenset({"JobCompleted", "RegistrationGone", "Orphaned", "ScaleDown"})

# Why a runner was replaced, in words (a new RemoveRunner reason needs one line here; one
# missing is shown by its reason alone).
WHY: dict[str, str] = {
    "MaxRunnerAge": "idle longer than spec.maxRunnerAge",
    "Outdated": "its pod template is outdated (rollout)",
    "MaxJobDuration": "busy longer than spec.maxJobDuration",
    "JobFinished": "GitHub reports its job finished but its pod kept running",
    "RegistrationTimeout": "not online within spec.registrationTimeout",
    "RunnerLost": "its runner process is gone (node lost)",
    "PodLost": "its pod is gone",
    "Deleted": "its pod was deleted",
    "Evicted": "its pod was evicted",
    "OOMKilled": "its container ran out of memory",
    "Error": "its container exited with an error",
    "PodFailed": "its pod failed",
}


@dataclass(frozen=True)
class AuditEvent:
    type: str  # "Normal" or "Warning"
    reason: str
    message: str


def normal(reason: str, message: str) -> AuditEvent:
    """A Normal Event for a step the planner does not know of (e.g. a rollout step)."""
    return AuditEvent("Normal", reason, message)


def why(reason: str) -> str:
    return f"{reason}: {WHY[reason]}" if reason in WHY else reason


def round_events(
    plan: Plan | None,
    actions: Sequence[Action] | None = None,
    creates_blocked: bool = False,
    extra: Iterable[AuditEvent] = (),
) -> list[AuditEvent]:
    """The Events for one round: `actions` are those executed (default: the plan's);
    `creates_blocked`: the round created nothing (e.g. its node pool is missing)."""
    if plan is None:
        return list(extra)
    acted = list(plan.actions if actions is None else actions)
    removals = [a for a in acted if isinstance(a, RemoveRunner)]
    failed = dict(plan.failures)
    events = _scaling(plan, acted, removals, creates_blocked)
    events += _named(
        "Warning", "RunnerFailed", [(n, r) for n, r in plan.failures], "failed",
        lambda name, reason: f"runner {name}: {reason}",
    )  # fmt: skip
    # A job ended for running too long is a Warning of its own, naming how long it ran.
    events += _named(
        "Warning", "MaxJobDuration", list(plan.reaped), "ended at maxJobDuration",
        lambda name, said: f"runner {name}: {said}",
    )  # fmt: skip
    reaped = dict(plan.reaped)
    replaced = [
        (a.name, a.reason) for a in removals
        if a.reason not in ROUTINE and a.name not in failed and a.name not in reaped
    ]  # fmt: skip
    events += _named(
        "Normal", "RunnerReplaced", replaced, "replaced",
        lambda name, reason: f"runner {name} replaced: {why(reason)}",
    )  # fmt: skip
    return [*events, *extra]


def _scaling(
    plan: Plan, acted: list[Action], removals: list[RemoveRunner], creates_blocked: bool
) -> list[AuditEvent]:
    created = 0 if creates_blocked else sum(
        a.count for a in acted if isinstance(a, CreateRunners)
    )  # fmt: skip
    scaled_down = sum(1 for a in removals if a.reason == "ScaleDown")
    # Runners this round ends for any other reason are replaced by its creations.
    replacing = len(removals) - scaled_down
    counts = _counts(plan)
    events = []
    if created > replacing:
        also = f"; {replacing} of them replace removed runners" if replacing else ""
        events.append(normal("ScaledUp", f"creating {_runners(created)} ({counts}){also}"))
    if scaled_down:
        events.append(normal("ScaledDown", f"removing {_runners(scaled_down)} ({counts})"))
    return events


def _counts(plan: Plan) -> str:
    c = plan.counts
    pending = c[State.PENDING] + c[State.STARTING] + c[State.REGISTERING]
    return f"desired {plan.desired}, busy {c[State.BUSY]}, idle {c[State.IDLE]}, pending {pending}"


def _runners(n: int) -> str:
    return f"{n} runner" if n == 1 else f"{n} runners"


def _named(
    type_: str,
    reason: str,
    runners: list[tuple[str, str]],
    verb: str,
    say: Callable[[str, str], str],
) -> list[AuditEvent]:
    """One Event per runner up to NAMED_PER_ROUND, then one for the rest, by reason."""
    events = [AuditEvent(type_, reason, say(n, r)) for n, r in runners[:NAMED_PER_ROUND]]
    rest = runners[NAMED_PER_ROUND:]
    if rest:
        by_reason = Counter(r for _, r in rest)
        parts = ", ".join(f"{count} {r}" for r, count in sorted(by_reason.items()))
        more = f"{len(rest)} more {'runner' if len(rest) == 1 else 'runners'} {verb}: {parts}"
        events.append(AuditEvent(type_, reason, more))
    return events


def rollout_events(
    previous: Mapping[str, Any], plan: Plan | None, template_hash: str | None
) -> list[AuditEvent]:
    """The rollout's steps, from the status the last round wrote (`previous`) and this
    round's plan: started (the hash moved and outdated runners remain) and complete (the
    last outdated idle or pending runner is gone). One Event each per rollout."""
    if plan is None or template_hash is None or plan.outdated is None:
        return []
    before = previous.get("templateHash")
    was_rolling = any(
        c.get("type") == "Ready" and c.get("reason") == "RollingOut"
        for c in previous.get("conditions") or []
    )
    events = []
    if before is not None and before != template_hash and plan.outdated:
        events.append(normal(
            "RolloutStarted",
            f"runner template {before} -> {template_hash}: {plan.outdated} outdated runners; "
            "idle and pending ones are replaced, busy ones finish their job",
        ))  # fmt: skip
    if was_rolling and not plan.rolling_out:
        still = f"; {plan.outdated} outdated busy runners finish their job" if plan.outdated else ""
        events.append(normal(
            "RolloutComplete", f"every new job runs on template {template_hash}{still}"
        ))  # fmt: skip
    return events
