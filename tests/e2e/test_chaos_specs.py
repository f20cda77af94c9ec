"""Generated specs sent through the apiserver (issue 12, scenario 6).

RunnerScaleSet, TeamListener and RunnerNodePool specs are drawn with hypothesis
(tests/support/specs.py: plausible values, most with one fault from a catalogue) from a
printed seed (RUNNERFLEET_CHAOS_SEED replays a run) and created in batches, as kubectl would
send them (`fieldValidation=Strict`). What must hold:

- a spec the apiserver refuses (400/422) is refused with a message naming the field its
  fault broke, and a spec the catalogue says the CRD must refuse is refused (and the other
  way round);
- an accepted object reaches a stable state with a condition: a `Ready` condition with a
  reason (True, or False saying why) within SETTLE seconds, and then stays quiet: at most
  QUIET_WRITES writes in the QUIET seconds that follow, and at most PER_MINUTE writes in any
  minute of its life (writes: its resourceVersion changes, the Events about it and the pods
  created for it, all counted by watches);
- a control scale set created first keeps exactly its runner pods (same UIDs) and
  registrations throughout, and the operator process never exits or restarts;
- deleting a batch leaves nothing behind (finalizers run).

Each batch: create, wait for every accepted object to settle, watch the quiet window,
delete, wait until gone; then check the control set and the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from runnerfleet import conventions as c
from runnerfleet.models.base import parse_duration
from tests.support.chaos import Outcome, github_requests, record, seed
from tests.support.factories import make_scale_set
from tests.support.fleet import Fleet
from tests.support.kube import wait_for
from tests.support.specs import ACCEPT, POOL, REFUSE, RSS, TL, Context, GenSpec, draw_specs

CONTROL = "control"
CONTROL_RUNNERS = 2
# A settled object writes nothing while idle (docs/architecture.md: status is patched only
# when it changed), but a periodic repair or a re-posted Event may land in the window.
QUIET_WRITES = 2
# Creation costs a few writes (kopf's finalizer and annotations, the first status patches,
# an Event or two, a minRunners pod or two and their status changes): about 10 measured.
# 30 a minute leaves room for a slow round and still catches a loop that retries every 2 s.
PER_MINUTE = 30
STILL = 3.0  # settled: a current Ready condition, and no write for this long
# Found by this scenario and not fixed yet (reported; see docs/chaos/webhooks-and-specs.md):
# counted in the outcome's details, not failed on, so the rest of the run still judges.
# Issues found and not yet fixed, tolerated (counted, not failed) so a run still judges the
# rest. Both found by this scenario are fixed: "resources-unparseable" (a TeamListener whose
# spec.resources holds no quantity hot-looped without a condition: the apiserver's 400 is
# now a refusal, 0d3feb5) and "runner-churn" (maxRunnerAge or registrationTimeout shorter
# than a runner's start replaced runners continuously: the CRD now refuses them).
KNOWN: dict[str, str] = {}
PLURALS = {RSS: c.RUNNER_SCALE_SET_PLURAL, TL: c.TEAM_LISTENER_PLURAL,
           POOL: c.RUNNER_NODE_POOL_PLURAL}  # fmt: skip


@dataclass
class Form:
    specs: int
    batch: int
    settle: float  # seconds an accepted batch has to reach its conditions
    quiet: float  # seconds watched after settling: the hot-loop window


@dataclass
class Writes:
    """Writes per object, (kind, name) -> times, from watches of the three kinds, Events in
    every namespace (a cluster-scoped pool's go to `default`) and the fleet's pods."""

    times: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    what: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    _last: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, f: Fleet) -> Writes:
        custom, core = client.CustomObjectsApi(f.kube), client.CoreV1Api(f.kube)
        for kind in (RSS, TL):
            self._follow(custom.list_namespaced_custom_object, c.GROUP, c.VERSION, f.namespace,
                         PLURALS[kind], key=_object_key)  # fmt: skip
        self._follow(custom.list_cluster_custom_object, c.GROUP, c.VERSION, PLURALS[POOL],
                     key=_object_key)  # fmt: skip
        self._follow(core.list_event_for_all_namespaces, key=_event_key)
        self._follow(
            core.list_namespaced_pod, f.namespace, key=_pod_key, label_selector=c.LABEL_SCALE_SET
        )
        return self

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _follow(
        self, lister: Callable[..., Awaitable[Any]], *args: Any,
        key: Callable[[Any], tuple[str, str] | None], **kwargs: Any,
    ) -> None:  # fmt: skip
        self.tasks.append(asyncio.create_task(self._run(lister, args, kwargs, key)))

    async def _run(
        self, lister: Callable[..., Awaitable[Any]], args: tuple[Any, ...],
        kwargs: dict[str, Any], key: Callable[[Any], tuple[str, str] | None],
    ) -> None:  # fmt: skip
        while True:  # a watch ends (timeout, 410 Gone): list again and resume from there
            listed = await lister(*args, **kwargs)
            meta = listed["metadata"] if isinstance(listed, dict) else listed.metadata
            version = meta["resourceVersion"] if isinstance(meta, dict) else meta.resource_version
            stream = watch.Watch()
            with contextlib.suppress(ApiException):
                async for event in stream.stream(
                    lister, *args, resource_version=version, timeout_seconds=60, **kwargs
                ):
                    if event["type"] in ("ADDED", "MODIFIED") and (k := key(event["object"])):
                        self.times[k].append(time.time())
                        self.what[k].append(self._describe(k, event["object"]))
            stream.stop()

    def _describe(self, key: tuple[str, str], obj: Any) -> str:
        """What a write changed, for the failure message: status keys, or the Event's reason."""
        if not isinstance(obj, dict):
            return f"Event {obj.reason}" if hasattr(obj, "reason") else "pod"
        old, self._last[key] = self._last.get(key, {}), obj
        new_status, old_status = obj.get("status") or {}, old.get("status") or {}
        keys = sorted(k for k in new_status.keys() | old_status.keys()
                      if new_status.get(k) != old_status.get(k))  # fmt: skip
        meta = "metadata" if obj["metadata"].get("annotations") != old.get("metadata", {}).get(
            "annotations") or obj["metadata"].get("finalizers") != old.get("metadata", {}).get(
            "finalizers") else ""  # fmt: skip
        return f"{'/'.join(keys) or meta or 'same'}"

    def since(self, kind: str, name: str, at: float) -> list[str]:
        pairs = zip(self.times.get((kind, name), []), self.what.get((kind, name), []), strict=True)
        return [w for t, w in pairs if t >= at]

    def last(self, kind: str, name: str) -> float:
        return max(self.times.get((kind, name), [0.0]))

    def count(self, kind: str, name: str, since: float, until: float) -> int:
        return sum(1 for t in self.times.get((kind, name), []) if since <= t <= until)

    def peak_per_minute(self, kind: str, name: str) -> int:
        times = sorted(self.times.get((kind, name), []))
        return max((sum(1 for u in times if t <= u < t + 60) for t in times), default=0)


def _object_key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def _event_key(event: Any) -> tuple[str, str] | None:
    involved = event.involved_object
    return (involved.kind, involved.name) if involved and involved.kind in PLURALS else None


def _pod_key(pod: Any) -> tuple[str, str] | None:
    owner = (pod.metadata.labels or {}).get(c.LABEL_SCALE_SET)
    return (RSS, owner) if owner else None


@dataclass
class Tally:
    refused: Counter[str] = field(default_factory=Counter)  # by kind
    accepted: Counter[str] = field(default_factory=Counter)
    unnamed: list[str] = field(default_factory=list)  # refusals not naming the field
    mismatched: list[str] = field(default_factory=list)  # against the catalogue's expectation
    unsettled: list[str] = field(default_factory=list)
    noisy: list[str] = field(default_factory=list)  # over QUIET_WRITES or PER_MINUTE
    conditions: Counter[str] = field(default_factory=Counter)  # "Kind Ready=False Reason"
    by_fault: Counter[str] = field(default_factory=Counter)  # "Kind fault: Ready=... Reason"
    known: Counter[str] = field(default_factory=Counter)  # KNOWN issues hit, by key
    held: int = 0  # deleted objects whose finalizer waited for an unreachable GitHub
    max_quiet: int = 0
    max_per_minute: int = 0
    settle_s: list[float] = field(default_factory=list)


async def _create(f: Fleet, spec: GenSpec) -> str | None:
    """Create as kubectl does (strict field validation); the refusal message, or None."""
    api = client.CustomObjectsApi(f.kube)
    try:
        if spec.kind == POOL:
            await api.create_cluster_custom_object(
                c.GROUP, c.VERSION, PLURALS[POOL], spec.body, field_validation="Strict"
            )
        else:
            await api.create_namespaced_custom_object(
                c.GROUP, c.VERSION, f.namespace, PLURALS[spec.kind], spec.body,
                field_validation="Strict",
            )  # fmt: skip
    except ApiException as err:
        if err.status not in (400, 422):
            raise
        return str(json.loads(err.body or "{}").get("message") or err.body)
    return None


async def _get(f: Fleet, spec: GenSpec) -> dict[str, Any] | None:
    api = client.CustomObjectsApi(f.kube)
    try:
        if spec.kind == POOL:
            got: dict[str, Any] = await api.get_cluster_custom_object(
                c.GROUP, c.VERSION, PLURALS[POOL], spec.name
            )
        else:
            got = await api.get_namespaced_custom_object(
                c.GROUP, c.VERSION, f.namespace, PLURALS[spec.kind], spec.name
            )
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    return got


def _ready(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """The object's Ready condition once it is current (reason given, generation seen)."""
    if obj is None:
        return None
    status = obj.get("status") or {}
    seen = status.get("observedGeneration")
    if seen is not None and seen != obj["metadata"].get("generation"):
        return None
    ready = next((x for x in status.get("conditions") or [] if x.get("type") == "Ready"), None)
    if obj["kind"] == TL and ready and ready.get("status") == "True" and not status.get("poll"):
        return None  # a running listener is still starting: its first poll report is to come
    return ready if ready and ready.get("reason") and ready.get("status") else None


async def _delete(f: Fleet, spec: GenSpec) -> None:
    api = client.CustomObjectsApi(f.kube)
    with contextlib.suppress(ApiException):
        if spec.kind == POOL:
            await api.delete_cluster_custom_object(c.GROUP, c.VERSION, PLURALS[POOL], spec.name)
        else:
            await api.delete_namespaced_custom_object(
                c.GROUP, c.VERSION, f.namespace, PLURALS[spec.kind], spec.name
            )


async def _release(f: Fleet, spec: GenSpec) -> int:
    """Strip the finalizer of a deleted object still held; 1 if it was held."""
    if await _get(f, spec) is None:
        return 0
    api = client.CustomObjectsApi(f.kube)
    with contextlib.suppress(ApiException):
        await api.patch_namespaced_custom_object(
            c.GROUP, c.VERSION, f.namespace, PLURALS[spec.kind], spec.name,
            {"metadata": {"finalizers": None}}, _content_type="application/merge-patch+json",
        )  # fmt: skip
    await wait_for(lambda: _get(f, spec), lambda o: o is None, what=f"{spec.name} gone")
    return 1


def _judge_refusal(spec: GenSpec, message: str | None, tally: Tally) -> None:
    what = f"{spec.kind}/{spec.name} ({spec.fault}, {spec.field})"
    if message is None:
        tally.accepted[spec.kind] += 1
        if spec.expect == REFUSE:
            tally.mismatched.append(f"{what}: accepted, the CRD should refuse it")
        return
    tally.refused[spec.kind] += 1
    if spec.expect == ACCEPT:
        tally.mismatched.append(f"{what}: refused: {message[:300]}")
    elif spec.field and spec.field not in message:
        tally.unnamed.append(f"{what}: {message[:300]}")


async def _batch(f: Fleet, specs: list[GenSpec], form: Form, writes: Writes, tally: Tally) -> None:
    gate = asyncio.Semaphore(8)

    async def create(spec: GenSpec) -> str | None:
        async with gate:
            return await _create(f, spec)

    began = time.time()
    messages = await asyncio.gather(*(create(s) for s in specs))
    accepted = []
    for spec, message in zip(specs, messages, strict=True):
        _judge_refusal(spec, message, tally)
        if message is None:
            accepted.append(spec)
    try:
        await _settle(f, accepted, form, writes, tally, began)
    finally:
        await asyncio.gather(*(_delete(f, s) for s in accepted))
        # By design, a scale set whose GitHub cannot be reached keeps its finalizer (its
        # registrations cannot be removed): an admin removes it; the test does the same.
        held = [s for s in accepted if s.fault == "config-url-unreachable"]
        rest = [s for s in accepted if s not in held]
        await wait_for(
            lambda: asyncio.gather(*(_get(f, s) for s in rest)),
            lambda objs: all(o is None for o in objs),
            what="the batch deleted (finalizers done)", within=90,
        )  # fmt: skip
        for spec in held:
            tally.held += await _release(f, spec)


async def _settle(
    f: Fleet, accepted: list[GenSpec], form: Form, writes: Writes, tally: Tally, began: float
) -> None:
    deadline = time.monotonic() + form.settle
    ready: dict[str, dict[str, Any]] = {}
    while len(ready) < len(accepted) and time.monotonic() < deadline:
        for spec, obj in zip(accepted, await asyncio.gather(*(_get(f, s) for s in accepted)),
                             strict=True):  # fmt: skip
            still = time.time() - writes.last(spec.kind, spec.name) >= STILL
            if spec.name not in ready and still and (cond := _ready(obj)) is not None:
                ready[spec.name] = cond
                tally.settle_s.append(time.time() - began)
        await asyncio.sleep(0.5)  # the polling rate of the settle check
    for spec in (s for s in accepted if s.name not in ready):
        if (known := _known(spec)) is not None:
            tally.known[known] += 1
        else:
            tally.unsettled.append(f"{spec.kind}/{spec.name} ({spec.fault})")
    settled = time.time()
    await asyncio.sleep(form.quiet)  # the hot-loop window: writes are counted by the watches
    for spec in accepted:
        if spec.name in ready:
            cond = ready[spec.name]
            tally.conditions[f"{spec.kind} Ready={cond['status']} {cond['reason']}"] += 1
            tally.by_fault[
                f"{spec.kind} {spec.fault}: Ready={cond['status']} {cond['reason']}"
            ] += 1
        quiet = writes.count(spec.kind, spec.name, settled, settled + form.quiet)
        peak = writes.peak_per_minute(spec.kind, spec.name)
        tally.max_quiet, tally.max_per_minute = (
            max(tally.max_quiet, quiet), max(tally.max_per_minute, peak))  # fmt: skip
        if (quiet > QUIET_WRITES or peak > PER_MINUTE) and (known := _known(spec)):
            tally.known[known] += 1
        elif quiet > QUIET_WRITES or peak > PER_MINUTE:
            tally.noisy.append(f"{spec.kind}/{spec.name} ({spec.fault}): {quiet} writes "
                               f"while settled, {peak} in a minute; since creation: "
                               f"{writes.since(spec.kind, spec.name, began)}")  # fmt: skip


def _known(spec: GenSpec) -> str | None:
    """The KNOWN issue this spec runs into, if any (only while it is in KNOWN)."""
    key = _issue(spec)
    return key if key in KNOWN else None


def _issue(spec: GenSpec) -> str | None:
    """The issue this spec would have run into before its fix, if any."""
    if spec.fault == "resources-unparseable":
        return spec.fault
    body = spec.body.get("spec") or {}
    short = [body.get(k) for k in ("maxRunnerAge", "registrationTimeout")]
    if (
        spec.kind == RSS
        and body.get("minRunners")
        and any(isinstance(d, str) and _seconds(d) < 10 for d in short)
    ):
        return "runner-churn"
    return None


def _seconds(duration: str) -> float:
    try:
        return parse_duration(duration)
    except ValueError:
        return float("inf")


async def _control(f: Fleet) -> tuple[set[str], set[str]]:
    """The control set's pod UIDs and registration names."""
    pods = {p.metadata.uid for p in await f.pods(CONTROL) if not p.metadata.deletion_timestamp}
    return pods, set(f.registrations(CONTROL))


async def _run(f: Fleet, form: Form, name: str) -> None:
    run_seed = seed("generated specs")
    specs = draw_specs(Context(f.config_url), form.specs, run_seed)
    await f.apply_scale_set(make_scale_set(
        CONTROL, config_url=f.config_url, labels=["self-hosted", "control"],
        min_runners=CONTROL_RUNNERS, max_runners=CONTROL_RUNNERS,
    ))  # fmt: skip
    await f.expect_runners(CONTROL, idle=CONTROL_RUNNERS, within=60)
    control, pid = await _control(f), f.operator.proc.pid if f.operator.proc else None
    f.github.reset_counters()
    writes, tally = Writes().start(f), Tally()
    changed: list[str] = []
    began = time.time()
    failure: BaseException | None = None
    try:
        for at in range(0, len(specs), form.batch):
            await _batch(f, specs[at : at + form.batch], form, writes, tally)
            print(f"specs {at}..{at + form.batch - 1} done at {time.time() - began:.0f} s: "
                  f"{sum(tally.refused.values())} refused, {sum(tally.accepted.values())} "
                  f"accepted so far")  # fmt: skip
            if (now := await _control(f)) != control:
                changed.append(f"after spec {at + form.batch}: {now} (was {control})")
    except AssertionError as err:  # recorded below, then raised: a failing run leaves its row
        failure = err
    finally:
        await writes.stop()
    alive = f.operator.proc is not None and f.operator.proc.poll() is None
    same_process = alive and f.operator.proc is not None and f.operator.proc.pid == pid
    tracebacks = f.operator.logs().count("Traceback")
    answered, counted = github_requests(f)
    record(Outcome(
        scenario="6 generated specs", form=name,
        faults=f"{len(specs)} generated specs, {sum(s.fault != 'none' for s in specs)} faulty",
        jobs=0, lost=len(f.runners.lost_jobs), duplicates=0, orphans=len(changed),
        convergence_s=round(max(tally.settle_s, default=0.0), 1), github_requests=answered,
        github_counted=counted, seed=run_seed,
        found="a scale set naming a runner group GitHub lacks could never be deleted (fixed)",
        details={
            "refused": dict(tally.refused), "accepted": dict(tally.accepted),
            "refusals_not_naming_the_field": len(tally.unnamed),
            "against_expectation": len(tally.mismatched), "unsettled": len(tally.unsettled),
            "noisy": len(tally.noisy), "max_writes_while_settled": tally.max_quiet,
            "max_writes_per_minute": tally.max_per_minute,
            "conditions": dict(tally.conditions), "operator_tracebacks": tracebacks,
            "operator_same_process": same_process, "known_issues_hit": dict(tally.known),
            "finalizers_held_by_unreachable_github": tally.held,
            "wall_s": round(time.time() - began, 1),
        },
    ))  # fmt: skip
    for title, lines in (("unsettled", tally.unsettled), ("noisy", tally.noisy),
                         ("against the catalogue", tally.mismatched)):  # fmt: skip
        print(f"{title}: {len(lines)}", *(f"  {line[:600]}" for line in lines), sep="\n")
    print("accepted specs, by fault and the condition they settled with:")
    for line, count in sorted(tally.by_fault.items()):
        print(f"  {count:4d}  {line}")
    if failure is not None:
        raise failure
    assert tally.unnamed == [], "refusals that do not name the field:\n" + "\n".join(tally.unnamed)
    assert tally.mismatched == [], "against the catalogue:\n" + "\n".join(tally.mismatched)
    assert tally.unsettled == [], f"no Ready condition within {form.settle:g} s: {tally.unsettled}"
    assert tally.noisy == [], "hot loops:\n" + "\n".join(tally.noisy)
    assert changed == [], f"the control set's runners changed: {changed}"
    assert same_process, "the operator process exited or was restarted"
    assert tracebacks == 0, "the operator logged a traceback (see its log above)"


async def test_generated_specs_are_refused_by_field_or_settle(running_fleet: Fleet) -> None:
    """Short form (make test): 50 specs in one batch."""
    await _run(running_fleet, Form(specs=50, batch=50, settle=30, quiet=6), "short")


@pytest.mark.slow
@pytest.mark.chaos
@pytest.mark.timeout(2400)
async def test_generated_specs_long_form(running_fleet: Fleet) -> None:
    """Issue 12's size (make chaos): 1,000 specs in batches of 50."""
    await _run(running_fleet, Form(specs=1000, batch=50, settle=60, quiet=10), "long")
