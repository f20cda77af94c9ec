"""TeamListener status as a pure fold over its Deployment's status and the listener's report.

Layer: planning. Pure.
"""

from __future__ import annotations

from typing import Any

from runnerfleet.planning.observe import epoch
from runnerfleet.planning.status import condition


def build_listener_status(
    deployment: dict[str, Any] | None,
    previous: dict[str, Any],
    generation: int,
    poll_interval: float,
    suspended: bool,
    now: float,
) -> dict[str, Any]:
    """listenerReady and conditions (Ready, Polling, RateLimited); never touches `poll`."""
    conds: list[dict[str, Any]] = previous.get("conditions", []) or []
    ready = bool(deployment) and int((deployment or {}).get("readyReplicas") or 0) >= 1
    poll = previous.get("poll") or {}
    last = epoch(poll.get("lastSuccessfulPoll"))
    limited_until = epoch(poll.get("rateLimitedUntil"))
    polling = last is not None and now - last <= max(3 * poll_interval, 30.0)
    limited = limited_until is not None and limited_until > now
    if suspended:
        ready_reason, ready_msg = "Suspended", "spec.suspend is true: the listener is scaled to 0"
    elif ready:
        ready_reason, ready_msg = "ListenerReady", "the listener pod is ready"
    else:
        ready_reason, ready_msg = "ListenerNotReady", "waiting for the listener pod to be ready"
    return {
        "listenerReady": ready,
        "observedGeneration": generation,
        "conditions": [
            condition(conds, "Ready", ready and not suspended, ready_reason, ready_msg,
                  generation, now),
            condition(conds, "Polling", polling and not limited,
                  "RateLimited" if limited else ("Polling" if polling else "NoRecentPoll"),
                  (f"GitHub rate limit exhausted until {poll.get('rateLimitedUntil')}; "
                   "backing off, existing runners untouched") if limited else
                  (f"last successful poll {poll.get('lastSuccessfulPoll')}" if polling
                   else "no successful poll recently"),
                  generation, now),
        ],
    }  # fmt: skip
