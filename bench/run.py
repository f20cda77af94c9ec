"""Burst benchmark: N queued jobs -> time until every runner pod is Running.

Measured against a floor taken in the same run on the same apiserver: a bare async client
creating the same N Secrets + N Pods (the same manifests, the same concurrency) and waiting
for all pods to be Running. The ratio operator/floor is the figure to compare across
machines; absolute seconds depend on the machine.

    python bench/run.py --jobs 200 [--jobs 1000] [--out bench/results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client import ApiClient

from runnerfleet import conventions as c
from runnerfleet.builders.runner import ScaleSetIdentity, build_runner_pod, build_runner_secret
from runnerfleet.localcluster import LocalCluster, NodeSpec
from runnerfleet.localcluster.binaries import KUBERNETES_VERSION
from runnerfleet.models.runner_scale_set import RunnerScaleSetSpec
from runnerfleet.services.scale_set import CONCURRENCY
from runnerfleet.sim.demand import write_demand
from runnerfleet.sim.demo import quantiles
from runnerfleet.sim.github import FakeGitHub
from runnerfleet.sim.operator_process import OperatorProcess
from runnerfleet.sim.runners import SimulatedRunners

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["self-hosted", "linux"]
JOB_SECONDS = 3600.0  # jobs outlast the measurement: every runner stays busy and Running


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


async def _until_running(api: ApiClient, namespace: str, selector: str, n: int) -> float:
    """Monotonic time at which `n` pods matching `selector` are Running (watch-driven)."""
    core = client.CoreV1Api(api)
    running: set[str] = set()
    w = watch.Watch()
    async for event in w.stream(core.list_namespaced_pod, namespace, label_selector=selector):
        pod = event["object"]
        if pod.status.phase == "Running":
            running.add(pod.metadata.name)
        if len(running) >= n:
            w.stop()
            break
    return time.monotonic()


async def floor(api: ApiClient, n: int) -> float:
    """Seconds for a bare client to create N Secrets + N Pods and see them all Running."""
    namespace = await _namespace(api, "floor")
    owner = ScaleSetIdentity("floor", namespace, "00000000-0000-0000-0000-000000000000")
    spec = RunnerScaleSetSpec.model_validate(
        {"github": {"configUrl": "https://github.com/acme", "secretRef": {"name": "x"}},
         "labels": LABELS}
    )  # fmt: skip
    core = client.CoreV1Api(api)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        name = f"floor-{i:05d}"
        secret = build_runner_secret(owner, name)
        secret["metadata"].pop("ownerReferences")
        secret["data"] = {c.SECRET_KEY_JITCONFIG: base64.b64encode(b"x" * 2000).decode()}
        pod = build_runner_pod(owner, spec, name)
        pod["metadata"].pop("ownerReferences")
        async with gate:
            await core.create_namespaced_secret(namespace, secret)
            await core.create_namespaced_pod(namespace, pod)

    waiter = asyncio.create_task(_until_running(api, namespace, f"{c.LABEL_SCALE_SET}=floor", n))
    start = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(n)))
    done = await waiter
    await core.delete_namespace(namespace)
    return done - start


async def operator_burst(api: ApiClient, kubeconfig: Path, n: int, log_dir: Path) -> dict[str, Any]:
    """Seconds from N queued jobs (demand written) to N runner pods Running, and more."""
    namespace = await _namespace(api, "bench")
    github = FakeGitHub()
    await github.start()
    token = github.add_token()
    core = client.CoreV1Api(api)
    await core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="github-app"),
        data={"github_token": base64.b64encode(token.encode()).decode()},
    ))  # fmt: skip
    sim = SimulatedRunners(github, api, namespace)
    sim.start()
    operator = OperatorProcess(kubeconfig, namespace, log_dir / f"operator-bench-{n}.log")
    operator.start()
    body = {
        "apiVersion": c.API_VERSION, "kind": c.RUNNER_SCALE_SET_KIND,
        "metadata": {"name": "bench"},
        "spec": {"github": {"configUrl": f"{github.url}/acme", "secretRef": {"name": "github-app"}},
                 "labels": LABELS, "minRunners": 0, "maxRunners": n},
    }  # fmt: skip
    try:
        await client.CustomObjectsApi(api).create_namespaced_custom_object(
            c.GROUP, c.VERSION, namespace, c.RUNNER_SCALE_SET_PLURAL, body
        )
        jobs = [github.enqueue_job("acme/app", LABELS, JOB_SECONDS) for _ in range(n)]
        waiter = asyncio.create_task(
            _until_running(api, namespace, f"{c.LABEL_SCALE_SET}=bench", n)
        )
        start = time.monotonic()
        await write_demand(api, namespace, "bench", n, 1, "bench")
        done = await waiter
        for _ in range(1200):  # up to 2 min for the last runners to pick up their jobs
            if all(j.started_at is not None for j in jobs):
                break
            await asyncio.sleep(0.1)
        waits = [j.started_at - j.created_at for j in jobs if j.started_at is not None]
        return {
            "seconds": round(done - start, 3),
            "jobs_started": len(waits),
            "queue_to_running_seconds": quantiles(waits),
            "operator_peak_rss_mib": round(operator.peak_rss_mib(), 1),
            "operator_cpu_seconds": round(operator.cpu_seconds(), 2),
            "github_requests_per_job": round(sum(github.requests.values()) / n, 2),
            "runners_registered": len(github.jit_issued),
        }
    finally:
        operator.stop()
        await sim.stop()
        await github.stop()
        await core.delete_namespace(namespace)


async def bench(kubeconfig: Path, sizes: list[int], log_dir: Path) -> list[dict[str, Any]]:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = 64
    results = []
    async with ApiClient(configuration=cfg) as api:
        for n in sizes:
            base = await floor(api, n)
            measured = await operator_burst(api, kubeconfig, n, log_dir)
            row = {"jobs": n, "floor_seconds": round(base, 3), "operator": measured,
                   "ratio_vs_floor": round(measured["seconds"] / base, 2)}  # fmt: skip
            print(json.dumps(row), flush=True)
            results.append(row)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, action="append", help="burst size (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args()
    sizes = args.jobs or [200]
    nodes = math.ceil(max(sizes) / 200) + 1
    with tempfile.TemporaryDirectory(prefix="rf-bench-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster")
        cluster.up([NodeSpec(count=nodes, pods="250")])
        try:
            cluster.apply_crds(ROOT / "crds")
            results = asyncio.run(bench(cluster.kubeconfig, sizes, Path(tmp) / "logs"))
        finally:
            cluster.down()
    report = {
        "kubernetes": KUBERNETES_VERSION,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
