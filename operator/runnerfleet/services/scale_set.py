"""Reconcile one RunnerScaleSet: observe -> plan -> execute -> report, in a loop per object.

Each scale set gets one long-running loop (a kopf daemon), so rounds of the same object never
overlap; pod events, spec changes and sweeps that saw its runners change wake it early, and it
resyncs every few seconds anyway.

A round makes no GitHub list call of its own: GitHub's view of its runners comes from the
scope's shared `RegistrationBook` (one conditional sweep for every scale set there), updated
at once by this round's own registrations and removals. The only per-runner reads are for a
runner whose pod vanished while its JIT config was stored (is the config still unused?), at
most a few per round. Runner state otherwise comes from the Secret (the registration id) and
the pod; a runner GitHub has said nothing about is unknown, never failed.

Layer: services. I/O only through the gateways.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from runnerfleet import conventions as c
from runnerfleet import logs
from runnerfleet.builders.node_pool import Placement, placement, team_may_use
from runnerfleet.builders.runner import (
    ScaleSetIdentity,
    build_runner_pod,
    build_runner_secret,
    runner_template_hash,
    scale_set_labels,
    scale_set_selector,
)
from runnerfleet.gateways.github import (
    GitHubError,
    GitHubNotFoundError,
    RateLimitedError,
    RunnerBusyError,
    RunnerNameTakenError,
)
from runnerfleet.gateways.kubernetes import (
    AlreadyExistsError,
    InvalidError,
    KubeError,
    KubeGateway,
    NotFoundError,
)
from runnerfleet.metrics import OperatorMetrics
from runnerfleet.models.base import epoch, parse_duration
from runnerfleet.models.github import (
    GitHubCredentials,
    GitHubTarget,
    InvalidGitHubConfigError,
    parse_config_url,
)
from runnerfleet.models.node_pool import RunnerNodePoolSpec
from runnerfleet.models.runner_scale_set import (
    Demand,
    PredictiveWarm,
    RunnerScaleSetSpec,
    RunnerScaleSetStatus,
)
from runnerfleet.planning import audit, forecast
from runnerfleet.planning.floors import floor_at, next_edge
from runnerfleet.planning.observe import observe
from runnerfleet.planning.runners import (
    ABSENCE_GRACE,
    Action,
    CreatePod,
    CreateRunners,
    DeletePod,
    DeleteRegistration,
    Limits,
    Plan,
    ProtectPod,
    RegisterRunner,
    RemoveRunner,
    State,
    plan,
)
from runnerfleet.planning.status import (
    Problem,
    RoundOutcome,
    build_status,
    memory_from_status,
    rfc3339,
)
from runnerfleet.planning.status_diff import status_patch
from runnerfleet.services import container_mode, costs
from runnerfleet.services.identity import identity_problem, runner_default_resources
from runnerfleet.services.loop import reconcile_loop
from runnerfleet.services.registrations import Registrar, RegistrationBook
from runnerfleet.services.runtime import Children, GitHubSide, Runtime
from runnerfleet.services.scale_set_protocol import ScaleSetRegistrar

log = logging.getLogger("runnerfleet.scaleset")

RESYNC_SECONDS = 5.0  # while runners or timers are in motion
IDLE_RESYNC_SECONDS = 30.0  # a settled scale set (jittered ±20 %)
STARTUP_SPREAD_SECONDS = 20.0  # settled scale sets start their first round within this
# Credentials Secrets are re-read at most this often (and at once after GitHub refused them):
# one GET per team namespace per TTL, 0.3 requests/s at 100 teams.
SECRET_TTL = 300.0
POOL_TTL = 10.0
MIN_ROUND_GAP = 0.2
EDGE_SLACK = 0.05  # a round woken for a scheduled floor's edge runs this long after it
CONCURRENCY = 16
_POOL_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # a DNS-1123 subdomain
PROBES_PER_ROUND = 5  # direct registration reads a round may make (vanished pods only)


@dataclass
class ScaleSet:
    """The parts of a RunnerScaleSet object a round needs."""

    body: dict[str, Any]

    @property
    def identity(self) -> ScaleSetIdentity:
        m = self.body["metadata"]
        team = (m.get("labels") or {}).get(c.LABEL_TEAM)
        return ScaleSetIdentity(m["name"], m["namespace"], m["uid"], team)

    @property
    def spec(self) -> RunnerScaleSetSpec:
        return RunnerScaleSetSpec.model_validate(self.body.get("spec", {}))

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.body.get("status") or {})

    @property
    def generation(self) -> int:
        return int(self.body["metadata"].get("generation", 0))


def limits_of(
    spec: RunnerScaleSetSpec,
    standby: bool = False,
    template_hash: str | None = None,
    now: float | None = None,
    demand: Demand | None = None,
) -> Limits:
    """The planner's limits; at `now`, the active scheduled floors and (warmPolicy:
    predictive) the forecast from the listener's learnt arrivals raise the minimum."""
    return Limits(
        min_runners=spec.min_runners,
        max_runners=spec.max_runners,
        suspend=spec.suspend or standby,
        registration_timeout=parse_duration(spec.registration_timeout),
        max_runner_age=parse_duration(spec.max_runner_age),
        keep_failed_for=parse_duration(spec.keep_failed_runners_for),
        scale_down_delay=parse_duration(spec.scale_down_delay),
        max_job_duration=parse_duration(spec.max_job_duration),
        job_completion_grace=parse_duration(spec.job_completion_grace),
        template_hash=template_hash,
        warm_floor=_warm_floor(spec, now, demand) if now is not None else 0,
    )


def _warm_floor(spec: RunnerScaleSetSpec, now: float, demand: Demand | None) -> int:
    floor = floor_at(spec.scheduled_floors, now)
    if spec.warm_policy != "predictive":
        return floor
    settings = spec.predictive or PredictiveWarm()
    model = forecast.decode(demand.arrivals if demand is not None else None)
    lead = parse_duration(settings.lead_time)
    return max(floor, forecast.recommend(model, now, lead, settings.target_percentile))


def _next_change(spec: RunnerScaleSetSpec, now: float) -> float | None:
    """When the warm floor may next change by the clock alone: a scheduled floor's edge, or
    (predictive) the lead time's window reaching the next hour of the week."""
    edges = [next_edge(spec.scheduled_floors, now)]
    if spec.warm_policy == "predictive":
        lead = parse_duration((spec.predictive or PredictiveWarm()).lead_time)
        edges.append(forecast.next_change(now, lead))
    return min((e for e in edges if e is not None), default=None)


async def follow_mode(runtime: Runtime, namespace: str, every: float = 2.0) -> None:
    """Keep `runtime.mode` equal to the control ConfigMap's `mode` (if the ConfigMap exists);
    on a change, wake every scale set so the switch takes effect at once."""
    while True:
        try:
            data = await runtime.kube.get_config_map_data(namespace, c.CONTROL_CONFIGMAP)
        except KubeError as err:
            log.warning("reading ConfigMap %s/%s failed: %s", namespace, c.CONTROL_CONFIGMAP, err)
            data = None
        wanted = (data or {}).get("mode", runtime.mode).strip().lower()
        if wanted not in c.MODES:
            log.warning("ConfigMap %s/%s: mode %r is not one of %s; keeping %s", namespace,
                        c.CONTROL_CONFIGMAP, wanted, "/".join(c.MODES), runtime.mode)  # fmt: skip
        elif wanted != runtime.mode:
            log.info("operating mode: %s -> %s", runtime.mode, wanted)
            runtime.mode = wanted
            for event in [*runtime.wakeups.values(), *runtime.listener_wakeups.values()]:
                event.set()  # scale sets suspend/resume; listeners drop/take their sessions
        await asyncio.sleep(every)


# ---------------------------------------------------------------------------------- loop
async def run(
    runtime: Runtime,
    namespace: str,
    name: str,
    stopped: Callable[[], bool],
    live: Callable[[], Mapping[str, Any]] | None = None,
) -> None:
    """Reconcile until `stopped()`: after each round, wait for a wake-up or the resync.

    `live` returns the object as the last watch event showed it (kopf keeps a daemon's body
    current), so a round need not GET it; without it each round reads it.
    """
    wake = runtime.wakeups.setdefault((namespace, name), asyncio.Event())
    if live is not None and (delay := first_round_delay(live(), random.random())) > 0:  # noqa: S311
        with contextlib.suppress(TimeoutError):  # a change ends the wait at once
            async with asyncio.timeout(delay):  # (no second Task per scale set, as wait_for)
                await wake.wait()
    await reconcile_loop(
        f"RunnerScaleSet {namespace}/{name}",
        lambda: _bounded(runtime, reconcile_once(runtime, namespace, name, live)),
        wake, stopped, _resync, MIN_ROUND_GAP,
    )  # fmt: skip


def first_round_delay(body: Mapping[str, Any], draw: float) -> float:
    """When a new leader (or a restarted operator) starts, every scale set's loop starts at
    once and their first rounds queue for the round slots in no particular order: at 1,000
    scale sets the one whose spec had just changed queued among all the settled ones. A set
    whose status shows it settled on its current spec and demand starts its first round at a
    random point of STARTUP_SPREAD_SECONDS (`draw` in [0, 1)) unless a change wakes it
    sooner; any other set starts at once."""
    meta, spec = body.get("metadata") or {}, body.get("spec") or {}
    status = body.get("status") or {}
    assigned = int((status.get("demand") or {}).get("assignedJobs") or 0)
    wanted = 0 if spec.get("suspend") else min(
        int(spec.get("maxRunners") or 0), int(spec.get("minRunners") or 0) + assigned
    )  # fmt: skip
    settled = (
        status.get("observedGeneration") == meta.get("generation")
        and status.get("desired") == wanted
        and status.get("idle", 0) + status.get("busy", 0) == wanted
        and not status.get("pending")
    )
    return STARTUP_SPREAD_SECONDS * draw if settled else 0.0


async def _bounded(runtime: Runtime, round_: Awaitable[RoundOutcome]) -> RoundOutcome:
    asked = time.monotonic()
    async with runtime.round_slots:
        runtime.metrics.round_slot_wait_seconds.observe(time.monotonic() - asked)
        runtime.metrics.rounds_running.inc()
        try:
            return await round_
        finally:
            runtime.metrics.rounds_running.dec()


def _resync(outcome: object) -> float:
    """Soon while anything is in motion (timers, pending runners, problems); otherwise rarely,
    with jitter, so a thousand idle scale sets do not wake together. Changes wake the loop at
    once anyway (spec and demand events, runner pods and Secrets, sweeps)."""
    plan_ = outcome.plan if isinstance(outcome, RoundOutcome) else None
    if plan_ is None or plan_.actions or _in_motion(plan_):
        delay = RESYNC_SECONDS
    else:
        delay = IDLE_RESYNC_SECONDS * random.uniform(0.8, 1.2)  # noqa: S311 (jitter, not a secret)
    wake_at = outcome.wake_at if isinstance(outcome, RoundOutcome) else None
    if wake_at is not None:
        # A scheduled floor starts or ends before the resync: wake at its edge (a little
        # after, so the round sees the window as begun or over).
        delay = min(delay, max(MIN_ROUND_GAP, wake_at - time.time() + EDGE_SLACK))
    return delay


def _in_motion(plan_: Plan) -> bool:
    counts = plan_.counts
    # FINISHED includes registrations left with no pod or Secret: orphans in their grace.
    moving = sum(
        counts[s] for s in (State.REGISTERING, State.STARTING, State.PENDING, State.FINISHED)
    )
    return bool(
        moving or counts[State.FAILED] or plan_.failures or plan_.backing_off_until
        or plan_.rolling_out
        or plan_.memory.scale_down_pending_since is not None or plan_.wants_evidence
    )  # fmt: skip


async def reconcile_once(
    runtime: Runtime,
    namespace: str,
    name: str,
    live: Callable[[], Mapping[str, Any]] | None = None,
) -> RoundOutcome:
    """One round: observe, plan, execute, and write status if it changed (and Events)."""
    kube = runtime.kube
    body = dict(live()) if live is not None else await kube.get_scale_set(namespace, name)
    if not body or body["metadata"].get("deletionTimestamp"):
        return RoundOutcome(plan=None)
    key = (namespace, name)
    # The status as we last wrote it is fresher than the watch may have shown; demand and
    # kopf's progress come from the object (others write them).
    previous = {**dict(body.get("status") or {}), **runtime.written.get(key, {})}
    scale_set = ScaleSet({**body, "status": previous})
    started = time.monotonic()
    outcome = dataclasses.replace(
        await _round(runtime, scale_set), standby=runtime.mode == c.MODE_STANDBY
    )
    if any(p.reason == "GitHubAuthError" for p in outcome.problems):
        # Credentials refused: read the Secret again next round (it may have been rotated)
        # instead of waiting out SECRET_TTL.
        runtime.forget(("secret", namespace, scale_set.spec.github.secret_ref.name))
    _record(runtime.metrics, scale_set, outcome, time.monotonic() - started)
    status = build_status(outcome, previous, scale_set.generation, time.time())
    # Events first: whoever sees a condition turn False can already find its Event.
    await _post_events(kube, scale_set, outcome)
    patch = status_patch(previous, status)
    if patch is not None:
        await kube.patch_scale_set_status(namespace, name, patch)
    runtime.written[key] = {**runtime.written.get(key, {}), **status}
    return outcome


async def _round(runtime: Runtime, scale_set: ScaleSet) -> RoundOutcome:
    ident = scale_set.identity
    try:
        spec = scale_set.spec
    except ValidationError as err:  # the CRD admitted it, so this is a model/CRD mismatch
        first = err.errors()[0]
        where = "spec." + ".".join(str(p) for p in first["loc"])
        return RoundOutcome(
            None, [Problem("ConfigValid", "InvalidSpec", f"{where}: {first['msg']}")]
        )
    try:
        target = parse_config_url(spec.github.config_url)
        secret = spec.github.secret_ref.name
        data = await runtime.cached(
            ("secret", ident.namespace, secret), SECRET_TTL,
            lambda: runtime.kube.read_secret_data(ident.namespace, secret),
        )  # fmt: skip
        credentials = GitHubCredentials.from_secret_data(secret, data)
    except InvalidGitHubConfigError as err:
        return RoundOutcome(None, [Problem("ConfigValid", "InvalidGitHubConfig", str(err))])
    except NotFoundError:
        message = f"Secret {spec.github.secret_ref.name} (spec.github.secretRef.name) not found"
        return RoundOutcome(None, [Problem("ConfigValid", "SecretNotFound", message)])
    if spec.github.protocol == c.PROTOCOL_SCALE_SET:
        side = runtime.scale_set_side(
            target, credentials, spec.github.config_url, ident.namespace, ident.name
        )
        try:
            await _registrar(side).ensure(spec.github.runner_group, spec.labels)
        except RateLimitedError as err:  # the hourly registration token is a REST call
            return RoundOutcome(None, [_rate_limited(err.reset_at)])
        except GitHubNotFoundError as err:
            message = (
                f"spec.github.protocol: scaleSet is not available at {spec.github.config_url} "
                f"({err}); it needs github.com, GHE.com or GHES 3.9+, and an existing runner "
                "group. Use protocol: rest on older servers. Existing runners are kept."
            )
            return RoundOutcome(
                None, [Problem("GitHubReachable", "ScaleSetProtocolUnavailable", message)]
            )
        except GitHubError as err:
            return RoundOutcome(None, [_unreachable(err, spec.github.config_url)])
    else:
        side = runtime.github(target, credentials)
        budget = side.gateway.budget
        if budget.exhausted():
            return RoundOutcome(None, [_rate_limited(budget.limited_until)])
    place, pool_problem = await _resolve_pool(runtime, spec, ident)
    pool_problem = pool_problem or await identity_problem(runtime, spec, ident)
    pool_problem = pool_problem or await container_mode.prepare(runtime, spec, ident, place)
    return await _converge(runtime, scale_set, spec, side, place, pool_problem)


async def _resolve_pool(
    runtime: Runtime, spec: RunnerScaleSetSpec, ident: ScaleSetIdentity
) -> tuple[Placement | None, Problem | None]:
    """Where new runner pods go, or why none can be created (the pool is missing, going
    away, or isolated to other teams). Existing runners are never touched because of it."""
    if spec.node_pool is None:
        return None, None
    pool = spec.node_pool
    if not _POOL_NAME.fullmatch(pool):
        # Not an object name at all ("a/b", ".."): its GET would read another URL (a list,
        # a subresource) and the round crashed on the answer (issue 12, generated specs).
        return None, Problem(
            "NodePoolReady", "NodePoolNotFound",
            f"spec.nodePool: {pool[:80]!r} is not a RunnerNodePool name (lowercase letters, "
            "digits, '-' and '.'); no new runners are created (existing runners are kept)",
        )  # fmt: skip
    try:
        body = await runtime.cached(
            ("pool", pool), POOL_TTL, lambda: runtime.kube.get_node_pool(pool)
        )
    except NotFoundError:
        return None, Problem(
            "NodePoolReady", "NodePoolNotFound",
            f"spec.nodePool: RunnerNodePool {pool!r} does not exist; no new runners are "
            "created until it does (existing runners are kept)",
        )  # fmt: skip
    if body["metadata"].get("deletionTimestamp"):
        return None, Problem(
            "NodePoolReady", "NodePoolDeleting",
            f"spec.nodePool: RunnerNodePool {pool!r} is being deleted; no new runners are "
            "created on it (existing runners are kept)",
        )  # fmt: skip
    try:
        pool_spec = RunnerNodePoolSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        pool_spec = None  # the pool reports its own bad spec; placement needs only the name
    if pool_spec is not None and not team_may_use(pool_spec, ident.team):
        return None, Problem(
            "NodePoolReady", "NodePoolForbidden",
            f"spec.nodePool: RunnerNodePool {pool!r} is isolated to teams "
            f"{', '.join(pool_spec.teams)}; this scale set's {c.LABEL_TEAM} label is "
            f"{ident.team!r}",
        )  # fmt: skip
    return placement(pool), None


_CREATES = (CreateRunners, CreatePod, RegisterRunner)


async def _converge(
    runtime: Runtime,
    scale_set: ScaleSet,
    spec: RunnerScaleSetSpec,
    side: GitHubSide,
    place: Placement | None,
    pool_problem: Problem | None,
) -> RoundOutcome:
    ident = scale_set.identity
    pods, secrets_ = await _children(runtime, ident)
    github, book = side.gateway, side.book
    if isinstance(github, ScaleSetRegistrar):
        _track(github, secrets_)
    try:
        await _probe_vanished(
            github, book, pods, secrets_, unlisted=not isinstance(github, ScaleSetRegistrar)
        )
    except RateLimitedError as err:
        return RoundOutcome(None, [_rate_limited(err.reset_at)])
    except GitHubError as err:
        return RoundOutcome(None, [_unreachable(err, spec.github.config_url)])

    now = time.time()
    status_model = RunnerScaleSetStatus.model_validate(scale_set.status)
    if isinstance(github, ScaleSetRegistrar) and status_model.demand is not None:
        github.note_busy(status_model.demand.busy_runners)  # they took a job (see _remove)
    runners = observe(
        ident.name, ident.namespace, pods, secrets_,
        book.runners_of(ident.name, ident.namespace), book.swept_at, now,
        book.absent_of(ident.name, ident.namespace), _busy_hints(status_model),
        exact_sweeps=isinstance(github, ScaleSetRegistrar),
        ran=github.lost() if isinstance(github, ScaleSetRegistrar) else (),
    )  # fmt: skip
    standby = runtime.mode == c.MODE_STANDBY
    # No rollout while new runners cannot be created (the outdated ones would only go).
    current = None if pool_problem is not None else runner_template_hash(ident, spec, place)
    decided = plan(
        runners, limits_of(spec, standby, current, now, status_model.demand), status_model.demand,
        memory_from_status(scale_set.status), now,
    )  # fmt: skip
    if decided.recheck and isinstance(github, ScaleSetRegistrar):
        github.recheck(decided.recheck)
    if decided.wants_evidence:
        book.ask()
    actions = decided.actions
    if pool_problem is not None:
        actions = [a for a in actions if not isinstance(a, _CREATES)]
    problems, kept_busy = await _execute(
        runtime.kube, runtime.children, side, scale_set, spec, place, actions
    )
    if any(isinstance(a, _CREATES) for a in actions) and github.jit_writes_available() == 0:
        # Registrations were deferred by the secondary limit: queue for the next free slots
        # (first come, first served), rather than waiting for the next resync.
        side.registrations.wait(ident.namespace, ident.name)
    if pool_problem is not None:
        problems.append(pool_problem)
    if book.last_error is not None and not any(p.condition == "GitHubReachable" for p in problems):
        problems.append(Problem("GitHubReachable", "SweepFailed", book.last_error))
    scaled = any(isinstance(a, CreateRunners | RemoveRunner) for a in actions)
    return RoundOutcome(
        decided, problems, scaled, template_hash=current,
        wake_at=_next_change(spec, now), kept_busy=frozenset(kept_busy),
        creates_blocked=pool_problem is not None,
    )  # fmt: skip


def _unreachable(err: GitHubError, config_url: str) -> Problem:
    """GitHub did not answer usably: the condition names the URL's field, since a typo there
    looks the same as an outage; the runners are kept either way."""
    message = f"{err} (spec.github.configUrl: {config_url}); existing runners are kept"
    return Problem("GitHubReachable", type(err).__name__, message)


def _registrar(side: GitHubSide) -> ScaleSetRegistrar:
    registrar = side.gateway
    assert isinstance(registrar, ScaleSetRegistrar)
    return registrar


def _track(registrar: ScaleSetRegistrar, secrets_: list[dict[str, Any]]) -> None:
    """The runners the Secrets record (after a restart the registrar knows none)."""
    for secret in secrets_:
        runner_id = (secret["metadata"].get("annotations") or {}).get(c.ANNOTATION_RUNNER_ID, "")
        if runner_id.isdigit():
            registrar.track(int(runner_id), secret["metadata"]["name"])


def _busy_hints(status: RunnerScaleSetStatus) -> dict[str, float]:
    """Runners the listener saw running a job, and when (status.demand.busyRunners)."""
    demand = status.demand
    at = epoch(demand.observed_at) if demand is not None else None
    if demand is None or at is None:
        return {}
    return dict.fromkeys(demand.busy_runners, at)


async def _children(
    runtime: Runtime, ident: ScaleSetIdentity
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The scale set's runner pods and Secrets: from the informers when they run (no API
    call), else listed (service tests run without them)."""
    if runtime.children is not None:
        return await runtime.children.of(ident.namespace, scale_set_labels(ident))
    selector = scale_set_selector(ident)
    pods, secrets_ = await asyncio.gather(
        runtime.kube.list_pods(ident.namespace, selector),
        runtime.kube.list_secrets(ident.namespace, selector),
    )
    return pods, secrets_


async def _probe_vanished(
    github: Registrar,
    book: RegistrationBook,
    pods: list[dict[str, Any]],
    secrets_: list[dict[str, Any]],
    unlisted: bool = False,
) -> None:
    """Read the registration of each runner whose JIT config is stored but whose pod is gone:
    a pod is re-created only if GitHub says the one-use config was never used.

    `unlisted` (REST, whose paged sweeps may skip a runner): also read each live runner that
    a sweep begun ABSENCE_GRACE after its pod existed did not list. Either its registration
    was deleted (a removal a crash of ours interrupted: the 404 lets the planner replace it at
    once, instead of after registrationTimeout) or a page skipped it (the read puts it back,
    busy or idle, so it is not taken for a runner that never registered)."""
    with_pods = {
        (p["metadata"].get("labels") or {}).get(c.LABEL_RUNNER, p["metadata"]["name"]) for p in pods
    }
    stored = _stored_ids(secrets_)
    wanted = [(name, rid) for name, rid in stored.items() if name not in with_pods]
    if unlisted:
        wanted += unlisted_runners(pods, stored, book)
    for probed, (name, runner_id) in enumerate(wanted):
        if probed >= PROBES_PER_ROUND:
            book.ask()  # the rest wait for the next round or the sweep
            return
        registration = await github.get_runner(runner_id)
        if registration is None:
            book.forget(name, runner_id)
        else:
            book.note(registration)


def _stored_ids(secrets_: list[dict[str, Any]]) -> dict[str, int]:
    """Runner name -> registration id, for the runner Secrets that record one."""
    ids = {}
    for secret in secrets_:
        runner_id = (secret["metadata"].get("annotations") or {}).get(c.ANNOTATION_RUNNER_ID, "")
        if runner_id.isdigit():
            ids[secret["metadata"]["name"]] = int(runner_id)
    return ids


def unlisted_runners(
    pods: list[dict[str, Any]], ids: Mapping[str, int], book: RegistrationBook
) -> list[tuple[str, int]]:
    """(name, registration id) of live runner pods (with a stored id in `ids`) that the last
    sweep should have listed and did not: it began ABSENCE_GRACE after the pod was created.
    No I/O."""
    if book.swept_at is None:
        return []
    found = []
    for pod in pods:
        meta = pod["metadata"]
        name = (meta.get("labels") or {}).get(c.LABEL_RUNNER, meta["name"])
        created = epoch(meta.get("creationTimestamp"))
        if (
            name in ids and created is not None and not meta.get("deletionTimestamp")
            and (pod.get("status") or {}).get("phase", "Pending") in ("Pending", "Running")
            and book.seen(name) is None and not book.was_absent(name)
            and book.swept_at - created > ABSENCE_GRACE
        ):  # fmt: skip
            found.append((name, ids[name]))
    return found


def _record(
    metrics: OperatorMetrics, scale_set: ScaleSet, outcome: RoundOutcome, took: float
) -> None:
    ident = scale_set.identity
    key = (ident.namespace, ident.name)
    metrics.reconcile_seconds.labels(*key).observe(took)
    spec = scale_set.body.get("spec", {})
    metrics.min_runners.labels(*key).set(spec.get("minRunners", 0))
    metrics.max_runners.labels(*key).set(spec.get("maxRunners", 0))
    if outcome.plan is None:
        return
    metrics.desired.labels(*key).set(outcome.plan.desired)
    for state, count in outcome.plan.counts.items():
        metrics.runners.labels(*key, state.value.lower()).set(count)
    for _, reason in outcome.plan.failures:
        metrics.runner_failures.labels(*key, reason).inc()
    costs.record_round(metrics.costs, *key, ident.team, spec.get("nodePool"),
                       outcome.plan.counts, time.time())  # fmt: skip


def _rate_limited(until: float) -> Problem:
    return Problem(
        "GitHubReachable",
        "RateLimited",
        f"GitHub rate limit exhausted until {rfc3339(until)}; no GitHub calls until then, "
        "existing runners are kept",
    )


async def _post_events(kube: KubeGateway, scale_set: ScaleSet, outcome: RoundOutcome) -> None:
    """A Warning for each condition that turned False or changed its message, then the
    round's audit trail (planning/audit.py: a bounded handful of Events whatever the number
    of runners it acted on)."""
    previous = {cond.get("type"): cond for cond in scale_set.status.get("conditions", []) or []}
    for problem in outcome.problems:
        old = previous.get(problem.condition)
        if old is None or old.get("status") != "False" or old.get("message") != problem.message:
            await kube.event(scale_set.body, "Warning", problem.reason, problem.message)
    steps = audit.rollout_events(scale_set.status, outcome.plan, outcome.template_hash)
    extra = [*steps, *outcome.audit]
    # A removal GitHub refused (the runner took a job meanwhile) did not happen: no Event.
    done = None if outcome.plan is None else [
        a for a in outcome.plan.actions
        if not (isinstance(a, RemoveRunner) and a.name in outcome.kept_busy)
    ]  # fmt: skip
    for event in audit.round_events(outcome.plan, done, outcome.creates_blocked, extra):
        await kube.event(scale_set.body, event.type, event.reason, event.message)


# ---------------------------------------------------------------------------------- execute
async def _execute(
    kube: KubeGateway,
    cache: Children | None,
    side: GitHubSide,
    scale_set: ScaleSet,
    spec: RunnerScaleSetSpec,
    place: Placement | None,
    actions: list[Action],
) -> tuple[list[Problem], list[str]]:
    """Perform the actions with bounded concurrency; collect problems instead of stopping.
    Returns them, and the runners whose removal GitHub refused because they are busy.

    Registrations are paced: a round starts no more JIT registrations than fit in this
    minute under GitHub's secondary limit (shared by every scale set on the installation);
    the rest wait for a later round instead of queueing inside this one.
    """
    executor = _Executor(kube, side.gateway, side.book, cache, scale_set.identity, spec, place)
    room = side.gateway.jit_writes_available()
    steps: list[Callable[[], Awaitable[None]]] = []
    for action in actions:
        if isinstance(action, CreateRunners | RegisterRunner):
            count = action.count if isinstance(action, CreateRunners) else 1
            take, room = min(count, room), room - min(count, room)
            if take < count:
                ident = scale_set.identity
                log.debug("%s/%s: %d registrations wait for GitHub's secondary limit",
                          ident.namespace, ident.name, count - take)  # fmt: skip
            if isinstance(action, CreateRunners):
                steps.extend(executor.create_runner for _ in range(take))
                continue
            if take == 0:
                continue
        steps.append(lambda a=action: executor.apply(a))  # type: ignore[misc]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def guarded(step: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            try:
                await step()
            except InvalidError as err:
                executor.problems.append(Problem("PodsAdmitted", "PodRejected", str(err)))
            except RateLimitedError as err:  # one reason for it, whichever path met it
                executor.problems.append(_rate_limited(err.reset_at))
            except GitHubError as err:
                executor.problems.append(Problem("GitHubReachable", type(err).__name__, str(err)))
            except KubeError as err:
                log.warning(
                    "action failed for %s/%s: %s",
                    scale_set.identity.namespace,
                    scale_set.identity.name,
                    err,
                )

    await asyncio.gather(*(guarded(s) for s in steps))
    return _dedupe(executor.problems), executor.kept_busy


def protection_annotations(action: ProtectPod) -> dict[str, str | None]:
    """The pod annotations a ProtectPod sets (None removes one): one merge patch."""
    out: dict[str, str | None] = {c.ANNOTATION_DO_NOT_DISRUPT: "true" if action.protect else None}
    if action.busy_since is not None:
        out[c.ANNOTATION_BUSY_SINCE] = rfc3339(action.busy_since)
    if action.job_done_at is not None:
        out[c.ANNOTATION_JOB_DONE_AT] = rfc3339(action.job_done_at)
    return out


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: dict[str, Problem] = {}
    for p in problems:
        seen.setdefault(p.condition, p)
    return list(seen.values())


@dataclass
class _Executor:
    kube: KubeGateway
    github: Registrar
    book: RegistrationBook
    cache: Children | None  # written through, so the next round sees what this one did
    owner: ScaleSetIdentity
    spec: RunnerScaleSetSpec
    place: Placement | None
    problems: list[Problem] = field(default_factory=list)
    kept_busy: list[str] = field(default_factory=list)  # removals GitHub refused: busy

    async def apply(self, action: Action) -> None:
        logs.bind(runner=getattr(action, "name", None))  # each step runs in a task of its own
        match action:
            case RegisterRunner(name=name, stale_registration_id=stale):
                if stale is not None:
                    await self._delete_registration(stale, name)
                await self._register_and_start(name)
            case CreatePod(name=name):
                await self._create_pod(name)
            case RemoveRunner():
                await self._remove(action)
            case DeletePod(name=name):
                await self._delete("Pod", name)
            case ProtectPod():
                pod = await self.kube.annotate_pod(
                    self.owner.namespace, action.name, protection_annotations(action)
                )
                if pod is not None:
                    self._wrote(pod)
            case DeleteRegistration(name=name, registration_id=reg_id):
                try:
                    await self._delete_registration(reg_id, name)
                except RunnerBusyError:
                    return

    async def _delete_registration(self, registration_id: int, name: str) -> None:
        """Remove it at GitHub (gone already counts as done) and from the shared book."""
        await self.github.delete_runner(registration_id, name)
        self.book.forget(name, registration_id)

    async def create_runner(self) -> None:
        """Secret first (the intent record), then the JIT registration, then the pod."""
        name = c.runner_name(self.owner.name, self.owner.namespace, secrets.randbits(40))
        logs.bind(runner=name)
        try:
            self._wrote(await self.kube.create(build_runner_secret(self.owner, name)))
        except AlreadyExistsError:
            return  # astronomically unlikely name clash: the next round creates another
        await self._register_and_start(name)

    def _wrote(self, obj: dict[str, Any]) -> None:
        if self.cache is not None:
            self.cache.wrote(obj)

    async def _delete(self, kind: str, name: str) -> None:
        if kind == "Pod":
            await self.kube.delete_pod(self.owner.namespace, name)
        else:
            await self.kube.delete_secret(self.owner.namespace, name)
        if self.cache is not None:
            self.cache.deleted(kind, self.owner.namespace, name)

    async def _register_and_start(self, name: str) -> None:
        group = await self.github.runner_group_id(self.spec.github.runner_group)
        try:
            registration, encoded = await self.github.create_jit_runner(
                name, list(self.spec.labels), group
            )
        except RunnerNameTakenError:
            # Registered by a round that crashed before storing the JIT config: drop and redo.
            await self._drop_registration_named(name)
            registration, encoded = await self.github.create_jit_runner(
                name, list(self.spec.labels), group
            )
        self.book.note(registration, ours=True)
        self._wrote(
            await self.kube.store_jit_config(self.owner.namespace, name, encoded, registration.id)
        )
        await self._create_pod(name)

    def _gone_with_its_job(self, action: RemoveRunner) -> bool:
        """Scale-set protocol: a runner whose pod ended Succeeded after it was seen running a
        job ran that job, and GitHub removed its ephemeral registration when the job ended;
        a DELETE would be answered 404. Never seen busy (it may have exited without a job):
        False, and the registration is deleted as usual."""
        if action.reason != "JobCompleted" or action.registration_id is None:
            return False
        if not isinstance(self.github, ScaleSetRegistrar):
            return False  # REST: deleted only while the last sweep still listed it
        if not self.github.finished_after_job(action.registration_id):
            return False
        self.book.forget(action.name, action.registration_id)
        return True

    async def _drop_registration_named(self, name: str) -> None:
        for reg in await self.github.runners_named(name):
            await self._delete_registration(reg.id, name)

    async def _create_pod(self, name: str) -> None:
        try:
            self._wrote(
                await self.kube.create(
                    build_runner_pod(
                        self.owner, self.spec, name, self.place, runner_default_resources()
                    )
                )
            )
        except AlreadyExistsError:
            return

    async def _remove(self, action: RemoveRunner) -> None:
        """GitHub first (a busy runner stops the removal), then the pod, then the Secret."""
        if action.registration_id is not None and not self._gone_with_its_job(action):
            try:
                await self._delete_registration(action.registration_id, action.name)
            except RunnerBusyError:
                if action.require_idle:
                    self.kept_busy.append(action.name)  # it took a job: not removed
                    return
        if action.has_pod and not action.keep_pod:
            await self._delete("Pod", action.name)
        if action.has_secret:
            await self._delete("Secret", action.name)


# ---------------------------------------------------------------------------------- delete
async def finalize(runtime: Runtime, body: dict[str, Any]) -> None:
    """On deletion: remove every registration, pod and Secret of the scale set.

    Raises GitHubError while GitHub is unreachable, so the finalizer stays and is retried
    with backoff (the caller turns it into a temporary error).
    """
    scale_set = ScaleSet(body)
    ident = scale_set.identity
    spec = scale_set.spec
    selector = scale_set_selector(ident)
    try:
        target = parse_config_url(spec.github.config_url)
        credentials = GitHubCredentials.from_secret_data(
            spec.github.secret_ref.name,
            await runtime.kube.read_secret_data(ident.namespace, spec.github.secret_ref.name),
        )
    except (InvalidGitHubConfigError, NotFoundError):
        log.warning(
            "%s/%s: no usable GitHub config; removing pods and Secrets only",
            ident.namespace,
            ident.name,
        )
        github = None
    else:
        github = _side_of(runtime, spec, target, credentials, ident)
    pods, secrets_ = await asyncio.gather(
        runtime.kube.list_pods(ident.namespace, selector),
        runtime.kube.list_secrets(ident.namespace, selector),
    )
    if github is not None:
        if isinstance(github.gateway, ScaleSetRegistrar):
            await _finalize_scale_set(runtime, github, spec, secrets_)
            runtime.drop_scale_set_side(target, credentials, ident.namespace, ident.name)
        else:
            if github.book.swept_at is None:
                await github.book.sweep()  # a fresh process: find registrations no Secret records
            await _deregister_all(github, ident, secrets_)
    await asyncio.gather(
        *(runtime.kube.delete_pod(ident.namespace, p["metadata"]["name"]) for p in pods),
        *(runtime.kube.delete_secret(ident.namespace, s["metadata"]["name"]) for s in secrets_),
    )
    runtime.wakeups.pop((ident.namespace, ident.name), None)
    runtime.written.pop((ident.namespace, ident.name), None)
    runtime.metrics.forget_scale_set(ident.namespace, ident.name)


async def _deregister_all(
    side: GitHubSide, ident: ScaleSetIdentity, secrets_: list[dict[str, Any]]
) -> None:
    """Every registration of the scale set: those its Secrets record, and any the shared
    sweep has seen under its runner names (left by a crash before the id was stored)."""
    known = {
        s.registration.name: s.registration.id
        for s in side.book.runners_of(ident.name, ident.namespace)
    }
    for secret in secrets_:
        runner_id = (secret["metadata"].get("annotations") or {}).get(c.ANNOTATION_RUNNER_ID, "")
        if runner_id.isdigit():
            known[secret["metadata"]["name"]] = int(runner_id)
    for name, registration_id in known.items():
        # A busy one's pod goes too; GitHub drops the runner when its job fails.
        with contextlib.suppress(RunnerBusyError):
            await side.gateway.delete_runner(registration_id, name)
        side.book.forget(name, registration_id)


def _side_of(
    runtime: Runtime,
    spec: RunnerScaleSetSpec,
    target: GitHubTarget,
    credentials: GitHubCredentials,
    ident: ScaleSetIdentity,
) -> GitHubSide:
    if spec.github.protocol == c.PROTOCOL_SCALE_SET:
        return runtime.scale_set_side(
            target, credentials, spec.github.config_url, ident.namespace, ident.name
        )
    return runtime.github(target, credentials)


async def _finalize_scale_set(
    runtime: Runtime, side: GitHubSide, spec: RunnerScaleSetSpec, secrets_: list[dict[str, Any]]
) -> None:
    """Scale-set protocol: remove the runners the Secrets record (busy ones too: their pods
    go, and GitHub fails their jobs), then the GitHub scale set itself."""
    registrar = _registrar(side)
    if not await registrar.find(spec.github.runner_group):
        return  # never registered, or already removed
    for secret in secrets_:
        runner_id = (secret["metadata"].get("annotations") or {}).get(c.ANNOTATION_RUNNER_ID, "")
        if runner_id.isdigit():
            with contextlib.suppress(RunnerBusyError):
                await registrar.delete_runner(int(runner_id), secret["metadata"]["name"])
    await registrar.delete()
