"""Fold a scale set's pods, Secrets and GitHub registrations into one record per runner name.

Layer: planning. Pure: takes plain dicts (as the apiserver sends them) and gateway records.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, Protocol

from runnerfleet import conventions as c
from runnerfleet.planning.runners import ObservedRegistration, ObservedRunner


class RegistrationLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def online(self) -> bool: ...
    @property
    def busy(self) -> bool: ...


def epoch(timestamp: str | None) -> float | None:
    if not timestamp:
        return None
    return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def _pod_outcome(pod: dict[str, Any]) -> tuple[str, float | None]:
    """Why a pod ended (OOMKilled, Evicted, Error...) and when."""
    status = pod.get("status", {})
    for cs in status.get("containerStatuses", []) or []:
        if cs.get("name") != c.RUNNER_CONTAINER:
            continue
        term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get(
            "terminated"
        )
        if term:
            return str(term.get("reason") or "Error"), epoch(term.get("finishedAt"))
    return str(status.get("reason") or ""), None


def observe(
    scale_set: str,
    namespace: str,
    pods: Iterable[dict[str, Any]],
    secrets: Iterable[dict[str, Any]],
    registrations: Iterable[RegistrationLike],
    now: float,
) -> list[ObservedRunner]:
    """One ObservedRunner per name seen in any of the three sources."""
    found: dict[str, dict[str, Any]] = {}

    for secret in secrets:
        meta = secret["metadata"]
        found.setdefault(meta["name"], {}).update(
            has_secret=True,
            has_jit=c.SECRET_KEY_JITCONFIG in secret.get("dataKeys", []),
            created_at=epoch(meta.get("creationTimestamp")) or now,
        )
    for pod in pods:
        meta = pod["metadata"]
        name = meta.get("labels", {}).get(c.LABEL_RUNNER, meta["name"])
        entry = found.setdefault(name, {})
        reason, finished = _pod_outcome(pod)
        phase = pod.get("status", {}).get("phase") or "Pending"
        if meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"):
            phase, reason = "Failed", reason or "Deleted"
        protected = (meta.get("annotations") or {}).get(c.ANNOTATION_DO_NOT_DISRUPT) == "true"
        entry.update(
            pod_phase=phase, pod_reason=reason, pod_finished_at=finished, protected=protected
        )
        entry.setdefault("created_at", epoch(meta.get("creationTimestamp")) or now)
    for reg in registrations:
        if not c.is_runner_of(reg.name, scale_set, namespace):
            continue
        entry = found.setdefault(reg.name, {})
        entry["registration"] = ObservedRegistration(reg.id, reg.online, reg.busy)
        entry.setdefault("created_at", now)

    return [ObservedRunner(name=name, **fields) for name, fields in sorted(found.items())]
