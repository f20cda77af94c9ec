"""Fleet benchmark (`make bench-fleet`): T teams x S scale sets on kwok nodes, with the fake
GitHub's limits on, through four phases, written to bench/fleet.json.

Everything runs against one local control plane: the operator as two real processes with
leader election (the chart's shape), one TeamListener per team (the real `runnerfleet listen`
program through the stand-in kubelet, or demand written directly for large fleets), the fake
GitHub with an org of other registered runners, and the simulated runners. Phases:

1. control: nothing of ours running yet; the apiserver's own request rate (kwok, scheduler,
   controller-manager) is the baseline subtracted from every later apiserver figure;
2. idle: the fleet settled at minRunners, no jobs, for `--idle` seconds;
3. stream: jobs arrive at `--stream-rate` per second for `--stream-seconds`, until all are done;
4. burst: `--burst` jobs at once, until all are done;
5. failover: SIGKILL the Lease holder and raise one scale set's minRunners at that moment;
   time to the new leader's first correct action (the runner pod it must create) and GitHub
   requests in the minute after.

`--protocol` picks the scale sets' `spec.github.protocol`: `rest` (the default, so results stay
comparable with earlier runs) or `scaleSet` (GitHub's runner scale-set protocol: each scale set
registered in the fake's Actions service, the listeners holding one session per scale set).
Every phase records the REST figures (all requests and those counted against the limit) and
the Actions-service requests, which GitHub does not count against the REST limit.

What each figure means is in docs/benchmarks.md.

    python bench/fleet.py --scale 0.02 --idle 60     # 2 teams x 10 scale sets
    python bench/fleet.py                            # 100 x 10, 5,000 runners, 200 nodes
    python bench/fleet.py --protocol scaleSet --teams 2 --scale-sets 5

Layer: tooling (a benchmark script, outside the package). I/O: a local control plane, child
processes (operators, listeners), the fake GitHub on 127.0.0.1, and the output file.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from runnerfleet import conventions as c
from runnerfleet.localcluster import LocalCluster, NodeSpec
from runnerfleet.localcluster.binaries import KUBERNETES_VERSION
from runnerfleet.sim.demand import write_demand
from runnerfleet.sim.demo import quantiles
from runnerfleet.sim.github import FakeGitHub, FakeJob, FakeRunner, RateLimit
from runnerfleet.sim.kubelet import ListenerKubelet
from runnerfleet.sim.operator_process import OperatorProcess
from runnerfleet.sim.runners import SimulatedRunners

ROOT = Path(__file__).resolve().parents[1]
ORG = "acme"
LEASE_NAMESPACE = "runnerfleet-system"
# The operator runs with the environment the chart gives it (charts/runnerfleet/values.yaml
# `malloc`): glibc malloc tuning that decides much of its steady memory.
CHART_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_ARENA_MAX": "2"}
LEASE_NAME = "runnerfleet-operator"
FULL = {"teams": 100, "scale_sets": 10, "runners": 5000, "nodes": 200}
PROTOCOLS = (c.PROTOCOL_REST, c.PROTOCOL_SCALE_SET)
ACTIONS_PREFIX = "/_services/pipelines/"  # the fake Actions service's routes start with it
Key = tuple[str, str]  # (namespace, scale set)


# ----------------------------------------------------------------------------- pure helpers
@dataclass(frozen=True)
class Shape:
    """How big the fleet is: teams x scale sets, runner capacity, nodes, the org's others."""

    teams: int
    scale_sets: int
    runners: int
    nodes: int
    other_runners: int

    @property
    def sets(self) -> int:
        return self.teams * self.scale_sets

    @property
    def fraction(self) -> float:
        """This fleet's size relative to the full one (by scale sets)."""
        return self.sets / (FULL["teams"] * FULL["scale_sets"])

    @property
    def max_runners(self) -> int:
        """maxRunners of each scale set, so that the fleet's total stays within `runners`."""
        return max(2, self.runners // self.sets)


def shape_for(
    scale: float,
    teams: int | None = None,
    scale_sets: int | None = None,
    runners: int | None = None,
    nodes: int | None = None,
    other_runners: int = 250,
) -> Shape:
    """The full fleet (100 x 10, 5,000 runners, 200 nodes) times `scale`; explicit values win.
    Scale shrinks the number of teams (each keeps its 10 scale sets); runners and nodes follow
    the number of scale sets. The org's other runners model the org, not the fleet: unscaled."""
    t = teams or max(1, round(FULL["teams"] * scale))
    s = scale_sets or FULL["scale_sets"]
    fraction = t * s / (FULL["teams"] * FULL["scale_sets"])
    r = runners or max(2 * t * s, round(FULL["runners"] * fraction))
    n = nodes or max(2, round(FULL["nodes"] * fraction))
    return Shape(t, s, r, n, other_runners)


def desired_runners(body: dict[str, Any]) -> int:
    """What the operator should keep for a RunnerScaleSet: min(max, min + assigned jobs)."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    if spec.get("suspend"):
        return 0
    assigned = int((status.get("demand") or {}).get("assignedJobs", 0))
    return min(int(spec.get("maxRunners", 0)), int(spec.get("minRunners", 0)) + assigned)


def per_hour(count: float, seconds: float) -> float:
    return round(count * 3600 / seconds, 1) if seconds > 0 else 0.0


def counts_against_limit(status: int) -> bool:
    """GitHub's rule as the fake applies it: a 304 (and a refused 401) is free."""
    return status not in (304, 401)


def limit_kind(status: int, body: str) -> str | None:
    """Which limit a 403/429 reports: `primary`, `secondary`, or None for other refusals."""
    if status not in (403, 429):
        return None
    text = body.lower()
    if "secondary rate limit" in text:
        return "secondary"
    return "primary" if "rate limit" in text else None


def parse_apiserver_requests(text: str) -> Counter[str]:
    """kube-apiserver's /metrics -> `apiserver_request_total` summed by "VERB resource"."""
    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != "apiserver_request_total":
                continue
            labels = sample.labels
            resource = labels.get("resource", "")
            if labels.get("subresource"):
                resource += "/" + labels["subresource"]
            out[f"{labels.get('verb', '')} {resource}"] += int(sample.value)
    return out


def delta(after: Counter[Any], before: Counter[Any]) -> Counter[Any]:
    return Counter({k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)})


def actions_endpoint(method: str, route: str) -> str:
    """ "METHOD route" of an Actions-service request, without the service's path prefix."""
    return f"{method} {route.removeprefix(ACTIONS_PREFIX)}"


def protocol_demand(
    jobs: Iterable[Any], runners: Iterable[Any], keys: Mapping[int, Key]
) -> dict[Key, tuple[int, tuple[str, ...]]]:
    """What a listener on the scale-set protocol reports per scale set, from the fake's state:
    GitHub's `totalAssignedJobs` (jobs routed and assigned to the GitHub scale set, running
    ones included, not completed) and the runners running a job (`busyRunners`, which the
    listener writes on JobStarted). `keys` maps GitHub scale-set ids to (namespace, name);
    every scale set in it gets an entry, so a drop to 0 is reported too."""
    assigned: Counter[int] = Counter()
    for job in jobs:
        if job.status != "completed" and job.scale_set_state == "assigned":
            assigned[job.scale_set_id] += 1
    busy: dict[int, list[str]] = {}
    for runner in runners:
        if runner.scale_set_id in keys and runner.busy:
            busy.setdefault(runner.scale_set_id, []).append(runner.name)
    return {key: (assigned[sid], tuple(sorted(busy.get(sid, ())))) for sid, key in keys.items()}


@dataclass
class LagTracker:
    """Reconcile lag: from a scale set's desired count going up (a demand or spec change seen
    on the watch) to that many live runner pods (Pending or Running, not deleting). A sample
    belongs to the phase it started in; one overtaken by the next change is `superseded`.
    Decreases only cancel (scale-down waits `scaleDownDelay` on purpose)."""

    phase: str = "setup"
    targets: dict[Key, int] = field(default_factory=dict)
    live: dict[Key, set[str]] = field(default_factory=dict)
    pending: dict[Key, tuple[Any, ...]] = field(
        default_factory=dict
    )  # at, target, phase[, planned]
    samples: dict[str, list[float]] = field(default_factory=dict)
    superseded: Counter[str] = field(default_factory=Counter)
    first_seen: dict[str, tuple[float, Key]] = field(default_factory=dict)
    # The first part of each lag: until the operator's status.desired showed the target
    # (it read the demand and planned); the rest is creating the pods and seeing them.
    planned: dict[str, list[float]] = field(default_factory=dict)
    unplanned: dict[Key, tuple[float, int, str]] = field(default_factory=dict)

    def on_scale_set(self, key: Key, target: int, now: float, desired: int | None = None) -> None:
        old = self.targets.get(key, 0)
        self.targets[key] = target
        if target != old:
            self.unplanned.pop(key, None)
            if key in self.pending:
                self.superseded[self.pending.pop(key)[2]] += 1
            if target > old:
                self.pending[key] = (now, target, self.phase)
                self.unplanned[key] = (now, target, self.phase)
                self._check(key, now)
        waiting = self.unplanned.get(key)
        if waiting is not None and (desired or 0) >= waiting[1]:
            self.planned.setdefault(waiting[2], []).append(now - waiting[0])
            del self.unplanned[key]

    def on_pod(self, key: Key, pod: str, live: bool, now: float) -> None:
        self.first_seen.setdefault(pod, (now, key))
        pods = self.live.setdefault(key, set())
        if live:
            pods.add(pod)
        else:
            pods.discard(pod)
        self._check(key, now)

    def _check(self, key: Key, now: float) -> None:
        wanted = self.pending.get(key)
        if wanted is not None and len(self.live.get(key, ())) >= wanted[1]:
            self.samples.setdefault(wanted[2], []).append(now - wanted[0])
            del self.pending[key]

    def figures(self, phase: str) -> dict[str, Any]:
        unresolved = sum(1 for p in self.pending.values() if p[2] == phase)
        return {
            **quantiles(self.samples.get(phase, [])),
            "samples": len(self.samples.get(phase, [])),
            "superseded": self.superseded[phase],
            "unresolved": unresolved,
            "until_planned": quantiles(self.planned.get(phase, [])),
        }

    def pods_after(self, key: Key, since: float) -> list[float]:
        return sorted(t for t, k in self.first_seen.values() if k == key and t >= since)


# ----------------------------------------------------------------------------- processes
def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


ROUND_METRICS = {
    "runnerfleet_reconcile_seconds_count": "rounds",
    "runnerfleet_reconcile_seconds_sum": "round_seconds",
    "runnerfleet_round_slot_wait_seconds_count": "slot_waits",
    "runnerfleet_round_slot_wait_seconds_sum": "slot_wait_seconds",
}


def round_metrics(port: int) -> Counter[str]:
    """The operator's round counters (summed over scale sets) from its /metrics."""
    out: Counter[str] = Counter()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except OSError:
        return out  # a killed replica
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ROUND_METRICS:
                out[ROUND_METRICS[sample.name]] += sample.value  # type: ignore[assignment]
    return out


def round_figures(before: Counter[str], after: Counter[str]) -> dict[str, Any]:
    """Rounds in the window, their mean length and mean wait for a round slot."""
    d = {k: after[k] - before[k] for k in ROUND_METRICS.values()}
    rounds, waits = d["rounds"], d["slot_waits"]
    return {
        "rounds": int(rounds),
        "round_seconds_mean": round(d["round_seconds"] / rounds, 3) if rounds > 0 else None,
        "slot_wait_seconds_mean": round(d["slot_wait_seconds"] / waits, 3) if waits > 0 else None,
    }


def proc_peak_rss_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), "VmHWM: 0 kB")
    return int(line.split()[1]) / 1024


@dataclass
class ClusterwideOperator(OperatorProcess):
    """`runnerfleet operator` watching the whole cluster, as the chart runs it by default
    (OperatorProcess always passes one --namespace)."""

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # FLEET_OPERATOR_WRAPPER: a script run instead of `-m runnerfleet.cli` with the same
        # arguments (bench/memprofile.py: the operator under a memory profiler).
        wrapper = os.environ.get("FLEET_OPERATOR_WRAPPER")
        entry = [wrapper] if wrapper else ["-m", "runnerfleet.cli"]
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *entry, "operator",
                 "--kubeconfig", str(self.kubeconfig), *self.args],
                stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "RUNNERFLEET_METRICS_PORT": str(self.metrics_port),
                     **self.env},
            )  # fmt: skip


class MeteredGitHub(FakeGitHub):
    """The fake GitHub, also sorting each 403/429 it answers into primary or secondary (by
    GitHub's message), and counting what counts against the limit, whichever version of the
    fake this is (with `GitHubLimits` or before it)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limited: Counter[str] = Counter()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        resp = await super()._middleware(request, handler)
        if isinstance(resp, web.Response) and resp.status in (403, 429):
            kind = limit_kind(resp.status, resp.text or "")
            self.limited[f"{kind or 'other'} {resp.status}"] += 1
        return resp

    def counted(self) -> Counter[str]:
        """Requests counted against the primary limit, by "METHOD route"."""
        by_endpoint = getattr(self, "counted_by_endpoint", None)
        if by_endpoint is not None:
            return Counter(by_endpoint)
        out: Counter[str] = Counter()
        for (method, route, status), n in self.requests.items():
            if counts_against_limit(status):
                out[f"{method} {route}"] += n
        return out

    def add_repository(self, name: str) -> None:
        adder = getattr(self, "add_repositories", None)
        if adder is not None:
            adder([name])
        elif name not in self.repositories:
            self.repositories.append(name)


def make_github(args: argparse.Namespace) -> MeteredGitHub:
    """The fake GitHub with GitHub's limits: the one place they are configured. With
    sim/github_limits.py: GitHub's defaults (primary budget, secondary limits, pages), the
    primary budget set by `--rate-limit`; before it: the fake's primary budget only."""
    try:
        from runnerfleet.sim.github_limits import GitHubLimits  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        github = MeteredGitHub()
        github.rate = RateLimit(limit=args.rate_limit)  # type: ignore[misc,unused-ignore]
        github.latency = args.github_latency
        return github
    limits = GitHubLimits(primary_per_hour=args.rate_limit, latency=args.github_latency)
    if args.no_limits:
        limits = GitHubLimits.off(latency=args.github_latency)
    return MeteredGitHub(limits=limits)


def limits_in_force(github: FakeGitHub) -> dict[str, Any]:
    limits = getattr(github, "limits", None)
    if limits is None:
        return {"model": "primary budget only (fake before GitHubLimits)",
                "primary_per_hour": github.rate.limit}  # fmt: skip
    return {"model": "GitHubLimits", **limits.__dict__}


def add_other_runners(github: FakeGitHub, count: int) -> None:
    """The rest of the org: registered runners no scale set owns (a fifth of them busy)."""
    for i in range(count):
        labels = ["self-hosted", "linux", "other"]
        runner = FakeRunner(10_000_000 + i, f"other-{i:05d}", f"org/{ORG}", labels, 1,
                            status="online", busy=i % 5 == 0)  # fmt: skip
        github.runners[runner.id] = runner


# ----------------------------------------------------------------------------- snapshots
@dataclass(frozen=True)
class Snapshot:
    at: float
    github: Counter[tuple[str, str, int]]
    counted: Counter[str]
    limited: Counter[str]
    apiserver: Counter[str]
    operator_cpu: float
    listeners_cpu: float
    actions: Counter[tuple[str, str, int]] = field(default_factory=Counter)  # Actions service
    bench_cpu: float = 0.0  # this process: the fake GitHub, simulated runners, watches
    machine: tuple[float, float] = (0.0, 0.0)  # machine_cpu_seconds()
    rounds: Counter[str] = field(default_factory=Counter)  # the operators' round metrics


def actions_figures(before: Snapshot, after: Snapshot, jobs: int = 0) -> dict[str, Any]:
    """The Actions-service requests of the window (never counted against the REST limit):
    per hour, per job, by endpoint (per hour), and its refusals (status >= 400) by status."""
    seconds = after.at - before.at
    requests = delta(after.actions, before.actions)
    total = sum(requests.values())
    by_endpoint: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    for (method, route, status), n in requests.items():
        by_endpoint[actions_endpoint(method, route)] += n
        if status >= 400:
            refused[f"{actions_endpoint(method, route)} {status}"] += n
    return {
        "actions_requests_per_hour": per_hour(total, seconds),
        "actions_requests_per_job": round(total / jobs, 2) if jobs else None,
        "actions_by_endpoint": {k: per_hour(v, seconds) for k, v in by_endpoint.most_common(8)},
        "actions_refused": dict(refused),
    }


def phase_figures(before: Snapshot, after: Snapshot, jobs: int = 0) -> dict[str, Any]:
    """GitHub, apiserver and CPU figures of the window between two snapshots."""
    seconds = after.at - before.at
    total = sum(delta(after.github, before.github).values())
    by_endpoint = delta(after.counted, before.counted)
    counted = sum(by_endpoint.values())
    api = delta(after.apiserver, before.apiserver)
    return {
        "seconds": round(seconds, 1),
        "github_requests_per_hour": per_hour(total, seconds),
        "github_counted_per_hour": per_hour(counted, seconds),
        "github_counted_per_job": round(counted / jobs, 2) if jobs else None,
        "github_counted_by_endpoint": {
            k.replace("/api/v3", ""): per_hour(v, seconds) for k, v in by_endpoint.most_common(6)
        },
        "github_rate_limited": dict(delta(after.limited, before.limited)),
        "apiserver_requests_per_second": round(sum(api.values()) / seconds, 2),
        "apiserver_top": {k: round(v / seconds, 2) for k, v in api.most_common(8)},
        "operator_cpu_per_second": round((after.operator_cpu - before.operator_cpu) / seconds, 3),
        "listeners_cpu_per_second": round(
            max(0.0, after.listeners_cpu - before.listeners_cpu) / seconds, 3
        ),
        # Where the machine's 2 cores went: the fake and simulated runners run in the bench
        # process; a phase whose machine is saturated measures the machine, not the design.
        "bench_cpu_per_second": round((after.bench_cpu - before.bench_cpu) / seconds, 3),
        "machine_cpu_busy": round(
            (after.machine[0] - before.machine[0])
            / max(1e-9, after.machine[1] - before.machine[1]),
            3,
        ),
        "operator_rounds": round_figures(before.rounds, after.rounds),
        **actions_figures(before, after, jobs),
    }


# ----------------------------------------------------------------------------- the bench
@dataclass
class Bench:
    args: argparse.Namespace
    shape: Shape
    cluster: LocalCluster
    api: ApiClient
    work: Path
    console: Console
    github: MeteredGitHub = field(default_factory=lambda: MeteredGitHub())
    tracker: LagTracker = field(default_factory=LagTracker)
    operators: list[OperatorProcess] = field(default_factory=list)
    kubelets: list[ListenerKubelet] = field(default_factory=list)
    held: list[FakeJob] = field(default_factory=list)  # the full phase's jobs
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    peak_rss: float = 0.0
    operator_cpu_dead: float = 0.0  # CPU of killed replicas, so totals stay monotonic
    rounds_dead: Counter[str] = field(default_factory=Counter)  # and their round counters

    @property
    def use_listener(self) -> bool:
        return bool(self.args.demand == "listener")

    @property
    def scale_set_protocol(self) -> bool:
        return bool(self.args.protocol == c.PROTOCOL_SCALE_SET)

    def labels(self, team: int, scale_set: int) -> list[str]:
        return ["self-hosted", f"team-{team:03d}", f"set-{scale_set:02d}"]

    # ------------------------------------------------------------------ measurement
    async def apiserver_counts(self) -> Counter[str]:
        resp = await asyncio.to_thread(self.cluster.api().get, "/metrics")
        return await asyncio.to_thread(parse_apiserver_requests, str(resp.body))

    def operator_cpu(self) -> float:
        live = sum(proc_cpu_seconds(op.proc.pid) for op in self.operators if op.proc)
        for op in self.operators:
            if op.proc and op.proc.poll() is None:
                self.peak_rss = max(self.peak_rss, proc_peak_rss_mib(op.proc.pid))
        return live + self.operator_cpu_dead

    async def operator_rounds(self) -> Counter[str]:
        total: Counter[str] = Counter(self.rounds_dead)
        for op in self.operators:
            if op.proc and op.proc.poll() is None:
                total.update(await asyncio.to_thread(round_metrics, op.metrics_port))
        return total

    async def snapshot(self) -> Snapshot:
        listeners = sum(
            proc_cpu_seconds(p.proc.pid) for k in self.kubelets for p in k.processes.values()
        )
        return Snapshot(
            time.monotonic(), Counter(self.github.requests), self.github.counted(),
            Counter(self.github.limited),
            await self.apiserver_counts(), self.operator_cpu(), listeners,
            Counter(self.github.actions.requests), time.process_time(), machine_cpu_seconds(),
            await self.operator_rounds(),
        )  # fmt: skip

    async def watch_forever(self, list_fn: Any, args: tuple[Any, ...], on_event: Any,
                            **kwargs: Any) -> None:  # fmt: skip
        while True:
            w = watch.Watch()
            try:
                async for event in w.stream(list_fn, *args, **kwargs):
                    on_event(event["type"], event["object"])
            except (ApiException, OSError, TimeoutError):
                await asyncio.sleep(0.5)  # re-watch after an apiserver hiccup
            finally:
                w.stop()

    def on_scale_set(self, kind: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        target = 0 if kind == "DELETED" else desired_runners(body)
        desired = (body.get("status") or {}).get("desired")
        self.tracker.on_scale_set(
            (meta["namespace"], meta["name"]), target, time.monotonic(),
            desired if isinstance(desired, int) else None,
        )  # fmt: skip

    def on_pod(self, kind: str, pod: Any) -> None:
        owner = (pod.metadata.labels or {}).get(c.LABEL_SCALE_SET, "")
        live = (
            kind != "DELETED"
            and pod.metadata.deletion_timestamp is None
            and pod.status.phase in ("Pending", "Running")
        )
        key = (pod.metadata.namespace, owner)
        self.tracker.on_pod(key, pod.metadata.name, live, time.monotonic())

    def start_watches(self) -> None:
        custom, core = client.CustomObjectsApi(self.api), client.CoreV1Api(self.api)
        selector = f"{c.LABEL_COMPONENT}={c.COMPONENT_RUNNER}"
        sets = (c.GROUP, c.VERSION, c.RUNNER_SCALE_SET_PLURAL)
        self.tasks += [
            asyncio.create_task(self.watch_forever(
                custom.list_cluster_custom_object, sets, self.on_scale_set)),
            asyncio.create_task(self.watch_forever(
                core.list_pod_for_all_namespaces, (), self.on_pod, label_selector=selector)),
        ]  # fmt: skip

    # ------------------------------------------------------------------ setup
    async def create_namespace(self, name: str) -> None:
        core = client.CoreV1Api(self.api)
        await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        for _ in range(600):
            with contextlib.suppress(ApiException):
                await core.read_namespaced_service_account("default", name)
                return
            await asyncio.sleep(0.1)  # the controller-manager creates it within moments
        raise RuntimeError(f"no default ServiceAccount in {name}")

    def scale_set(self, team: int, index: int) -> dict[str, Any]:
        resources = {"requests": {"cpu": "100m", "memory": "256Mi"}}
        return {
            "apiVersion": c.API_VERSION, "kind": c.RUNNER_SCALE_SET_KIND,
            "metadata": {"name": f"set-{index:02d}", "labels": {c.LABEL_TEAM: f"team-{team:03d}"}},
            # Explicit either way (`--protocol`): bench/fleet.json and fleet-200/1000.json
            # measure the REST path, bench/fleet-protocol-*.json the scale-set protocol.
            "spec": {"github": {"configUrl": f"{self.github.url}/{ORG}",
                                "secretRef": {"name": "github-app"},
                                "protocol": self.args.protocol},
                     "labels": self.labels(team, index), "minRunners": 1,
                     "maxRunners": self.shape.max_runners,
                     "template": {"spec": {"containers": [{"name": "runner",
                                                           "resources": resources}]}}},
        }  # fmt: skip

    def team_listener(self, team: int) -> dict[str, Any]:
        name = f"team-{team:03d}"
        return {
            "apiVersion": c.API_VERSION, "kind": c.TEAM_LISTENER_KIND, "metadata": {"name": name},
            "spec": {"team": name,
                     "github": {"configUrl": f"{self.github.url}/{ORG}",
                                "secretRef": {"name": "github-app"}},
                     "repositories": {"names": [f"{name}-app"]},
                     "scaleSetSelector": {"matchLabels": {c.LABEL_TEAM: name}},
                     "pollInterval": self.args.poll_interval, "replicas": 1},
        }  # fmt: skip

    async def setup_team(self, team: int, token: str) -> None:
        namespace = f"team-{team:03d}"
        await self.create_namespace(namespace)
        await client.CoreV1Api(self.api).create_namespaced_secret(namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name="github-app"),
            data={"github_token": base64.b64encode(token.encode()).decode()},
        ))  # fmt: skip
        self.github.add_repository(f"{ORG}/{namespace}-app")
        custom = client.CustomObjectsApi(self.api)
        for index in range(self.shape.scale_sets):
            await custom.create_namespaced_custom_object(
                c.GROUP, c.VERSION, namespace, c.RUNNER_SCALE_SET_PLURAL,
                self.scale_set(team, index),
            )  # fmt: skip
        if self.use_listener:
            kubelet = ListenerKubelet(self.api, self.cluster.kubeconfig, namespace, self.work)
            kubelet.start()
            self.kubelets.append(kubelet)
            await custom.create_namespaced_custom_object(
                c.GROUP, c.VERSION, namespace, c.TEAM_LISTENER_PLURAL, self.team_listener(team)
            )

    def start_operators(self) -> None:
        env = {"RUNNERFLEET_LEADER_ELECT": "true", "RUNNERFLEET_NAMESPACE": LEASE_NAMESPACE,
               "RUNNERFLEET_LEASE_SECONDS": str(self.args.lease_seconds),
               **({} if self.args.no_malloc_tuning else CHART_MALLOC_ENV)}  # fmt: skip
        for i in range(2):
            op = ClusterwideOperator(self.cluster.kubeconfig, LEASE_NAMESPACE,
                                     self.work / f"operator-{i}.log", env=env)  # fmt: skip
            op.start()
            self.operators.append(op)

    async def listeners_polled(self) -> bool:
        if not self.use_listener:
            return True
        custom = client.CustomObjectsApi(self.api)
        found = await custom.list_cluster_custom_object(c.GROUP, c.VERSION, c.TEAM_LISTENER_PLURAL)
        polled = [(i.get("status") or {}).get("poll", {}).get("lastSuccessfulPoll")
                  for i in found["items"]]  # fmt: skip
        return len(polled) == self.shape.teams and all(bool(p) for p in polled)

    def sessions_held(self) -> bool:
        """On the scale-set protocol with listeners: one session on every GitHub scale set."""
        if not (self.scale_set_protocol and self.use_listener):
            return True
        held = {s.scale_set_id for s in self.github.actions.sessions.values()}
        return len(held) >= self.shape.sets

    async def operator_caught_up(self) -> bool:
        """Every scale set's status shows its minRunners idle and none pending: the operator
        has seen what GitHub shows. Without it the idle window opens while the operator still
        writes each set's pending -> idle (on the scale-set protocol it learns that a runner
        is online from its agent read, seconds after GitHub shows it), and counts those
        writes as idle churn."""
        found = await client.CustomObjectsApi(self.api).list_cluster_custom_object(
            c.GROUP, c.VERSION, c.RUNNER_SCALE_SET_PLURAL
        )
        items = found["items"]
        return len(items) >= self.shape.sets and all(
            (i.get("status") or {}).get("idle", 0) >= (i.get("spec") or {}).get("minRunners", 0)
            and not (i.get("status") or {}).get("pending")
            for i in items
        )

    async def settle(self) -> float:
        """Wait until every scale set has its minRunners online, every listener polled and,
        on the scale-set protocol, holds its sessions, and the operator's status says so."""
        started = time.monotonic()
        deadline = started + self.args.settle_timeout
        while True:
            ours = [r for r in self.github.runners.values() if not r.name.startswith("other-")]
            online = sum(1 for r in ours if r.status == "online")
            if (
                online >= self.shape.sets
                and self.sessions_held()
                and (await self.listeners_polled())
                and (await self.operator_caught_up())
            ):
                return round(time.monotonic() - started, 1)
            if time.monotonic() > deadline:
                sessions = len(self.github.actions.sessions)
                raise RuntimeError(f"fleet not settled: {online}/{self.shape.sets} runners "
                                   f"online, {sessions} sessions")  # fmt: skip
            await asyncio.sleep(1)  # a benchmark's progress check, not a test's sync

    async def direct_demand(self) -> None:
        """Play every team's listener: write each scale set's demand from the fake's jobs
        (queued + in progress) once a second when it changed."""
        if self.scale_set_protocol:
            await self.direct_protocol_demand()
            return
        written: dict[Key, int] = {}
        while True:
            counts: Counter[Key] = Counter()
            for job in self.github.jobs.values():
                if job.status in ("queued", "in_progress"):
                    counts[(job.labels[1], job.labels[2])] += 1
            changed = {k: counts.get(k, 0) for k in set(counts) | set(written)
                       if counts.get(k, 0) != written.get(k, 0)}  # fmt: skip
            sequence = int(time.time() * 1000)
            for (namespace, name), n in changed.items():
                await write_demand(self.api, namespace, name, n, sequence, "bench")
                written[(namespace, name)] = n
            await asyncio.sleep(1)  # the demand writer's tick

    def github_scale_sets(self) -> dict[int, Key]:
        """GitHub scale-set id -> (namespace, name), by the name the operator registers."""
        ours = {c.github_scale_set_name(f"set-{i:02d}", f"team-{t:03d}"):
                (f"team-{t:03d}", f"set-{i:02d}")
                for t in range(self.shape.teams) for i in range(self.shape.scale_sets)}  # fmt: skip
        return {s.id: ours[s.name] for s in self.github.actions.scale_sets.values()
                if s.name in ours}  # fmt: skip

    async def direct_protocol_demand(self) -> None:
        """Play the listeners on the scale-set protocol: once a second, each scale set's
        GitHub `totalAssignedJobs` and busy runners from the fake's Actions service, written
        as the listener writes them (status.demand with busyRunners) when they changed. Jobs
        reach a scale set only through GitHub's label routing, so a job the fake did not
        route shows as demand never written (and a job never run)."""
        written: dict[Key, tuple[int, tuple[str, ...]]] = {}
        custom = client.CustomObjectsApi(self.api)
        while True:
            now = protocol_demand(
                self.github.jobs.values(), self.github.runners.values(), self.github_scale_sets()
            )
            for (namespace, name), (assigned, busy) in now.items():
                if written.get((namespace, name), (0, ())) == (assigned, busy):
                    continue
                demand = {"assignedJobs": assigned, "sequence": int(time.time() * 1000),
                          "observedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                          "listener": "bench", "busyRunners": list(busy)}  # fmt: skip
                await custom.patch_namespaced_custom_object_status(
                    c.GROUP, c.VERSION, namespace, c.RUNNER_SCALE_SET_PLURAL, name,
                    {"status": {"demand": demand}},
                    _content_type="application/merge-patch+json",  # type: ignore[call-arg]
                )  # fmt: skip
                written[(namespace, name)] = (assigned, busy)
            await asyncio.sleep(1)  # the demand writer's tick

    # ------------------------------------------------------------------ phases
    def enqueue(self, team: int, index: int, duration: float) -> FakeJob:
        repo = f"{ORG}/team-{team:03d}-app"
        return self.github.enqueue_job(repo, self.labels(team, index), duration)

    async def until_done(self, jobs: list[FakeJob], within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if all(j.status == "completed" for j in jobs):
                return
            await asyncio.sleep(0.5)  # progress check with a deadline

    def job_duration(self, rng: random.Random) -> float:
        return rng.uniform(self.args.job_seconds_min, self.args.job_seconds_max)

    async def stream(self) -> list[FakeJob]:
        rng = random.Random(7)  # noqa: S311 (simulated arrivals)
        jobs: list[FakeJob] = []
        end = time.monotonic() + self.args.stream_seconds
        next_at = time.monotonic()
        while time.monotonic() < end:
            while next_at <= time.monotonic():
                team, index = rng.randrange(self.shape.teams), rng.randrange(self.shape.scale_sets)
                jobs.append(self.enqueue(team, index, self.job_duration(rng)))
                next_at += rng.expovariate(self.args.stream_rate)
            await asyncio.sleep(0.1)  # the arrival clock's tick
        await self.until_done(jobs, self.args.drain_timeout)
        return jobs

    async def burst(self) -> list[FakeJob]:
        rng = random.Random(11)  # noqa: S311 (simulated durations)
        sets = [(t, s) for t in range(self.shape.teams) for s in range(self.shape.scale_sets)]
        jobs = [self.enqueue(*sets[i % len(sets)], self.job_duration(rng))
                for i in range(self.args.burst)]  # fmt: skip
        await self.until_done(jobs, self.args.drain_timeout)
        return jobs

    def probe_set(self) -> Key:
        """The scale set the full phase leaves at its minRunners: the failover raises it."""
        return (f"team-{self.shape.teams - 1:03d}", f"set-{self.shape.scale_sets - 1:02d}")

    def live_runners(self) -> int:
        return sum(len(v) for v in self.tracker.live.values())

    async def fill(self) -> None:
        """Fill the fleet: maxRunners long jobs on every scale set but the probe set, and
        wait until their runners are up and the jobs started (the ramp). The jobs outlive the
        steady window and the failover that follow, which are measured at this size."""
        self.tracker.phase = "fill"
        probe = self.probe_set()
        before = await self.snapshot()
        enqueued = time.monotonic()
        jobs = [
            self.enqueue(t, s, self.args.full_job_seconds)
            for t in range(self.shape.teams) for s in range(self.shape.scale_sets)
            if (f"team-{t:03d}", f"set-{s:02d}") != probe
            for _ in range(self.shape.max_runners)
        ]  # fmt: skip
        self.held = jobs
        want = len(jobs) + 1  # the probe set keeps its one idle runner

        async def ramped() -> bool:
            return self.live_runners() >= want and all(j.started_at is not None for j in jobs)

        done = await self.wait_until(ramped, self.args.full_ramp_timeout)
        ramp = None if done is None else round(time.monotonic() - enqueued, 2)
        figures = phase_figures(before, await self.snapshot(), len(jobs))
        waits = [j.started_at - j.created_at for j in jobs if j.started_at is not None]
        figures.update(
            runners_wanted=want, ramp_seconds=ramp, live_runners=self.live_runners(),
            jobs={"enqueued": len(jobs), "started": len(waits)},
            queue_to_running_seconds=quantiles(waits),
            reconcile_lag_seconds=self.tracker.figures("fill"),
            operator_peak_rss_mib=round(self.peak_rss, 1),
        )  # fmt: skip
        self.results["fill"] = figures
        self.console.print(f"[bold]fill[/bold] {json.dumps(figures)}")

    async def operator_settled(self) -> bool:
        """Every scale set's status shows its desired runners live and none pending: the
        operator has caught up with a change (e.g. the fill's runners seen busy)."""
        found = await client.CustomObjectsApi(self.api).list_cluster_custom_object(
            c.GROUP, c.VERSION, c.RUNNER_SCALE_SET_PLURAL
        )
        return all(
            not (s := i.get("status") or {}).get("pending")
            and s.get("busy", 0) + s.get("idle", 0) >= desired_runners(i)
            for i in found["items"]
        )

    async def hold(self) -> list[FakeJob]:
        await asyncio.sleep(self.args.full_hold)  # the steady window at capacity itself
        return []

    async def idle(self) -> list[FakeJob]:
        await asyncio.sleep(self.args.idle)  # the measurement window itself
        return []

    async def measure(self, name: str, body: Any) -> dict[str, Any]:
        self.tracker.phase = name
        before = await self.snapshot()
        jobs: list[FakeJob] = await body()
        after = await self.snapshot()
        figures = phase_figures(before, after, len(jobs))
        figures["reconcile_lag_seconds"] = self.tracker.figures(name)
        if jobs:
            waits = [j.started_at - j.created_at for j in jobs if j.started_at is not None]
            figures["jobs"] = {
                "enqueued": len(jobs), "started": len(waits),
                "completed": sum(1 for j in jobs if j.conclusion == "success"),
                "failed": sum(1 for j in jobs if j.conclusion not in (None, "success")),
            }  # fmt: skip
            figures["queue_to_running_seconds"] = quantiles(waits)
        figures["operator_peak_rss_mib"] = round(self.peak_rss, 1)
        self.results[name] = figures
        self.console.print(f"[bold]{name}[/bold] {json.dumps(figures)}")
        return figures

    # ------------------------------------------------------------------ failover
    async def lease_holder(self) -> str:
        with contextlib.suppress(ApiException):
            lease = await client.CoordinationV1Api(self.api).read_namespaced_lease(
                LEASE_NAME, LEASE_NAMESPACE
            )
            return str(lease.spec.holder_identity or "")
        return ""

    async def wait_until(self, probe: Any, within: float) -> float | None:
        """Seconds until `await probe()` is truthy, or None after `within`."""
        started = time.monotonic()
        while time.monotonic() - started < within:
            if await probe():
                return round(time.monotonic() - started, 2)
            await asyncio.sleep(0.1)  # measuring a time-to-event
        return None

    async def failover(self) -> dict[str, Any]:
        """SIGKILL the Lease holder and, at that moment, raise the emptiest scale set's
        minRunners to its maxRunners: the new leader's first correct action is a new runner
        pod there (existing idle runners cannot satisfy it)."""
        self.tracker.phase = "failover"

        async def settled() -> bool:
            live = self.tracker.live
            return all(len(live.get(k, ())) == n for k, n in self.tracker.targets.items())

        # Start from a settled fleet, so the minute after the kill holds no scale-down of
        # the burst's runners (scaleDownDelay) and measures the failover alone.
        quiesce = await self.wait_until(settled, self.args.drain_timeout)
        holder = await self.lease_holder()
        leaders = [op for op in self.operators if op.proc and holder.endswith(f"-{op.proc.pid}")]
        if not leaders:
            raise RuntimeError(f"no replica holds the lease (holder {holder!r})")
        leader = leaders[0]
        key = min(self.tracker.targets, key=lambda k: (len(self.tracker.live.get(k, ())), k))
        namespace, name = key
        live_before = len(self.tracker.live.get(key, ()))
        before = await self.snapshot()
        assert leader.proc is not None
        self.operator_cpu_dead += proc_cpu_seconds(leader.proc.pid)
        self.rounds_dead.update(await asyncio.to_thread(round_metrics, leader.metrics_port))
        killed = time.monotonic()
        leader.kill()
        await client.CustomObjectsApi(self.api).patch_namespaced_custom_object(
            c.GROUP, c.VERSION, namespace, c.RUNNER_SCALE_SET_PLURAL, name,
            {"spec": {"minRunners": self.shape.max_runners}},
            _content_type="application/merge-patch+json",  # type: ignore[call-arg]
        )  # fmt: skip

        async def taken() -> bool:
            return (await self.lease_holder()) not in ("", holder)

        async def acted() -> bool:
            return bool(self.tracker.pods_after(key, killed))

        takeover = asyncio.create_task(self.wait_until(taken, 120))
        action = asyncio.create_task(self.wait_until(acted, 120))
        await asyncio.sleep(max(0.0, killed + 60 - time.monotonic()))  # the minute after
        after = await self.snapshot()
        await asyncio.gather(takeover, action)
        created = self.tracker.pods_after(key, killed)
        figures = phase_figures(before, after)
        figures.update(
            settled_before_kill_seconds=quiesce,
            lease_takeover_seconds=takeover.result(),
            first_correct_action_seconds=round(created[0] - killed, 2) if created else None,
            changed_set=f"{namespace}/{name}",
            new_pods_for_changed_set=len(created),
            new_pods_needed=self.shape.max_runners - live_before,
            reconcile_lag_seconds=self.tracker.figures("failover"),
            operator_peak_rss_mib=round(self.peak_rss, 1),
        )
        self.results["failover"] = figures
        self.console.print(f"[bold]failover[/bold] {json.dumps(figures)}")
        return figures

    # ------------------------------------------------------------------ the run
    async def run(self) -> dict[str, Any]:
        await self.measure("control", self.control_window)
        await self.github.start()
        if self.scale_set_protocol:
            self.github.orgs.add(ORG)  # runner-registration must know the org
        token = self.github.add_token()
        add_other_runners(self.github, self.shape.other_runners)
        sim = SimulatedRunners(self.github, self.api, None)
        sim.start()
        self.start_watches()
        await self.create_namespace(LEASE_NAMESPACE)
        self.start_operators()
        try:
            return await self.phases(token)
        finally:
            for task in self.tasks:
                task.cancel()
            for kubelet in self.kubelets:
                await kubelet.stop()
            for op in self.operators:
                op.stop()
            await sim.stop()
            await self.github.stop()

    async def control_window(self) -> list[FakeJob]:
        await asyncio.sleep(self.args.control)  # the cluster alone: the apiserver baseline
        return []

    async def phases(self, token: str) -> dict[str, Any]:
        self.tracker.phase = "setup"
        gate = asyncio.Semaphore(8)

        async def team(t: int) -> None:
            async with gate:
                await self.setup_team(t, token)

        start = await self.snapshot()
        await asyncio.gather(*(team(t) for t in range(self.shape.teams)))
        if not self.use_listener:
            self.tasks.append(asyncio.create_task(self.direct_demand()))
        settled = await self.settle()
        lag = self.tracker.figures("setup")
        self.results["setup"] = {"settle_seconds": settled, "reconcile_lag_seconds": lag}
        await self.measure("idle", self.idle)
        await self.measure("stream", self.stream)
        await self.measure("burst", self.burst)
        if self.args.full:
            await self.fill()
            # Steady means after the operator has seen the fill through (busy runners read,
            # their pods protected), not the ramp's tail.
            caught_up = await self.wait_until(self.operator_settled, self.args.settle_timeout)
            self.results["fill"]["operator_caught_up_seconds"] = caught_up
            await self.measure("full", self.hold)
            self.results["full"]["live_runners"] = self.live_runners()
        await self.failover()
        if self.held:
            # The fill's long jobs ran through the failover: none may have failed or been
            # lost (they are not waited for: their runners are torn down with the bench).
            self.results["failover"]["held_jobs"] = {
                "enqueued": len(self.held),
                "started": sum(1 for j in self.held if j.started_at is not None),
                "running_or_succeeded": sum(
                    1 for j in self.held if j.conclusion in (None, "success")
                ),
                "failed_or_lost": sum(
                    1 for j in self.held if j.conclusion not in (None, "success")
                ),
            }
        self.whole_run(start, await self.snapshot())
        return self.results

    def whole_run(self, start: Snapshot, end: Snapshot) -> None:
        """From the first scale set to the end: totals, so that hourly costs (the
        registration token each process fetches for its Actions-service admin token) show
        even when no phase window caught one."""
        figures = phase_figures(start, end)
        counted = delta(end.counted, start.counted)
        figures["github_counted_total_by_endpoint"] = {
            k.replace("/api/v3", ""): v for k, v in counted.most_common(8)
        }
        actions = delta(end.actions, start.actions)
        figures["actions_requests_total"] = sum(actions.values())
        figures["processes"] = {"operator_replicas": len(self.operators),
                                "listeners": len(self.kubelets)}  # fmt: skip
        self.results["whole_run"] = figures


# ----------------------------------------------------------------------------- report
def code_root() -> Path:
    """The tree whose runnerfleet is being measured (PYTHONPATH may point at a worktree)."""
    import runnerfleet

    return Path(runnerfleet.__file__).resolve().parents[2]


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          check=False)  # fmt: skip
    return done.stdout.strip()


def headline(results: dict[str, Any], budget_per_hour: int) -> dict[str, Any]:
    """The issue's acceptance figures, picked out of the phases."""
    idle, stream, burst = results["idle"], results["stream"], results["burst"]
    control = results["control"]["apiserver_requests_per_second"]
    limited: Counter[str] = Counter()
    for name, phase in results.items():
        if name != "whole_run":  # it spans the phases: counting it too would count twice
            limited.update(phase.get("github_rate_limited", {}))
    return {
        "idle_github_counted_per_hour": idle["github_counted_per_hour"],
        "idle_github_requests_per_hour": idle["github_requests_per_hour"],
        "idle_times_primary_budget": round(idle["github_counted_per_hour"] / budget_per_hour, 2),
        "load_github_counted_per_hour": stream["github_counted_per_hour"],
        "stream_github_counted_per_job": stream["github_counted_per_job"],
        "burst_github_counted_per_job": burst["github_counted_per_job"],
        "github_403_429": dict(limited),
        # The Actions service (scale-set protocol): not counted against the REST limit.
        "idle_actions_requests_per_hour": idle.get("actions_requests_per_hour", 0.0),
        "stream_actions_requests_per_job": stream.get("actions_requests_per_job"),
        "burst_actions_requests_per_job": burst.get("actions_requests_per_job"),
        "idle_apiserver_requests_per_second_net": round(
            idle["apiserver_requests_per_second"] - control, 2),
        "stream_reconcile_lag_seconds": stream["reconcile_lag_seconds"],
        "burst_reconcile_lag_seconds": burst["reconcile_lag_seconds"],
        "stream_queue_to_running_seconds": stream["queue_to_running_seconds"],
        "burst_queue_to_running_seconds": burst["queue_to_running_seconds"],
        "idle_operator_cpu_per_second": idle["operator_cpu_per_second"],
        "stream_operator_cpu_per_second": stream["operator_cpu_per_second"],
        "operator_peak_rss_mib": results["failover"]["operator_peak_rss_mib"],
        "failover_first_correct_action_seconds":
            results["failover"]["first_correct_action_seconds"],
        "failover_github_counted_next_minute": round(
            results["failover"]["github_counted_per_hour"] / 60, 1),
    }  # fmt: skip


def table(results: dict[str, Any]) -> Table:
    out = Table(title="runnerfleet fleet benchmark")
    columns = ("phase", "s", "GH req/h", "counted/h", "per job", "403/429", "AS req/h",
               "AS/job", "apiserver/s", "lag p50/p95", "queued→running p50/p95", "op CPU/s",
               "RSS MiB")  # fmt: skip
    for col in columns:
        out.add_column(col, justify="left" if col == "phase" else "right")

    def pair(q: dict[str, Any] | None) -> str:
        if not q or q.get("samples", 1) == 0:
            return "-"
        return f"{q['p50']:.2f}/{q['p95']:.2f}"

    for name in ("control", "idle", "stream", "burst", "failover"):
        p = results[name]
        out.add_row(
            name, f"{p['seconds']:.0f}", f"{p['github_requests_per_hour']:.0f}",
            f"{p['github_counted_per_hour']:.0f}", str(p["github_counted_per_job"] or "-"),
            str(sum(p["github_rate_limited"].values())),
            f"{p.get('actions_requests_per_hour', 0):.0f}",
            str(p.get("actions_requests_per_job") or "-"),
            f"{p['apiserver_requests_per_second']}",
            pair(p.get("reconcile_lag_seconds")), pair(p.get("queue_to_running_seconds")),
            f"{p['operator_cpu_per_second']}", f"{p['operator_peak_rss_mib']}",
        )  # fmt: skip
    return out


async def run(args: argparse.Namespace, shape: Shape, cluster: LocalCluster, work: Path,
              console: Console) -> dict[str, Any]:  # fmt: skip
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=cfg)
    # Every team's stand-in kubelet holds a pod watch on this client: 64 connections for the
    # rest plus one per team (at 64 in all, setup deadlocked at the 61st team).
    cfg.connection_pool_maxsize = 64 + shape.teams
    async with ApiClient(configuration=cfg) as api:
        bench = Bench(args, shape, cluster, api, work, console, github=make_github(args))
        try:
            phases = await bench.run()
            return {"github_limits": limits_in_force(bench.github), "phases": phases}
        except BaseException:
            for op in bench.operators:
                console.print(f"---- {op.log_path} ----\n{op.logs()[-4000:]}")
            raise


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--scale", type=float, default=1.0, help="fraction of 100 teams x 10 sets")
    p.add_argument("--teams", type=int)
    p.add_argument("--scale-sets", type=int, help="scale sets per team (default 10)")
    p.add_argument("--runners", type=int, help="fleet capacity: sum of maxRunners")
    p.add_argument("--nodes", type=int, help="kwok nodes")
    p.add_argument("--other-runners", type=int, default=250, help="the org's other runners")
    p.add_argument("--demand", choices=["listener", "direct", "auto"], default="auto",
                   help="real listener processes, or demand written by the bench "
                        "(auto: listeners up to 20 teams)")  # fmt: skip
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=c.PROTOCOL_REST,
        help="the scale sets' spec.github.protocol (default rest, as earlier runs)",
    )
    p.add_argument("--poll-interval", default="15s", help="TeamListener pollInterval")
    p.add_argument("--control", type=float, default=20, help="apiserver baseline window, s")
    p.add_argument("--idle", type=float, default=120, help="idle window, s")
    p.add_argument("--stream-rate", type=float, help="jobs/s (default 20 x fleet fraction)")
    p.add_argument("--stream-seconds", type=float, default=60)
    p.add_argument("--burst", type=int, help="jobs at once (default 3 per scale set)")
    p.add_argument("--job-seconds-min", type=float, default=5)
    p.add_argument("--job-seconds-max", type=float, default=15)
    p.add_argument(
        "--full",
        action="store_true",
        help="fill the fleet to capacity (maxRunners on every set), measure it "
        "steady, then fail over at that size",
    )
    p.add_argument("--full-hold", type=float, default=60, help="steady window at capacity, s")
    p.add_argument(
        "--full-job-seconds",
        type=float,
        default=900,
        help="length of the full phase's jobs (must outlast ramp, hold, failover)",
    )
    p.add_argument("--full-ramp-timeout", type=float, default=600)
    p.add_argument("--drain-timeout", type=float, default=180, help="wait for a phase's jobs")
    p.add_argument("--settle-timeout", type=float, default=300)
    p.add_argument("--lease-seconds", type=int, default=15)
    p.add_argument("--rate-limit", type=int, default=5000, help="primary budget per hour")
    p.add_argument("--no-limits", action="store_true", help="the fake's limits off")
    p.add_argument("--no-malloc-tuning", action="store_true",
                   help="run the operator without the chart's glibc malloc settings")  # fmt: skip
    p.add_argument("--github-latency", type=float, default=0.0, help="seconds per request")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "fleet.json")
    args = p.parse_args(argv)
    return args


def fill_defaults(args: argparse.Namespace, shape: Shape) -> None:
    """Defaults that follow the fleet's size: demand source, stream rate, burst size."""
    if args.demand == "auto":
        args.demand = "listener" if shape.teams <= 20 else "direct"
    args.stream_rate = args.stream_rate or max(0.2, round(20 * shape.fraction, 2))
    args.burst = args.burst or 3 * shape.sets  # more than the warm runner per set can take


def main() -> int:
    args = parse_args()
    shape = shape_for(args.scale, args.teams, args.scale_sets, args.runners, args.nodes,
                      args.other_runners)  # fmt: skip
    fill_defaults(args, shape)
    console = Console(stderr=True, width=160)
    root = code_root()
    console.print(
        f"fleet: {shape} demand={args.demand} protocol={args.protocol} code={root} @ "
        f"{git(root, 'rev-parse', 'HEAD')[:12]}"
    )
    pods = str(max(110, 2 * (shape.runners + shape.teams) // shape.nodes))
    with tempfile.TemporaryDirectory(prefix="rf-fleet-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster")
        cluster.up([NodeSpec(count=shape.nodes, pods=pods)], timeout=120 + shape.nodes)
        try:
            cluster.apply_crds(root / "crds")
            outcome = asyncio.run(run(args, shape, cluster, Path(tmp), console))
        finally:
            cluster.down()
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": git(root, "rev-parse", "HEAD"),
        "uncommitted_operator_files": len(
            git(root, "status", "--porcelain", "--", "operator").splitlines()
        ),
        "kubernetes": KUBERNETES_VERSION,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "protocol": args.protocol,
        "shape": {**shape.__dict__, "max_runners_per_set": shape.max_runners},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "github_limits": outcome["github_limits"],
        "headline": headline(outcome["phases"], args.rate_limit),
        "phases": outcome["phases"],
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(table(outcome["phases"]))
    f = outcome["phases"]["failover"]
    console.print(
        f"failover: lease taken over after {f['lease_takeover_seconds']} s; first correct "
        f"action after {f['first_correct_action_seconds']} s "
        f"({f['new_pods_for_changed_set']} of {f['new_pods_needed']} new pods in the minute)"
    )
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
