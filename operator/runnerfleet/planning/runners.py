"""Decide what to do with one RunnerScaleSet's runners: classify, then plan actions.

A runner is known by its name through up to three traces: its Secret (created first, as the
intent record, later holding the JIT config), its pod, and its GitHub registration. `plan`
folds those into states and returns the actions that move observed towards desired, plus the
status to report. It never deletes a busy runner: scale-down only removes runners that are
not busy, and removal asks GitHub first (the executor aborts on 422).

Layer: planning. Pure: the clock comes in as `now`.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from runnerfleet.models.base import epoch
from runnerfleet.models.runner_scale_set import Demand

BACKOFF_BASE = 5.0
FRESH_SECONDS = 5.0  # GitHub evidence this recent counts as read in this round
ORPHAN_GRACE = 30.0  # a registration with no Secret or pod is an orphan only after this long
# A live runner's registration missing from GitHub's answer means it is gone only if that
# answer began this long after the runner's pod was created (its registration came before
# the pod): the scale-set registrar first reads a new runner's agent 5 s after registering
# it, and until then its sweeps simply do not list it.
ABSENCE_GRACE = 30.0
# The backoff only delays new runners; it never holds a scale set below what minRunners and
# its queued jobs need for longer than this. It was 5 min: a burst of failures (7 runners
# failing in one round reached it at once) then left queued jobs with no runner for minutes.
BACKOFF_MAX = 60.0
FAILING_AFTER = 3  # consecutive failures before the scale set reports RunnersFailing
# Rollouts create at most this share of the desired count (at least 1) of new runners ahead
# of the outdated ones they replace, as a Deployment's maxSurge of 25%.
MAX_SURGE_SHARE = 0.25


class State(enum.StrEnum):
    REGISTERING = "Registering"  # Secret exists, JIT config not stored yet
    STARTING = "Starting"  # JIT config stored, no pod yet
    PENDING = "Pending"  # pod exists, runner not online yet
    IDLE = "Idle"
    BUSY = "Busy"
    FINISHED = "Finished"  # pod Succeeded: its one job is done
    FAILED = "Failed"  # pod failed, or never registered in time
    KEPT = "Kept"  # failed pod kept for inspection; no longer a runner


ACTIVE = frozenset({State.REGISTERING, State.STARTING, State.PENDING, State.IDLE, State.BUSY})
# Scale-down removes cheapest first; busy runners are never chosen.
_REMOVAL_ORDER = (State.REGISTERING, State.STARTING, State.PENDING, State.IDLE)


@dataclass(frozen=True)
class ObservedRegistration:
    id: int
    online: bool
    busy: bool
    # Seen online or busy before (by this process): the runner ran, its JIT config is spent.
    # Offline and idle now, its process is gone (its node vanished, or it died mid-job and
    # GitHub failed the job); it can never take a job again.
    ran: bool = False

    @property
    def lost(self) -> bool:
        return self.ran and not (self.online or self.busy)


@dataclass(frozen=True)
class ObservedRunner:
    """Everything observed about one runner name."""

    name: str
    created_at: float
    has_secret: bool = False
    has_jit: bool = False
    pod_phase: str | None = None  # None: no pod
    pod_reason: str = ""  # e.g. OOMKilled, Error, Evicted
    pod_finished_at: float | None = None
    registration: ObservedRegistration | None = None
    protected: bool = False  # pod annotated karpenter.sh/do-not-disrupt=true
    registration_id: int | None = None  # recorded in the Secret when the JIT config was stored
    # When GitHub last told us about this runner (a sweep or a direct read): the registration
    # above as of then, or its absence. None: GitHub has said nothing since it was created.
    checked_at: float | None = None
    # Registered by this process after it wrote the runner's Secret (not only seen in a list):
    # with no Secret and no pod left it is finished, with no orphan grace to wait out.
    registered_here: bool = False
    pod_created_at: float | None = None  # None: no pod (or not known)
    # Its absence (registration None at checked_at) is GitHub's own word: a 404 for it, our
    # own delete, or a scale-set sweep (which reads each runner by id). Absence from a REST
    # list sweep is not: that list is paged by number, and runners removed while it is read
    # shift others past the page boundary.
    absence_confirmed: bool = False
    template_hash: str | None = None  # its pod's runnerfleet.dev/template-hash label
    busy_since: float | None = None  # when first seen busy (pod annotation): it took a job
    job_done_at: float | None = None  # when its job was first seen over, its pod still running
    container_started_at: float | None = None  # the runner container's start (None: not yet)
    container_waiting: str = ""  # why the runner container has not started, if it says

    def fresh(self, now: float) -> bool:
        return self.checked_at is not None and now - self.checked_at <= FRESH_SECONDS

    @property
    def known_registration_id(self) -> int | None:
        return self.registration.id if self.registration else self.registration_id


@dataclass(frozen=True)
class Limits:
    """The spec fields the planner needs, durations in seconds."""

    min_runners: int
    max_runners: int
    suspend: bool = False
    registration_timeout: float = 300.0
    max_runner_age: float = 86400.0
    keep_failed_for: float = 600.0
    scale_down_delay: float = 30.0
    max_job_duration: float = 86400.0
    # A runner whose job is over but whose pod still runs gets this long to end by itself
    # (a runner uploads its last logs and exits within seconds) before its pod is deleted.
    job_completion_grace: float = 120.0
    # The current template hash (builders.runner.runner_template_hash). None: no rollout
    # (new runners cannot be created now - a missing node pool, say - so replacing the
    # outdated ones would only remove them).
    template_hash: str | None = None
    # Idle runners wanted now beyond minRunners (issue 14: the active scheduled floors; the
    # planner keeps max(min_runners, warm_floor), within max_runners).
    warm_floor: int = 0

    @property
    def effective_min(self) -> int:
        return min(self.max_runners, max(self.min_runners, self.warm_floor))


@dataclass(frozen=True)
class Memory:
    """What the planner remembers between rounds (kept in the scale set's status)."""

    scale_down_pending_since: float | None = None
    consecutive_failures: int = 0
    last_failure_at: float | None = None


# ---------------------------------------------------------------------------------- actions
@dataclass(frozen=True)
class CreateRunners:
    count: int


@dataclass(frozen=True)
class RegisterRunner:
    """Finish a runner whose Secret exists without JIT config (a crash between steps)."""

    name: str
    stale_registration_id: int | None  # registered before the crash: remove, then re-register


@dataclass(frozen=True)
class CreatePod:
    name: str


@dataclass(frozen=True)
class RemoveRunner:
    name: str
    reason: str
    registration_id: int | None
    require_idle: bool  # ask GitHub first; a 422 (busy) aborts the removal
    keep_pod: bool = False  # failed pods stay for inspection
    has_pod: bool = True
    has_secret: bool = True


@dataclass(frozen=True)
class DeletePod:
    name: str
    reason: str


@dataclass(frozen=True)
class DeleteRegistration:
    name: str
    registration_id: int
    reason: str


@dataclass(frozen=True)
class ProtectPod:
    """Set (busy) or clear (idle, or its job over) the pod's karpenter.sh/do-not-disrupt
    annotation, with the marks that time a job: when it was first seen busy, and when its job
    was first seen over."""

    name: str
    protect: bool
    busy_since: float | None = None
    job_done_at: float | None = None


Action = (
    CreateRunners | RegisterRunner | CreatePod | RemoveRunner | DeletePod | DeleteRegistration
    | ProtectPod
)  # fmt: skip


@dataclass(frozen=True)
class Plan:
    actions: list[Action]
    desired: int
    counts: dict[State, int]
    memory: Memory
    failures: list[tuple[str, str]] = field(default_factory=list)  # (runner, reason) this round
    backing_off_until: float | None = None
    # Some runner's state waits on fresher evidence from GitHub (a runner not yet seen online,
    # one past its registration deadline, or queued jobs that idle runners may be taking).
    wants_evidence: bool = False
    # Runners to read from GitHub again, by name: busy as last read, no longer on the
    # listener's busy list, their pods not ended (see _busy_no_longer).
    recheck: list[str] = field(default_factory=list)
    # Rollout (None without a template hash): runners on the current template (those not
    # yet with a pod count: theirs will be) and on an older one; rolling_out while an
    # outdated runner could still take a job (idle or pending; busy ones only finish).
    updated: int | None = None
    outdated: int | None = None
    rolling_out: bool = False
    reaped: list[tuple[str, str]] = field(default_factory=list)  # (runner, why): busy, removed

    @property
    def failing(self) -> bool:
        return self.memory.consecutive_failures >= FAILING_AFTER


def desired_runners(limits: Limits, demand: Demand | None, finished_since: int = 0) -> int:
    """min(maxRunners, minRunners + assigned jobs), as ARC does; 0 while suspended.
    minRunners here is the effective one (`Limits.effective_min`: raised by scheduled floors).

    `finished_since`: runners that finished since the listener's last report (`_awaiting_report`).
    Their jobs are still in that report's count, but need no new runner: without this, every
    job that ends a moment before the listener reports it would start a spare runner.
    """
    if limits.suspend:
        return 0
    assigned = demand.assigned_jobs if demand is not None else 0
    return min(limits.max_runners, limits.effective_min + max(0, assigned - finished_since))


FINISHED_HOLD = 30.0  # a finished runner waits at most this long for the listener's report


def _awaiting_report(finished: list[ObservedRunner], demand: Demand | None, now: float) -> set[str]:
    """Finished runners whose jobs the last demand report still counts: each is kept (and
    subtracted from the demand) until the listener reports again, or FINISHED_HOLD passes.

    A runner the report listed busy, finished since: its job is surely counted there. A
    runner the report did not name (its job ended before the listener saw it start: jobs of
    a few seconds, or REST polls) may have run one of the report's jobs that no listed runner
    was running: at most `assigned - listed` of those are held, earliest finished first. If
    one of them in fact ran a job assigned after the report, the demand is one short until
    the next report (a runner a report later); not holding them made a spare runner that
    lived scaleDownDelay (30 s) for every such job."""
    if demand is None:
        return set()
    reported = epoch(demand.observed_at)
    if reported is None:
        return set()
    recent = sorted(
        (r for r in finished
         if r.pod_phase == "Succeeded" and r.pod_finished_at is not None
         and reported < r.pod_finished_at and now - r.pod_finished_at <= FINISHED_HOLD),
        key=lambda r: (r.pod_finished_at or 0.0, r.name),
    )  # fmt: skip
    listed = set(demand.busy_runners)
    held = {r.name for r in recent if r.name in listed}
    unnamed = [r.name for r in recent if r.name not in listed]
    return held | set(unnamed[: max(0, demand.assigned_jobs - len(listed))])


def classify(runner: ObservedRunner, now: float, limits: Limits) -> tuple[State, str]:
    """The runner's state and, for failures, why."""
    reg = runner.registration
    phase = runner.pod_phase
    if phase == "Succeeded":
        return State.FINISHED, "JobCompleted"
    if phase == "Failed":
        if not runner.has_secret:
            return State.KEPT, runner.pod_reason or "PodFailed"
        if runner.pod_reason == "Deleted" and reg is not None and (reg.online or reg.busy):
            # Its pod is being deleted after it ran: the same as a pod already gone (below),
            # whether or not kwok/the kubelet has finished removing it yet.
            return State.FAILED, "PodLost"
        return State.FAILED, runner.pod_reason or "PodFailed"
    if phase is None:
        if not runner.has_secret:
            return State.FINISHED, "Orphaned"  # only a registration is left
        if reg is not None and (reg.online or reg.busy or reg.ran):
            # It ran (its one-use JIT config is spent) and its pod is gone: deleted, evicted,
            # or removed by PodGC after its node vanished. Already offline (GitHub failed its
            # job first), it was taken for a runner yet to start, and its pod made again.
            return State.FAILED, "PodLost"
        if runner.has_jit and reg is None and runner.fresh(now):
            # GitHub no longer has the registration (it ran its job and left): nothing to start.
            return State.FINISHED, "RegistrationGone"
        return (State.STARTING, "") if runner.has_jit else (State.REGISTERING, "")
    if _job_over(runner):
        # It took its one job and GitHub says that job is over, yet its pod still runs (the
        # runner hangs on exit, a sidecar keeps the pod up): no capacity, reaped after
        # jobCompletionGrace unless it ends by itself first.
        return State.FINISHED, "JobFinished"
    if reg is not None and reg.busy:
        return State.BUSY, ""
    if reg is not None and reg.online:
        return State.IDLE, ""
    if reg is not None and reg.lost:
        # Its pod is still there (a vanished node's pods stay until PodGC, 40-60 s), but its
        # runner is gone: counted as Pending, it held the scale set short until then.
        return State.FAILED, "RunnerLost"
    if _registration_gone(runner):
        # Its pod runs but GitHub has no registration for it: the one-use JIT config's
        # registration was removed (a removal we began and a crash of ours interrupted, or
        # the runner ran its job and is exiting). It can never take a job, so it is not
        # capacity: counting it Pending held the scale set short until registrationTimeout,
        # and then counted our own crash as a runner failure (issue 12).
        return State.FINISHED, "RegistrationGone"
    deadline = registration_deadline(runner, limits)
    if (
        deadline is not None and now > deadline
        and runner.checked_at is not None and runner.checked_at >= deadline
    ):  # fmt: skip
        # Failed only on evidence gathered after the deadline; a runner GitHub has said
        # nothing about since then is unknown, not failed.
        return State.FAILED, runner.container_waiting or "RegistrationTimeout"
    return State.PENDING, ""


def _job_over(runner: ObservedRunner) -> bool:
    """A runner seen busy (it has a busy-since mark) whose pod still runs, which GitHub now
    shows idle (read after it was busy) or has no registration for (confirmed absent)."""
    if runner.busy_since is None or runner.pod_phase not in ("Pending", "Running"):
        return False
    reg = runner.registration
    if reg is None:
        return runner.absence_confirmed and (runner.checked_at or 0.0) > runner.busy_since
    return reg.online and not reg.busy and (runner.checked_at or 0.0) > runner.busy_since


def _registration_gone(runner: ObservedRunner) -> bool:
    """GitHub said it has no registration for a live runner whose JIT config was stored, in
    an answer begun ABSENCE_GRACE after the pod existed. Such an absence is final (a stored
    JIT config's registration never comes back), so it need not be fresh: sweeps come about
    as often as rounds, and evidence that had to be under 5 s old was missed round after
    round."""
    if not runner.has_jit or runner.registration is not None or runner.checked_at is None:
        return False
    if not runner.absence_confirmed:
        # A runner skipped by a paged REST list may be busy: removing its pod on that evidence
        # would lose the job (the registration timeout still applies).
        return False
    registered_by = max(runner.created_at, runner.pod_created_at or runner.created_at)
    return runner.checked_at - registered_by > ABSENCE_GRACE


# The runner container cannot start on its own: these fail the runner after
# registrationTimeout from its pod's creation (a container that never starts has no start to
# count from), with the reason the kubelet gave.
STUCK_WAITING = frozenset({
    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
    "CreateContainerError", "RunContainerError",
})  # fmt: skip


def registration_deadline(runner: ObservedRunner, limits: Limits) -> float | None:
    """When a runner not yet online has taken too long, or None while it has not started.

    Counted from the runner container's start: a pod waiting for a node (Karpenter bringing
    one up takes minutes) or pulling its image has not begun to register, and failing it for
    that only starts the wait again (ARC #3450 killed exactly those). A container stuck in a
    STUCK_WAITING state counts from its pod's creation. With no container status at all on a
    Running pod (an old kubelet), from the pod's creation, or its Secret's if later: a pod
    created late (the operator died between storing the JIT config and creating the pod)
    gets the whole registrationTimeout, since the time lost was ours, not the runner's."""
    created = max(runner.created_at, runner.pod_created_at or runner.created_at)
    if runner.container_started_at is not None:
        return max(created, runner.container_started_at) + limits.registration_timeout
    if runner.container_waiting in STUCK_WAITING:
        return created + limits.registration_timeout
    if runner.pod_phase == "Running" and not runner.container_waiting:
        return created + limits.registration_timeout
    return None


def plan(
    runners: Iterable[ObservedRunner],
    limits: Limits,
    demand: Demand | None,
    memory: Memory,
    now: float,
) -> Plan:
    """Compare observed runners with the desired count; return actions and status."""
    classified = [(r, *classify(r, now, limits)) for r in runners]
    actions: list[Action] = []
    failures: list[tuple[str, str]] = []
    counts = dict.fromkeys(State, 0)
    for _, state, _ in classified:
        counts[state] += 1

    awaiting = _awaiting_report([r for r, s, _ in classified if s is State.FINISHED], demand, now)
    for runner, state, reason in classified:
        if runner.name not in awaiting:
            actions.extend(_cleanup(runner, state, reason, now, limits, failures))

    expired = [
        r for r, s, _ in classified
        if s is State.IDLE and now - r.created_at > limits.max_runner_age
    ]  # fmt: skip
    for runner in expired:
        actions.append(_remove(runner, "MaxRunnerAge", require_idle=True))
    overdue = _overdue(classified, limits, now)
    for runner, _why in overdue:
        actions.append(_remove(runner, "MaxJobDuration", require_idle=False))

    desired = desired_runners(limits, demand, len(awaiting))
    leaving = {r.name for r in expired} | {r.name for r, _ in overdue}
    present = sum(1 for _, s, _ in classified if s in ACTIVE)  # pods leaving count till gone
    active = [(r, s) for r, s, _ in classified if s in ACTIVE and r.name not in leaving]
    memory = _remember_failures(memory, failures, classified, now)
    backoff_until = _backoff_until(memory)
    rollout = _rollout(active, desired, limits)
    actions.extend(_remove(r, "Outdated", require_idle=True) for r in rollout.retire)
    retired = {r.name for r in rollout.retire}
    staying = [(r, s) for r, s in active if r.name not in retired]
    new_memory, scale_actions = _scale(
        staying, desired, limits, memory, now, backoff_until, present, rollout.rolling
    )
    actions.extend(scale_actions)
    if not (backoff_until is not None and now < backoff_until):
        made = sum(a.count for a in scale_actions if isinstance(a, CreateRunners))
        surge = min(rollout.create, limits.max_runners - present - made)
        actions.extend([CreateRunners(surge)] if surge > 0 else [])
    removed = {a.name for a in scale_actions if isinstance(a, RemoveRunner)} | retired
    actions.extend(_resume([(r, s) for r, s in active if r.name not in removed], now))
    actions.extend(_protect(active, now))
    recheck = _busy_no_longer(classified, demand)
    return Plan(
        actions=actions,
        desired=desired,
        counts=counts,
        memory=new_memory,
        failures=failures,
        backing_off_until=backoff_until if backoff_until and backoff_until > now else None,
        wants_evidence=_wants_evidence(counts, demand) or bool(recheck),
        recheck=recheck,
        updated=rollout.updated,
        outdated=rollout.outdated,
        rolling_out=rollout.rolling,
        reaped=[(r.name, why) for r, why in overdue],
    )


def _overdue(
    classified: list[tuple[ObservedRunner, State, str]], limits: Limits, now: float
) -> list[tuple[ObservedRunner, str]]:
    """Busy runners past maxJobDuration (counted from when first seen busy): a hung job, or
    a runner GitHub lost track of. Removed although busy; GitHub fails the job."""
    return [
        (r, f"busy for {now - r.busy_since:.0f}s, over maxJobDuration "
            f"({limits.max_job_duration:.0f}s); its job is ended")
        for r, s, _ in classified
        if s is State.BUSY and r.busy_since is not None
        and now - r.busy_since > limits.max_job_duration
    ]  # fmt: skip


@dataclass(frozen=True)
class Rollout:
    retire: list[ObservedRunner] = field(default_factory=list)  # outdated, removed now
    create: int = 0  # new runners ahead of the outdated ones they replace (surge)
    rolling: bool = False
    updated: int | None = None
    outdated: int | None = None


def max_surge(desired: int) -> int:
    return max(1, math.ceil(desired * MAX_SURGE_SHARE))


def _rollout(active: list[tuple[ObservedRunner, State]], desired: int, limits: Limits) -> Rollout:
    """Replace outdated idle and pending runners with runners on the current template, like a
    Deployment with maxSurge 25% and no unavailability while there is room under maxRunners:
    new runners are created first, and an outdated idle runner goes only while the idle ones
    left still cover the jobs the scale set wants idle runners for. At maxRunners, with no
    room to surge and nothing starting, up to the surge count are replaced in place. Busy
    outdated runners run their one job and are not reused (one-job runners never are)."""
    current = limits.template_hash
    if current is None:
        return Rollout()
    stale = {r.name for r, _ in active if r.pod_phase is not None and r.template_hash != current}
    outdated = len(stale)
    old = sorted(
        ((r, s) for r, s in active if r.name in stale and s in (State.PENDING, State.IDLE)),
        key=lambda pair: (pair[1] is State.IDLE, pair[0].created_at),
    )
    rollout = Rollout(updated=len(active) - outdated, outdated=outdated)
    if not old or limits.suspend:
        return rollout
    busy = sum(1 for _, s in active if s is State.BUSY)
    idle = sum(1 for _, s in active if s is State.IDLE)
    want_idle = max(0, desired - busy)
    starting = sum(
        1 for r, s in active if r.name not in stale and s not in (State.IDLE, State.BUSY)
    )
    excess = len(active) - desired
    retire: list[ObservedRunner] = []
    for runner, state in old:
        if excess <= 0:
            break
        if state is State.IDLE:
            if idle - 1 < want_idle:
                continue  # its replacement is not idle yet
            idle -= 1
        retire.append(runner)
        excess -= 1
    surge = max_surge(desired)
    if not retire and starting == 0 and len(active) >= limits.max_runners:
        retire = [r for r, _ in old[:surge]]  # no room to surge: replace in place
    left = len(old) - len(retire)
    needed = max(0, desired - (len(active) - len(retire) - left))
    create = max(0, min(left, needed, surge - starting))
    return dataclasses.replace(rollout, retire=retire, create=create, rolling=True)


def _wants_evidence(counts: dict[State, int], demand: Demand | None) -> bool:
    """Pending runners wait to be seen online; queued jobs beyond the busy runners may be
    being taken by idle ones right now. Either way a fresher sweep changes the picture."""
    queued = (demand.assigned_jobs if demand is not None else 0) - counts[State.BUSY]
    return counts[State.PENDING] > 0 or (queued > 0 and counts[State.IDLE] > 0)


def _busy_no_longer(
    classified: list[tuple[ObservedRunner, State, str]], demand: Demand | None
) -> list[str]:
    """Runners GitHub last showed busy that the listener, reporting since, no longer lists:
    their jobs ended. Normally the pod then ends Succeeded; when it does not (the runner died
    with its node, and GitHub failed the job), only a fresh read shows it offline. Unasked, the
    scale-set protocol re-reads an online runner every 10 minutes."""
    at = epoch(demand.observed_at) if demand is not None else None
    if demand is None or at is None:
        return []
    listed = set(demand.busy_runners)
    return [
        r.name for r, s, _ in classified
        if s is State.BUSY and r.name not in listed and (r.checked_at or 0.0) < at
    ]  # fmt: skip


def _remove(
    runner: ObservedRunner, reason: str, *, require_idle: bool, keep_pod: bool = False
) -> RemoveRunner:
    # A finished runner's registration went with its job (ephemeral); delete it only if GitHub
    # still lists it. Any other runner's registration is deleted whether or not it was seen.
    finished = reason in ("JobCompleted", "RegistrationGone", "JobFinished")
    registration_id = (
        (runner.registration.id if runner.registration else None)
        if finished else runner.known_registration_id
    )  # fmt: skip
    return RemoveRunner(
        name=runner.name,
        reason=reason,
        registration_id=registration_id,
        require_idle=require_idle,
        keep_pod=keep_pod,
        has_pod=runner.pod_phase is not None,
        has_secret=runner.has_secret,
    )


def _cleanup(
    runner: ObservedRunner,
    state: State,
    reason: str,
    now: float,
    limits: Limits,
    failures: list[tuple[str, str]],
) -> list[Action]:
    if state is State.FINISHED and reason == "JobFinished":
        if runner.job_done_at is None:
            return [ProtectPod(runner.name, protect=False, job_done_at=now)]
        if now - runner.job_done_at <= limits.job_completion_grace:
            return []
        # GitHub refusing the removal (busy after all) stops it: no job is lost on a guess.
        return [_remove(runner, reason, require_idle=True)]
    if state is State.FINISHED:
        if runner.pod_phase is None and not runner.has_secret:
            reg = runner.registration
            young = now - runner.created_at < ORPHAN_GRACE and not runner.registered_here
            if reg is None or reg.busy or young:
                return []
            return [DeleteRegistration(runner.name, reg.id, "OrphanRegistration")]
        return [_remove(runner, reason, require_idle=False)]
    if state is State.FAILED:
        if not _disrupted_while_idle(runner, reason):
            failures.append((runner.name, reason))
        keep = limits.keep_failed_for > 0 and runner.pod_phase == "Failed"
        return [_remove(runner, reason, require_idle=False, keep_pod=keep)]
    if state is State.KEPT:
        finished = runner.pod_finished_at or runner.created_at
        if now - finished > limits.keep_failed_for:
            return [DeletePod(runner.name, "FailedRunnerExpired")]
    return []


DISRUPTIONS = frozenset({"Deleted", "Evicted", "PodLost", "RunnerLost"})


def _disrupted_while_idle(runner: ObservedRunner, reason: str) -> bool:
    """An idle runner's pod deleted or evicted from outside (e.g. Karpenter consolidating
    idle capacity, a node drain) is replaced, but is not a runner failure: no backoff, no
    RunnerFailed Event. The same while busy lost a job, and counts."""
    reg = runner.registration
    return reason in DISRUPTIONS and not (reg is not None and reg.busy)


def _remember_failures(
    memory: Memory,
    failures: list[tuple[str, str]],
    classified: list[tuple[ObservedRunner, State, str]],
    now: float,
) -> Memory:
    if failures:
        return Memory(
            scale_down_pending_since=memory.scale_down_pending_since,
            consecutive_failures=memory.consecutive_failures + len(failures),
            last_failure_at=now,
        )
    if any(s in (State.IDLE, State.BUSY) for _, s, _ in classified):
        return Memory(scale_down_pending_since=memory.scale_down_pending_since)
    return memory


def _backoff_until(memory: Memory) -> float | None:
    """After failures, new runners wait 5 s, 10 s, 20 s ... up to BACKOFF_MAX (1 min) after
    the last one."""
    if memory.consecutive_failures == 0 or memory.last_failure_at is None:
        return None
    delay = min(BACKOFF_MAX, BACKOFF_BASE * 2.0 ** (memory.consecutive_failures - 1))
    return memory.last_failure_at + delay


def _scale(
    active: list[tuple[ObservedRunner, State]],
    desired: int,
    limits: Limits,
    memory: Memory,
    now: float,
    backoff_until: float | None,
    present: int,
    rolling: bool = False,
) -> tuple[Memory, list[Action]]:
    """Create up to `desired` (never more runners than maxRunners, counting the `present`
    ones still leaving: their pods are deleted in the same round, in no set order), or
    remove surplus after scaleDownDelay (not while a rollout has surged above desired)."""

    def with_since(since: float | None) -> Memory:
        return Memory(since, memory.consecutive_failures, memory.last_failure_at)

    if len(active) < desired:
        if backoff_until is not None and now < backoff_until:
            return with_since(None), []
        room = limits.max_runners - present
        count = min(desired - len(active), room)
        return with_since(None), ([CreateRunners(count)] if count > 0 else [])
    if len(active) == desired or rolling:
        return with_since(None), []
    since = memory.scale_down_pending_since if memory.scale_down_pending_since is not None else now
    if now - since < limits.scale_down_delay:
        return with_since(since), []
    surplus = len(active) - desired
    order = {state: i for i, state in enumerate(_REMOVAL_ORDER)}
    candidates = sorted(
        (pair for pair in active if pair[1] in order),
        key=lambda pair: (order[pair[1]], pair[0].created_at),
    )
    removals: list[Action] = [
        _remove(runner, "ScaleDown", require_idle=True) for runner, _ in candidates[:surplus]
    ]
    return with_since(None), removals


def _resume(active: list[tuple[ObservedRunner, State]], now: float) -> list[Action]:
    """Runners interrupted between steps get the step they lack."""
    out: list[Action] = []
    for runner, state in active:
        if state is State.REGISTERING:
            reg = runner.registration
            out.append(RegisterRunner(runner.name, reg.id if reg else None))
        elif state is State.STARTING and runner.fresh(now):
            # Only on evidence read this round that its one-use JIT config is still unused.
            out.append(CreatePod(runner.name))
    return out


def _protect(active: list[tuple[ObservedRunner, State]], now: float) -> list[Action]:
    """Busy runners' pods block node disruption (Karpenter never ends a running job there)
    and carry when they were first seen busy (maxJobDuration counts from it); idle ones do
    not block, so Karpenter may consolidate the capacity they hold. An idle runner with a
    busy mark was read idle before it was seen busy: it keeps its protection until GitHub
    says more (its job over: JobFinished)."""
    out: list[Action] = []
    for runner, state in active:
        if state is State.BUSY and not (runner.protected and runner.busy_since is not None):
            since = runner.busy_since if runner.busy_since is not None else now
            out.append(ProtectPod(runner.name, protect=True, busy_since=since))
        elif state is State.IDLE and runner.protected and runner.busy_since is None:
            out.append(ProtectPod(runner.name, protect=False))
    return out
