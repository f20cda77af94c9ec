"""Leader election over a coordination.k8s.io/v1 Lease: who may hold it, and what to write.

Layer: planning. Pure: the clock comes in as `now`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from runnerfleet.models.base import epoch


@dataclass(frozen=True)
class LeaseView:
    holder: str | None
    renewed_at: float | None
    duration: float
    transitions: int

    @classmethod
    def of(cls, lease: dict[str, Any] | None) -> LeaseView:
        spec = (lease or {}).get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or None,
            renewed_at=epoch(spec.get("renewTime")),
            duration=float(spec.get("leaseDurationSeconds") or 0),
            transitions=int(spec.get("leaseTransitions") or 0),
        )


def may_take(view: LeaseView, identity: str, now: float) -> bool:
    """Free, already ours, or expired (its holder missed renewing for a whole duration)."""
    if view.holder in (None, identity) or view.renewed_at is None:
        return True
    return now > view.renewed_at + view.duration


def expires_in(view: LeaseView, now: float) -> float:
    """Seconds until another holder's lease expires (0 if it has): when to try again."""
    if view.holder is None or view.renewed_at is None:
        return 0.0
    return max(0.0, view.renewed_at + view.duration - now)


def _micro(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_spec(view: LeaseView, identity: str, now: float, duration: int) -> dict[str, Any]:
    """The spec that claims or renews the lease for `identity`."""
    spec: dict[str, Any] = {
        "holderIdentity": identity,
        "leaseDurationSeconds": duration,
        "renewTime": _micro(now),
        "leaseTransitions": view.transitions,
    }
    if view.holder != identity:
        spec["acquireTime"] = _micro(now)
        spec["leaseTransitions"] = view.transitions + (1 if view.holder else 0)
    return spec


def released_spec(view: LeaseView) -> dict[str, Any]:
    """Give the lease up on a clean stop, so a standby replica takes over at once."""
    return {"holderIdentity": None, "leaseTransitions": view.transitions, "renewTime": None}
