"""Burst benchmark: N queued jobs -> time until every runner pod is Running, under GitHub's limits.

The fake GitHub enforces GitHub's limits (sim/github_limits.py, on by default), among them the
secondary limit of 900 points a minute per endpoint: a JIT registration is a write (5 points),
so no client can register more than 180 runners a minute. The floor is measured in the same
run, on the same apiserver, against a fake GitHub with the same limits: a bare minimal
controller that, per runner, obtains a JIT config as fast as GitHub permits (the best possible
pacing: 180 in any 60 s window, each slot reused the moment it frees), then creates the runner's
Secret (holding that config) and Pod, with the operator's Kubernetes concurrency, and waits for
every pod to be Running. The ratio operator/floor is the figure to compare across machines.
The old floor (Secrets + Pods only, no GitHub) is kept as `kubernetes_only_floor_seconds`.

    python bench/run.py --jobs 200 [--jobs 1000] [--repeat 3] [--out bench/results.json]

Layer: tooling (benchmark). Network and Kubernetes I/O; starts a local cluster and the operator.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from runnerfleet import conventions as c
from runnerfleet.builders.runner import ScaleSetIdentity, build_runner_pod, build_runner_secret
from runnerfleet.localcluster import LocalCluster, NodeSpec
from runnerfleet.localcluster.binaries import KUBERNETES_VERSION
from runnerfleet.models.runner_scale_set import RunnerScaleSetSpec
from runnerfleet.services.scale_set import CONCURRENCY
from runnerfleet.sim.demand import write_demand
from runnerfleet.sim.demo import quantiles
from runnerfleet.sim.github import API_PREFIX, FakeGitHub
from runnerfleet.sim.github_limits import SECONDARY_WINDOW, GitHubLimits
from runnerfleet.sim.operator_process import OperatorProcess
from runnerfleet.sim.runners import SimulatedRunners

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["self-hosted", "linux"]
JOB_SECONDS = 3600.0  # jobs outlast the measurement: every runner stays busy and Running
GITHUB_CONNECTIONS = 50  # the floor's connection pool to GitHub (the operator's is 50 too)
SLOT_MARGIN = 0.02  # s: a freed slot is reused this long after its window ends
OPERATOR_JIT_PER_MINUTE = 160  # the operator's pacing (gateways/github_budget.py), for bounds


def limit_bound(n: int, per_minute: int) -> float:
    """Seconds the secondary limit alone imposes on n JIT registrations at `per_minute`
    (bursting a full window at once, then one more window per `per_minute` runners)."""
    return (math.ceil(n / per_minute) - 1) * SECONDARY_WINDOW if n > 0 else 0.0


def deadline_for(n: int) -> float:
    """How long a phase may take before the benchmark gives up on it (bounded runs)."""
    return 180.0 + 1.5 * limit_bound(n, OPERATOR_JIT_PER_MINUTE) + 0.05 * n


# --------------------------------------------------------------------- Kubernetes helpers
async def _namespace(api: ApiClient, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api)
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    for _ in range(200):
        sas = await core.list_namespaced_service_account(name)
        if any(sa.metadata.name == "default" for sa in sas.items):
            return name
        await asyncio.sleep(0.05)
    raise RuntimeError(f"no default ServiceAccount in {name}")


async def _delete_namespace(api: ApiClient, name: str, within: float = 180.0) -> None:
    """Delete and wait until it is gone, so the next phase has the nodes and CPU to itself."""
    core = client.CoreV1Api(api)
    await core.delete_namespace(name)
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            await core.read_namespace(name)
        except ApiException as err:
            if err.status == 404:
                return
            raise
        await asyncio.sleep(0.5)
    print(f"namespace {name} still terminating after {within:.0f} s", file=sys.stderr)


async def _until_running(
    api: ApiClient, namespace: str, selector: str, n: int, running: set[str], done: asyncio.Event
) -> None:
    """Add every pod matching `selector` to `running` once it is Running; set `done` when n
    are. A watch the server ends is re-opened (its initial list replays the current pods)."""
    core = client.CoreV1Api(api)
    while not done.is_set():
        async with watch.Watch() as w:
            stream = w.stream(core.list_namespaced_pod, namespace, label_selector=selector)
            async for event in stream:
                pod = event["object"]
                if pod.status.phase == "Running":
                    running.add(pod.metadata.name)
                if len(running) >= n:
                    done.set()
                    break


async def _wait_running(
    api: ApiClient, namespace: str, selector: str, n: int, start: Callable[[], Awaitable[None]],
    within: float,
) -> tuple[float | None, int]:  # fmt: skip
    """Run `start` and return (seconds from its start until n pods are Running, or None if
    the deadline passed first; pods seen Running)."""
    running: set[str] = set()
    done = asyncio.Event()
    watching = asyncio.create_task(_until_running(api, namespace, selector, n, running, done))
    t0 = time.monotonic()
    try:
        await start()
        await asyncio.wait_for(done.wait(), timeout=max(1.0, within - (time.monotonic() - t0)))
    except TimeoutError:
        return None, len(running)
    finally:
        watching.cancel()
    return time.monotonic() - t0, len(running)


def _floor_manifests(namespace: str, name: str, jit_config: str) -> tuple[dict[str, Any], ...]:
    """The operator's own Secret and Pod manifests for one runner (without owner references)."""
    owner = ScaleSetIdentity("floor", namespace, "00000000-0000-0000-0000-000000000000")
    spec = RunnerScaleSetSpec.model_validate(
        {"github": {"configUrl": "https://github.com/acme", "secretRef": {"name": "x"},
                    "protocol": "rest"},
         "labels": LABELS}
    )  # fmt: skip
    secret = build_runner_secret(owner, name)
    secret["metadata"].pop("ownerReferences")
    secret["data"] = {c.SECRET_KEY_JITCONFIG: base64.b64encode(jit_config.encode()).decode()}
    pod = build_runner_pod(owner, spec, name)
    pod["metadata"].pop("ownerReferences")
    return secret, pod


# --------------------------------------------------------------------- the floor's GitHub client
@dataclass
class WindowPacer:
    """GitHub's secondary limit as the best possible client paces it: `slots` writes in any
    window of SECONDARY_WINDOW seconds, each slot reused as soon as its window has passed
    (timed from the answer, on the fake's own clock: never earlier than GitHub allows)."""

    slots: int
    _free: asyncio.Semaphore = field(init=False)
    _pending: list[asyncio.TimerHandle] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._free = asyncio.Semaphore(self.slots)

    async def acquire(self) -> None:
        await self._free.acquire()

    def release_after(self, answered_at: float) -> None:
        """Free the slot once GitHub's window (on the fake's wall clock) has passed."""
        delay = max(0.0, answered_at + SECONDARY_WINDOW + SLOT_MARGIN - time.time())
        self._pending.append(asyncio.get_running_loop().call_later(delay, self._free.release))

    def close(self) -> None:
        for handle in self._pending:
            handle.cancel()


@dataclass
class FloorGitHub:
    """The minimal controller's GitHub side: paced JIT registrations, 403s counted and waited."""

    http: aiohttp.ClientSession
    url: str
    pacer: WindowPacer
    refused: int = 0
    last_config_at: float = 0.0

    async def jit_config(self, name: str) -> str:
        body = {"name": name, "runner_group_id": 1, "labels": LABELS, "work_folder": "_work"}
        while True:
            await self.pacer.acquire()
            async with self.http.post(self.url, json=body) as resp:
                payload = await resp.json()
                answered = time.time()
                self.pacer.release_after(answered)
                if resp.status == 201:
                    self.last_config_at = time.monotonic()
                    return str(payload["encoded_jit_config"])
                if resp.status not in (403, 429):
                    raise RuntimeError(f"JIT config for {name}: {resp.status} {payload}")
                self.refused += 1
                await asyncio.sleep(float(resp.headers.get("retry-after", "1")))


# --------------------------------------------------------------------- floors
async def kubernetes_floor(api: ApiClient, n: int) -> float | None:
    """Seconds for a bare client to create N Secrets + N Pods and see them Running (no GitHub)."""
    namespace = await _namespace(api, "kfloor")
    core = client.CoreV1Api(api)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        secret, pod = _floor_manifests(namespace, f"floor-{i:05d}", "x" * 1500)
        async with gate:
            await core.create_namespaced_secret(namespace, secret)  # type: ignore[arg-type]
            await core.create_namespaced_pod(namespace, pod)  # type: ignore[arg-type]

    async def start() -> None:
        await asyncio.gather(*(one(i) for i in range(n)))

    selector = f"{c.LABEL_SCALE_SET}=floor"
    seconds, _ = await _wait_running(api, namespace, selector, n, start, deadline_for(n))
    await _delete_namespace(api, namespace)
    return seconds


async def floor(api: ApiClient, n: int, limits: GitHubLimits) -> dict[str, Any]:
    """A bare minimal controller against a fake GitHub with `limits`: per runner, JIT config
    (paced as well as GitHub permits), then Secret, then Pod; until N pods are Running."""
    github = FakeGitHub(limits=limits)
    await github.start()
    token = github.add_token()
    namespace = await _namespace(api, "floor")
    core = client.CoreV1Api(api)
    gate = asyncio.Semaphore(CONCURRENCY)
    pacer = WindowPacer(limits.points_per_minute // limits.write_points)
    connector = aiohttp.TCPConnector(limit=GITHUB_CONNECTIONS)
    headers = {"Authorization": f"token {token}", "Accept": "application/vnd.github+json"}
    url = f"{github.url}{API_PREFIX}/orgs/acme/actions/runners/generate-jitconfig"
    try:
        async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
            gh = FloorGitHub(http, url, pacer)

            async def one(i: int) -> None:
                name = f"floor-{i:05d}"
                secret, pod = _floor_manifests(namespace, name, await gh.jit_config(name))
                async with gate:
                    await core.create_namespaced_secret(namespace, secret)  # type: ignore[arg-type]
                    await core.create_namespaced_pod(namespace, pod)  # type: ignore[arg-type]

            t0 = time.monotonic()

            async def start() -> None:
                await asyncio.gather(*(one(i) for i in range(n)))

            selector = f"{c.LABEL_SCALE_SET}=floor"
            seconds, running = await _wait_running(
                api, namespace, selector, n, start, deadline_for(n)
            )
            pacer.close()
        return {
            "seconds": None if seconds is None else round(seconds, 3),
            "pods_running": running,
            "jit_seconds": round(gh.last_config_at - t0, 3),
            "limit_bound_seconds": limit_bound(n, pacer.slots),
            "github_counted_requests": github.counted_requests,
            "github_403_429": _refusals(github),
            "runners_registered": len(github.jit_issued),
        }
    finally:
        await github.stop()
        await _delete_namespace(api, namespace)


def _refusals(github: FakeGitHub) -> int:
    return sum(count for (_, _, status), count in github.requests.items() if status in (403, 429))


# --------------------------------------------------------------------- the operator
async def operator_burst(
    api: ApiClient, kubeconfig: Path, n: int, limits: GitHubLimits, log_path: Path
) -> dict[str, Any]:
    """Seconds from N queued jobs (demand written) to N runner pods Running, and more."""
    namespace = await _namespace(api, "bench")
    github = FakeGitHub(limits=limits)
    await github.start()
    token = github.add_token()
    core = client.CoreV1Api(api)
    await core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="github-app"),
        data={"github_token": base64.b64encode(token.encode()).decode()},
    ))  # fmt: skip
    sim = SimulatedRunners(github, api, namespace)
    sim.start()
    operator = OperatorProcess(kubeconfig, namespace, log_path)
    operator.start()
    body = {
        "apiVersion": c.API_VERSION, "kind": c.RUNNER_SCALE_SET_KIND,
        "metadata": {"name": "bench"},
        # The REST path: the floor and the history in bench/results.json measure it.
        "spec": {"github": {"configUrl": f"{github.url}/acme", "secretRef": {"name": "github-app"},
                            "protocol": "rest"},
                 "labels": LABELS, "minRunners": 0, "maxRunners": n},
    }  # fmt: skip
    try:
        await client.CustomObjectsApi(api).create_namespaced_custom_object(
            c.GROUP, c.VERSION, namespace, c.RUNNER_SCALE_SET_PLURAL, body
        )
        jobs = [github.enqueue_job("acme/app", LABELS, JOB_SECONDS) for _ in range(n)]

        async def start() -> None:
            await write_demand(api, namespace, "bench", n, 1, "bench")

        selector = f"{c.LABEL_SCALE_SET}=bench"
        seconds, running = await _wait_running(api, namespace, selector, n, start, deadline_for(n))
        for _ in range(1200):  # up to 2 min for the last runners to pick up their jobs
            if seconds is None or all(j.started_at is not None for j in jobs):
                break
            await asyncio.sleep(0.1)
        waits = [j.started_at - j.created_at for j in jobs if j.started_at is not None]
        counted = github.counted_requests
        return {
            "seconds": None if seconds is None else round(seconds, 3),
            "pods_running": running,
            "jobs_started": len(waits),
            "queue_to_running_seconds": quantiles(waits),
            "operator_peak_rss_mib": round(operator.peak_rss_mib(), 1),
            "operator_cpu_seconds": round(operator.cpu_seconds(), 2),
            "limit_bound_seconds": limit_bound(n, OPERATOR_JIT_PER_MINUTE),
            "github_counted_requests": counted,
            "github_counted_per_job": round(counted / n, 3),
            "github_counted_by_endpoint": dict(sorted(github.counted_by_endpoint.items())),
            "github_requests_per_job": round(sum(github.requests.values()) / n, 3),
            "github_403_429": _refusals(github),
            "runners_registered": len(github.jit_issued),
            "log": str(log_path),
        }
    finally:
        operator.stop()
        await sim.stop()
        await github.stop()
        # The operator is gone: drop its finalizer (as one would after uninstalling it) rather
        # than have it delete N registrations at the JIT pace, then remove everything.
        try:
            await client.CustomObjectsApi(api).patch_namespaced_custom_object(
                c.GROUP, c.VERSION, namespace, c.RUNNER_SCALE_SET_PLURAL, "bench",
                [{"op": "add", "path": "/metadata/finalizers", "value": []}],
            )  # fmt: skip
            await _delete_namespace(api, namespace)
        except ApiException as err:
            print(f"cleanup of {namespace}: {err.status} {err.reason}", file=sys.stderr)


# --------------------------------------------------------------------- driver
async def one_run(
    api: ApiClient, kubeconfig: Path, n: int, run: int, log_dir: Path
) -> dict[str, Any]:
    limits = GitHubLimits()  # GitHub's limits, the same for the floor and the operator
    kube_only = await kubernetes_floor(api, n)
    base = await floor(api, n, limits)
    log_path = log_dir / f"operator-bench-{n}-run{run}.log"
    measured = await operator_burst(api, kubeconfig, n, limits, log_path)
    ratio = None
    if base["seconds"] and measured["seconds"]:
        ratio = round(measured["seconds"] / base["seconds"], 3)
    return {
        "jobs": n, "run": run, "floor_seconds": base["seconds"], "floor": base,
        "kubernetes_only_floor_seconds": None if kube_only is None else round(kube_only, 3),
        "operator": measured, "ratio_vs_floor": ratio,
    }  # fmt: skip


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread (min, max, stdev) per N of the figures that vary between runs."""
    summary: dict[str, Any] = {}
    for n in sorted({row["jobs"] for row in rows}):
        runs = [r for r in rows if r["jobs"] == n]
        figures = {
            "floor_seconds": [r["floor_seconds"] for r in runs],
            "floor_jit_seconds": [r["floor"]["jit_seconds"] for r in runs],
            "kubernetes_only_floor_seconds": [r["kubernetes_only_floor_seconds"] for r in runs],
            "operator_seconds": [r["operator"]["seconds"] for r in runs],
            "ratio_vs_floor": [r["ratio_vs_floor"] for r in runs],
            "queue_to_running_p50": [_q(r)["p50"] for r in runs],
            "queue_to_running_p95": [_q(r)["p95"] for r in runs],
            "operator_cpu_seconds": [r["operator"]["operator_cpu_seconds"] for r in runs],
            "operator_peak_rss_mib": [r["operator"]["operator_peak_rss_mib"] for r in runs],
            "github_counted_requests": [r["operator"]["github_counted_requests"] for r in runs],
            "github_counted_per_job": [r["operator"]["github_counted_per_job"] for r in runs],
            "operator_github_403_429": [r["operator"]["github_403_429"] for r in runs],
            "floor_github_403_429": [r["floor"]["github_403_429"] for r in runs],
        }  # fmt: skip
        summary[str(n)] = {"runs": len(runs)} | {k: _spread(v) for k, v in figures.items()}
    return summary


def _q(row: dict[str, Any]) -> dict[str, float]:
    queued: dict[str, float] = row["operator"]["queue_to_running_seconds"]
    return queued


def _spread(values: list[float | None]) -> dict[str, float | None]:
    known = [v for v in values if v is not None]
    if not known or len(known) < len(values):
        return {"mean": None, "min": None, "max": None, "stdev": None}
    return {
        "mean": round(statistics.fmean(known), 3), "min": min(known), "max": max(known),
        "stdev": round(statistics.stdev(known), 3) if len(known) > 1 else 0.0,
    }  # fmt: skip


def write_report(out: Path, rows: list[dict[str, Any]]) -> None:
    report = {
        "kubernetes": KUBERNETES_VERSION,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "github_limits": "fake GitHub with GitHub's limits (GitHubLimits() defaults)",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "summary": summarize(rows),
        "results": rows,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")


async def bench(
    kubeconfig: Path, plan: list[tuple[int, int]], log_dir: Path, out: Path
) -> list[dict[str, Any]]:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = 64
    rows: list[dict[str, Any]] = []
    async with ApiClient(configuration=cfg) as api:
        for n, runs in plan:
            for run in range(1, runs + 1):
                row = await one_run(api, kubeconfig, n, run, log_dir)
                print(json.dumps(row), flush=True)
                rows.append(row)
                write_report(out, rows)  # a later failure keeps what was measured
    return rows


def _plan(spec: str) -> tuple[int, int]:
    """`200` (one run) or `200x3` (three runs)."""
    n, _, runs = spec.partition("x")
    return int(n), int(runs or 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--jobs", type=_plan, action="append",
                        help="burst size, N or NxRUNS (repeatable)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="operator logs (default: a new /tmp/rf-bench-logs-*)")  # fmt: skip
    args = parser.parse_args()
    plan: list[tuple[int, int]] = args.jobs or [(200, 1)]
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="rf-bench-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"operator logs in {log_dir}", file=sys.stderr)
    nodes = math.ceil(max(n for n, _ in plan) / 200) + 1
    with tempfile.TemporaryDirectory(prefix="rf-bench-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster")
        cluster.up([NodeSpec(count=nodes, pods="250")])
        try:
            cluster.apply_crds(ROOT / "crds")
            rows = asyncio.run(bench(cluster.kubeconfig, plan, log_dir, args.out))
        finally:
            cluster.down()
    print(f"wrote {args.out}", file=sys.stderr)
    failed = [r for r in rows if r["ratio_vs_floor"] is None or r["operator"]["github_403_429"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
