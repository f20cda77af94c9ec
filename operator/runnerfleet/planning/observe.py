"""Fold a scale set's pods, Secrets and GitHub registrations into one record per runner name.

Layer: planning. Pure: takes plain dicts (as the apiserver sends them) and gateway records.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any, Protocol

from runnerfleet import conventions as c
from runnerfleet.models.base import epoch
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


class SeenLike(Protocol):
    """A registration and when GitHub showed it so (services.registrations.Seen)."""

    @property
    def registration(self) -> RegistrationLike: ...
    @property
    def at(self) -> float: ...
    @property
    def first_at(self) -> float: ...
    @property
    def ours(self) -> bool: ...

    # Optional `ran: bool` (Seen has it): seen online or busy before; absent, False.


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


def _runner_container(pod: dict[str, Any]) -> dict[str, Any]:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == c.RUNNER_CONTAINER:
            return dict(cs)
    return {}


def _runner_process(pod: dict[str, Any], phase: str) -> dict[str, Any]:
    """What the runner container itself is doing, which the pod's phase may hide:
    - started_at: when it started (the registration timeout counts from here, not from the
      pod's creation: a pod waiting minutes for a node is not a runner failing to register);
    - waiting_reason: why it has not started (ImagePullBackOff, CreateContainerConfigError);
    - and the phase the runner's exit gives the pod: a pod whose runner container ended
      stays Running while a sidecar (a docker daemon, a log shipper) runs, yet its runner is
      done - Succeeded on exit 0, Failed otherwise."""
    cs = _runner_container(pod)
    state = cs.get("state") or {}
    out: dict[str, Any] = {}
    if running := state.get("running"):
        out["container_started_at"] = _when(running.get("startedAt"))
    elif waiting := state.get("waiting"):
        out["container_waiting"] = str(waiting.get("reason") or "")
    elif (ended := state.get("terminated")) and phase in ("Pending", "Running"):
        out["container_started_at"] = _when(ended.get("startedAt"))
        out["pod_phase"] = "Succeeded" if ended.get("exitCode") == 0 else "Failed"
    return out


def _when(text: str | None) -> float | None:
    """An annotation's timestamp; one edited into garbage counts as unset."""
    try:
        return epoch(text)
    except ValueError:
        return None


def _busy_hint(entry: dict[str, Any] | None, at: float) -> None:
    """Mark a live runner busy on the listener's word, unless GitHub said more since."""
    if entry is None or entry.get("pod_phase") in (None, "Succeeded", "Failed"):
        return
    if entry.get("checked_at") is not None and entry["checked_at"] >= at:
        return
    reg = entry.get("registration")
    registration_id = reg.id if reg is not None else entry.get("registration_id")
    if registration_id is None:
        return
    entry["registration"] = ObservedRegistration(registration_id, True, True, ran=True)
    entry["checked_at"] = at


def observe(
    scale_set: str,
    namespace: str,
    pods: Iterable[dict[str, Any]],
    secrets: Iterable[dict[str, Any]],
    registrations: Iterable[SeenLike],
    swept_at: float | None,
    now: float,
    absent: Mapping[str, float] | None = None,
    busy: Mapping[str, float] | None = None,
    exact_sweeps: bool = False,
    ran: Collection[str] = (),
) -> list[ObservedRunner]:
    """One ObservedRunner per name seen in any of the three sources.

    `registrations` are GitHub's view of this scale set's runners, each with when it was
    seen; a runner absent from them was absent from the sweep begun at `swept_at`, which is
    evidence only for runners created before that sweep began. `absent` names runners GitHub
    has said (since that sweep) it has no registration for, and when. `busy` names runners
    the listener saw running a job, and when: that is evidence of a busy registration, newer
    than a sweep that began earlier. `exact_sweeps`: the sweeps read each runner by id (the
    scale-set protocol), so absence from one is GitHub's word, not a paging gap. `ran` names
    runners known to have run (seen online, or reported busy) besides what `registrations`
    remember: offline now, they are gone, not yet to start.
    """
    found: dict[str, dict[str, Any]] = {}

    for secret in secrets:
        meta = secret["metadata"]
        runner_id = (meta.get("annotations") or {}).get(c.ANNOTATION_RUNNER_ID)
        found.setdefault(meta["name"], {}).update(
            has_secret=True,
            has_jit=c.SECRET_KEY_JITCONFIG in secret.get("dataKeys", []),
            created_at=epoch(meta.get("creationTimestamp")) or now,
            registration_id=int(runner_id) if runner_id and runner_id.isdigit() else None,
        )
    for pod in pods:
        meta = pod["metadata"]
        name = meta.get("labels", {}).get(c.LABEL_RUNNER, meta["name"])
        entry = found.setdefault(name, {})
        reason, finished = _pod_outcome(pod)
        phase = pod.get("status", {}).get("phase") or "Pending"
        if meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"):
            phase, reason = "Failed", reason or "Deleted"
        annotations = meta.get("annotations") or {}
        entry.update(
            pod_phase=phase, pod_reason=reason, pod_finished_at=finished,
            protected=annotations.get(c.ANNOTATION_DO_NOT_DISRUPT) == "true",
            pod_created_at=epoch(meta.get("creationTimestamp")),
            template_hash=(meta.get("labels") or {}).get(c.LABEL_TEMPLATE_HASH),
            busy_since=_when(annotations.get(c.ANNOTATION_BUSY_SINCE)),
            job_done_at=_when(annotations.get(c.ANNOTATION_JOB_DONE_AT)),
        )  # fmt: skip
        entry.update(_runner_process(pod, phase))
        entry.setdefault("created_at", epoch(meta.get("creationTimestamp")) or now)
    for seen in registrations:
        reg = seen.registration
        if not c.is_runner_of(reg.name, scale_set, namespace):
            continue
        entry = found.setdefault(reg.name, {})
        spent = bool(getattr(seen, "ran", False)) or reg.online or reg.busy or reg.name in ran
        entry["registration"] = ObservedRegistration(reg.id, reg.online, reg.busy, ran=spent)
        entry["checked_at"] = seen.at
        entry.setdefault("created_at", seen.first_at)
        entry["registered_here"] = seen.ours
    for name, at in (busy or {}).items():
        _busy_hint(found.get(name), at)
    for name, entry in found.items():
        if "checked_at" in entry:
            continue
        if name in (absent or {}):
            entry["checked_at"] = (absent or {})[name]
            entry["absence_confirmed"] = True  # a 404, or our own delete
        elif swept_at is not None and swept_at >= entry["created_at"]:
            entry["checked_at"] = swept_at  # absent from a sweep that began after it existed
            entry["absence_confirmed"] = exact_sweeps

    return [ObservedRunner(name=name, **fields) for name, fields in sorted(found.items())]
