"""Reconcile one RunnerScaleSet: observe -> plan -> execute -> report, in a loop per object.

Each scale set gets one long-running loop (a kopf daemon), so rounds of the same object never
overlap; pod events and spec changes wake it early, and it resyncs every few seconds anyway.
A round that cannot observe GitHub plans nothing (runners would look unregistered and be
replaced): existing runners are left alone and the round reports GitHubReachable=False.

Layer: services. I/O only through the gateways.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from runnerfleet import conventions as c
from runnerfleet.builders.node_pool import Placement, placement, team_may_use
from runnerfleet.builders.runner import (
    ScaleSetIdentity,
    build_runner_pod,
    build_runner_secret,
    scale_set_selector,
)
from runnerfleet.gateways.github import (
    GitHubError,
    GitHubGateway,
    RateLimitedError,
    Registration,
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
from runnerfleet.models.base import parse_duration
from runnerfleet.models.github import GitHubCredentials, InvalidGitHubConfigError, parse_config_url
from runnerfleet.models.node_pool import RunnerNodePoolSpec
from runnerfleet.models.runner_scale_set import RunnerScaleSetSpec, RunnerScaleSetStatus
from runnerfleet.planning.observe import observe
from runnerfleet.planning.runners import (
    Action,
    CreatePod,
    CreateRunners,
    DeletePod,
    DeleteRegistration,
    Limits,
    ProtectPod,
    RegisterRunner,
    RemoveRunner,
    plan,
)
from runnerfleet.planning.status import (
    Problem,
    RoundOutcome,
    build_status,
    memory_from_status,
    rfc3339,
)
from runnerfleet.services.loop import reconcile_loop

log = logging.getLogger("runnerfleet.scaleset")

RESYNC_SECONDS = 5.0
MIN_ROUND_GAP = 0.2
CONCURRENCY = 16


@dataclass
class Runtime:
    """Process-wide state shared by every scale set's loop."""

    kube: KubeGateway
    github_factory: Callable[[Any, GitHubCredentials], GitHubGateway] = GitHubGateway
    wakeups: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    listener_wakeups: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    pool_wakeups: dict[str, asyncio.Event] = field(default_factory=dict)
    mode: str = c.MODE_ACTIVE  # c.MODE_STANDBY: a global suspend (blue/green)
    # GitHub target key -> epoch seconds until which its rate limit is exhausted.
    rate_limited_until: dict[str, float] = field(default_factory=dict)
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics.create)
    _github: dict[tuple[str, int], GitHubGateway] = field(default_factory=dict)

    def wake(self, namespace: str, name: str) -> None:
        self.wakeups.setdefault((namespace, name), asyncio.Event()).set()

    def github(self, target: Any, credentials: GitHubCredentials) -> GitHubGateway:
        key = (target.key, hash((credentials.token, credentials.app_id, credentials.private_key)))
        if key not in self._github:
            self._github[key] = self.github_factory(target, credentials)
        return self._github[key]


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


def limits_of(spec: RunnerScaleSetSpec, standby: bool = False) -> Limits:
    return Limits(
        min_runners=spec.min_runners,
        max_runners=spec.max_runners,
        suspend=spec.suspend or standby,
        registration_timeout=parse_duration(spec.registration_timeout),
        max_runner_age=parse_duration(spec.max_runner_age),
        keep_failed_for=parse_duration(spec.keep_failed_runners_for),
        scale_down_delay=parse_duration(spec.scale_down_delay),
    )


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
            for event in list(runtime.wakeups.values()):
                event.set()
        await asyncio.sleep(every)


# ---------------------------------------------------------------------------------- loop
async def run(runtime: Runtime, namespace: str, name: str, stopped: Callable[[], bool]) -> None:
    """Reconcile until `stopped()`: after each round, wait for a wake-up or the resync."""
    wake = runtime.wakeups.setdefault((namespace, name), asyncio.Event())
    await reconcile_loop(
        f"RunnerScaleSet {namespace}/{name}",
        lambda: reconcile_once(runtime, namespace, name),
        wake, stopped, RESYNC_SECONDS, MIN_ROUND_GAP,
    )  # fmt: skip


async def reconcile_once(runtime: Runtime, namespace: str, name: str) -> RoundOutcome:
    """One round: observe, plan, execute, and write status (and Events for problems)."""
    kube = runtime.kube
    scale_set = ScaleSet(await kube.get_scale_set(namespace, name))
    if scale_set.body["metadata"].get("deletionTimestamp"):
        return RoundOutcome(plan=None)
    started = time.monotonic()
    outcome = dataclasses.replace(
        await _round(runtime, scale_set), standby=runtime.mode == c.MODE_STANDBY
    )
    _record(runtime.metrics, scale_set, outcome, time.monotonic() - started)
    now = time.time()
    status = build_status(outcome, scale_set.status, scale_set.generation, now)
    await kube.patch_scale_set_status(namespace, name, status)
    await _post_events(kube, scale_set, outcome)
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
        credentials = GitHubCredentials.from_secret_data(
            spec.github.secret_ref.name,
            await runtime.kube.read_secret_data(ident.namespace, spec.github.secret_ref.name),
        )
    except InvalidGitHubConfigError as err:
        return RoundOutcome(None, [Problem("ConfigValid", "InvalidGitHubConfig", str(err))])
    except NotFoundError:
        message = f"Secret {spec.github.secret_ref.name} (spec.github.secretRef.name) not found"
        return RoundOutcome(None, [Problem("ConfigValid", "SecretNotFound", message)])
    github = runtime.github(target, credentials)
    blocked = runtime.rate_limited_until.get(target.key, 0.0)
    if time.time() < blocked:
        return RoundOutcome(None, [_rate_limited(blocked)])
    place, pool_problem = await _resolve_pool(runtime.kube, spec, ident)
    async with github.session():
        return await _converge(runtime, scale_set, spec, github, target.key, place, pool_problem)


async def _resolve_pool(
    kube: KubeGateway, spec: RunnerScaleSetSpec, ident: ScaleSetIdentity
) -> tuple[Placement | None, Problem | None]:
    """Where new runner pods go, or why none can be created (the pool is missing, going
    away, or isolated to other teams). Existing runners are never touched because of it."""
    if spec.node_pool is None:
        return None, None
    pool = spec.node_pool
    try:
        body = await kube.get_node_pool(pool)
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
    github: GitHubGateway,
    key: str,
    place: Placement | None,
    pool_problem: Problem | None,
) -> RoundOutcome:
    ident = scale_set.identity
    selector = scale_set_selector(ident)
    pods, secrets_ = await asyncio.gather(
        runtime.kube.list_pods(ident.namespace, selector),
        runtime.kube.list_secrets(ident.namespace, selector),
    )
    try:
        registrations = await github.list_runners()
    except RateLimitedError as err:
        runtime.rate_limited_until[key] = err.reset_at
        return RoundOutcome(None, [_rate_limited(err.reset_at)])
    except GitHubError as err:
        return RoundOutcome(None, [Problem("GitHubReachable", type(err).__name__, str(err))])

    now = time.time()
    status_model = RunnerScaleSetStatus.model_validate(scale_set.status)
    runners = observe(ident.name, ident.namespace, pods, secrets_, registrations, now)
    standby = runtime.mode == c.MODE_STANDBY
    decided = plan(
        runners, limits_of(spec, standby), status_model.demand,
        memory_from_status(scale_set.status), now,
    )  # fmt: skip
    actions = decided.actions
    if pool_problem is not None:
        actions = [a for a in actions if not isinstance(a, _CREATES)]
    problems = await _execute(runtime.kube, github, scale_set, spec, place, actions)
    if pool_problem is not None:
        problems.append(pool_problem)
    if github.rate_limited_until > time.time():
        runtime.rate_limited_until[key] = github.rate_limited_until
    scaled = any(isinstance(a, CreateRunners | RemoveRunner) for a in actions)
    return RoundOutcome(decided, problems, scaled)


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


def _rate_limited(until: float) -> Problem:
    return Problem(
        "GitHubReachable",
        "RateLimited",
        f"GitHub rate limit exhausted until {rfc3339(until)}; no GitHub calls until then, "
        "existing runners are kept",
    )


async def _post_events(kube: KubeGateway, scale_set: ScaleSet, outcome: RoundOutcome) -> None:
    previous = {cond.get("type"): cond for cond in scale_set.status.get("conditions", []) or []}
    for problem in outcome.problems:
        old = previous.get(problem.condition)
        if old is None or old.get("status") != "False" or old.get("message") != problem.message:
            await kube.event(scale_set.body, "Warning", problem.reason, problem.message)
    if outcome.plan is not None:
        for runner, reason in outcome.plan.failures:
            await kube.event(
                scale_set.body, "Warning", "RunnerFailed", f"runner {runner}: {reason}"
            )


# ---------------------------------------------------------------------------------- execute
async def _execute(
    kube: KubeGateway,
    github: GitHubGateway,
    scale_set: ScaleSet,
    spec: RunnerScaleSetSpec,
    place: Placement | None,
    actions: list[Action],
) -> list[Problem]:
    """Perform the actions with bounded concurrency; collect problems instead of stopping."""
    executor = _Executor(kube, github, scale_set.identity, spec, place)
    steps: list[Callable[[], Awaitable[None]]] = []
    for action in actions:
        if isinstance(action, CreateRunners):
            steps.extend(executor.create_runner for _ in range(action.count))
        else:
            steps.append(lambda a=action: executor.apply(a))  # type: ignore[misc]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def guarded(step: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            try:
                await step()
            except InvalidError as err:
                executor.problems.append(Problem("PodsAdmitted", "PodRejected", str(err)))
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
    return _dedupe(executor.problems)


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: dict[str, Problem] = {}
    for p in problems:
        seen.setdefault(p.condition, p)
    return list(seen.values())


@dataclass
class _Executor:
    kube: KubeGateway
    github: GitHubGateway
    owner: ScaleSetIdentity
    spec: RunnerScaleSetSpec
    place: Placement | None
    problems: list[Problem] = field(default_factory=list)

    async def apply(self, action: Action) -> None:
        match action:
            case RegisterRunner(name=name, stale_registration_id=stale):
                if stale is not None:
                    await self.github.delete_runner(stale, name)
                await self._register_and_start(name)
            case CreatePod(name=name):
                await self._create_pod(name)
            case RemoveRunner():
                await self._remove(action)
            case DeletePod(name=name):
                await self.kube.delete_pod(self.owner.namespace, name)
            case ProtectPod(name=name, protect=protect):
                value = "true" if protect else None
                await self.kube.annotate_pod(
                    self.owner.namespace, name, {c.ANNOTATION_DO_NOT_DISRUPT: value}
                )
            case DeleteRegistration(name=name, registration_id=reg_id):
                try:
                    await self.github.delete_runner(reg_id, name)
                except RunnerBusyError:
                    return

    async def create_runner(self) -> None:
        """Secret first (the intent record), then the JIT registration, then the pod."""
        name = c.runner_name(self.owner.name, self.owner.namespace, secrets.randbits(40))
        try:
            await self.kube.create(build_runner_secret(self.owner, name))
        except AlreadyExistsError:
            return  # astronomically unlikely name clash: the next round creates another
        await self._register_and_start(name)

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
        await self.kube.store_jit_config(self.owner.namespace, name, encoded, registration.id)
        await self._create_pod(name)

    async def _drop_registration_named(self, name: str) -> None:
        found: list[Registration] = [r for r in await self.github.list_runners() if r.name == name]
        for reg in found:
            await self.github.delete_runner(reg.id, name)

    async def _create_pod(self, name: str) -> None:
        try:
            await self.kube.create(build_runner_pod(self.owner, self.spec, name, self.place))
        except AlreadyExistsError:
            return

    async def _remove(self, action: RemoveRunner) -> None:
        """GitHub first (a busy runner stops the removal), then the pod, then the Secret."""
        if action.registration_id is not None:
            try:
                await self.github.delete_runner(action.registration_id, action.name)
            except RunnerBusyError:
                if action.require_idle:
                    return
        if action.has_pod and not action.keep_pod:
            await self.kube.delete_pod(self.owner.namespace, action.name)
        if action.has_secret:
            await self.kube.delete_secret(self.owner.namespace, action.name)


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
        github = runtime.github(target, credentials)
    if github is not None:
        async with github.session():
            await _deregister_all(github, ident)
    pods, secrets_ = await asyncio.gather(
        runtime.kube.list_pods(ident.namespace, selector),
        runtime.kube.list_secrets(ident.namespace, selector),
    )
    await asyncio.gather(
        *(runtime.kube.delete_pod(ident.namespace, p["metadata"]["name"]) for p in pods),
        *(runtime.kube.delete_secret(ident.namespace, s["metadata"]["name"]) for s in secrets_),
    )
    runtime.wakeups.pop((ident.namespace, ident.name), None)


async def _deregister_all(github: GitHubGateway, ident: ScaleSetIdentity) -> None:
    for reg in await github.list_runners():
        if c.is_runner_of(reg.name, ident.name, ident.namespace):
            # A busy one's pod goes too; GitHub drops the runner when its job fails.
            with contextlib.suppress(RunnerBusyError):
                await github.delete_runner(reg.id, reg.name)
