"""`runnerfleet demo`: the whole product on the local control plane, with a simulated GitHub.

It starts the fake GitHub and simulated runners in this process, the operator as a child
process (`runnerfleet operator`), and the listener pod's program through a stand-in kubelet;
creates the RunnerScaleSet and TeamListener from examples/, and feeds the fake GitHub a stream
of jobs, which reach the listener as signed webhooks (or by polling only, with
`webhooks=False`). At the end it deletes the scale set and counts what was left behind.

Layer: tooling.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import statistics
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException
from rich.console import Console
from rich.live import Live
from rich.table import Table

from runnerfleet import conventions as c
from runnerfleet.sim.github import FakeGitHub, FakeJob
from runnerfleet.sim.kubelet import ListenerKubelet
from runnerfleet.sim.operator_process import OperatorProcess
from runnerfleet.sim.runners import SimulatedRunners

ORG = "acme"


@dataclass
class DemoResult:
    jobs: int
    jobs_completed: int
    jobs_failed: int
    orphan_registrations: int
    leftover_pods: int
    leftover_secrets: int
    queue_to_running_seconds: dict[str, float]
    runners_registered: int
    github_requests: int
    elapsed_seconds: float
    lost_jobs: int = 0
    demand_source: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.jobs_completed == self.jobs
            and self.jobs_failed == 0
            and self.orphan_registrations == 0
            and self.leftover_pods == 0
            and self.leftover_secrets == 0
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantiles(values: list[float]) -> dict[str, float]:
    """p50 and p95 (nearest-rank), rounded to milliseconds; zeros for no data."""
    if not values:
        return {"p50": 0.0, "p95": 0.0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"p50": round(statistics.median(ordered), 3), "p95": round(p95, 3)}


@dataclass
class Demo:
    kubeconfig: Path
    example: Path
    listener_example: Path
    jobs: int
    log_dir: Path
    console: Console
    seed: int = 7
    job_seconds: tuple[float, float] = (1.0, 3.0)
    arrivals_per_second: float = 10.0
    webhooks: bool = True  # False: the listener only polls (every poll_interval)
    poll_interval: str = "15s"
    min_runners: int | None = None  # override the example's warm pool
    idle_before: float = 0.0  # after the listener's first poll, wait this long before jobs

    async def run(self) -> DemoResult:
        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        async with ApiClient(configuration=cfg) as api:
            return await self._run(api)

    async def _run(self, api: ApiClient) -> DemoResult:
        started = time.monotonic()
        namespace = f"demo-{uuid.uuid4().hex[:6]}"
        core = client.CoreV1Api(api)
        labels = {"pod-security.kubernetes.io/enforce": "restricted"}
        await core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace, labels=labels))
        )
        github = FakeGitHub()
        await github.start()
        token = github.add_token()
        await _wait_default_sa(core, namespace)
        await core.create_namespaced_secret(namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name="github-app"),
            data={"github_token": base64.b64encode(token.encode()).decode()},
        ))  # fmt: skip
        hook_secret = uuid.uuid4().hex
        await core.create_namespaced_secret(namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name="github-webhook"),
            string_data={"github_webhook_secret": hook_secret},
        ))  # fmt: skip
        sim = SimulatedRunners(github, api, namespace)
        sim.start()
        operator = OperatorProcess(self.kubeconfig, namespace, self.log_dir / "operator-demo.log")
        operator.start()
        kubelet = ListenerKubelet(api, self.kubeconfig, namespace, self.log_dir)
        kubelet.start()
        custom = client.CustomObjectsApi(api)
        try:
            body = self._scale_set(github)
            name = body["metadata"]["name"]
            await custom.create_namespaced_custom_object(
                c.GROUP, c.VERSION, namespace, c.RUNNER_SCALE_SET_PLURAL, body
            )
            await custom.create_namespaced_custom_object(
                c.GROUP, c.VERSION, namespace, c.TEAM_LISTENER_PLURAL, self._listener(github)
            )
            await self._connect_webhooks(github, kubelet, hook_secret)
            if self.idle_before:
                await self._first_poll(custom, namespace)
                await asyncio.sleep(self.idle_before)  # jobs arrive mid poll interval
            jobs = await self._drive(github, name, body["spec"]["labels"])
            leftovers = await self._teardown(api, github, namespace, name)
        finally:
            await kubelet.stop()
            operator.stop()
            await sim.stop()
            await github.stop()
            with contextlib.suppress(ApiException):
                await core.delete_namespace(namespace)
        waits = [j.started_at - j.created_at for j in jobs if j.started_at is not None]
        return DemoResult(
            jobs=len(jobs),
            jobs_completed=sum(
                1 for j in jobs if j.status == "completed" and j.conclusion == "success"
            ),
            jobs_failed=sum(1 for j in jobs if j.conclusion not in (None, "success")),
            orphan_registrations=leftovers["registrations"],
            leftover_pods=leftovers["pods"],
            leftover_secrets=leftovers["secrets"],
            queue_to_running_seconds=quantiles(waits),
            runners_registered=len(github.jit_issued),
            github_requests=sum(github.requests.values()),
            elapsed_seconds=round(time.monotonic() - started, 2),
            lost_jobs=len(sim.lost_jobs),
            demand_source=(
                f"TeamListener: webhooks + polls every {self.poll_interval}"
                if self.webhooks
                else f"TeamListener: polls every {self.poll_interval}"
            ),
        )

    def _scale_set(self, github: FakeGitHub) -> dict[str, Any]:
        body: dict[str, Any] = yaml.safe_load(self.example.read_text())
        body["spec"]["github"]["configUrl"] = f"{github.url}/{ORG}"
        if self.min_runners is not None:
            body["spec"]["minRunners"] = self.min_runners
        return body

    def _listener(self, github: FakeGitHub) -> dict[str, Any]:
        listener: dict[str, Any] = yaml.safe_load(self.listener_example.read_text())
        spec = listener["spec"]
        spec["github"]["configUrl"] = f"{github.url}/{ORG}"
        spec["pollInterval"] = self.poll_interval
        spec["webhook"]["enabled"] = self.webhooks
        return listener

    async def _connect_webhooks(
        self, github: FakeGitHub, kubelet: ListenerKubelet, secret: str
    ) -> None:
        """Wait for the listener's process; point the fake's org webhook at it (in a cluster
        that would be the listener's Service behind an ingress)."""
        for _ in range(600):
            running = kubelet.running()
            if running:
                if self.webhooks:
                    github.webhook_url = f"http://127.0.0.1:{running[0].webhook_port}/webhook"
                    github.webhook_secret = secret.encode()
                return
            await asyncio.sleep(0.1)  # waiting for the operator to roll out the listener
        raise RuntimeError("the listener never started: see the operator log")

    async def _first_poll(self, custom: client.CustomObjectsApi, namespace: str) -> None:
        name = yaml.safe_load(self.listener_example.read_text())["metadata"]["name"]
        for _ in range(600):
            tl = await custom.get_namespaced_custom_object(
                c.GROUP, c.VERSION, namespace, c.TEAM_LISTENER_PLURAL, name
            )
            if (tl.get("status") or {}).get("poll", {}).get("lastSuccessfulPoll"):
                return
            await asyncio.sleep(0.1)  # waiting for the listener's first poll
        raise RuntimeError("the listener never completed a poll")

    async def _drive(self, github: FakeGitHub, name: str, labels: list[str]) -> list[FakeJob]:
        """Feed jobs with random arrivals; the TeamListener turns them into demand."""
        rng = random.Random(self.seed)  # noqa: S311 (simulated arrivals, not security)
        jobs: list[FakeJob] = []
        deadline = time.monotonic() + 120 + self.jobs * 0.5
        next_arrival = time.monotonic()
        with Live(
            self._view(github, jobs, name), console=self.console, refresh_per_second=4
        ) as live:
            while time.monotonic() < deadline:
                now = time.monotonic()
                while len(jobs) < self.jobs and next_arrival <= now:
                    duration = rng.uniform(*self.job_seconds)
                    jobs.append(github.enqueue_job(f"{ORG}/app", labels, duration))
                    next_arrival += rng.expovariate(self.arrivals_per_second)
                live.update(self._view(github, jobs, name))
                if len(jobs) == self.jobs and all(j.status == "completed" for j in jobs):
                    break
                await asyncio.sleep(0.1)  # the demo's own tick: arrivals and the view
        return jobs

    def _view(self, github: FakeGitHub, jobs: list[FakeJob], name: str) -> Table:
        table = Table(title=f"runnerfleet demo: RunnerScaleSet {name}")
        for col in ("jobs queued", "running", "completed", "of", "runners online", "busy"):
            table.add_column(col, justify="right")
        state = [j.status for j in jobs]
        online = [r for r in github.runners.values() if r.status == "online"]
        table.add_row(
            str(state.count("queued")), str(state.count("in_progress")),
            str(state.count("completed")), str(self.jobs),
            str(len(online)), str(sum(r.busy for r in online)),
        )  # fmt: skip
        return table

    async def _teardown(
        self, api: ApiClient, github: FakeGitHub, namespace: str, name: str
    ) -> dict[str, int]:
        custom = client.CustomObjectsApi(api)
        await custom.delete_namespaced_custom_object(
            c.GROUP, c.VERSION, namespace, c.RUNNER_SCALE_SET_PLURAL, name
        )
        core = client.CoreV1Api(api)
        selector = f"{c.LABEL_SCALE_SET}={name}"
        deadline = time.monotonic() + 30
        counts: dict[str, int] = {}
        while time.monotonic() < deadline:
            pods = (await core.list_namespaced_pod(namespace, label_selector=selector)).items
            secrets = (await core.list_namespaced_secret(namespace, label_selector=selector)).items
            regs = [r for r in github.runners.values() if c.is_runner_of(r.name, name, namespace)]
            counts = {"pods": len(pods), "secrets": len(secrets), "registrations": len(regs)}
            if not any(counts.values()):
                break
            await asyncio.sleep(0.2)  # polling the cleanup with a deadline
        return counts


async def _wait_default_sa(core: client.CoreV1Api, namespace: str) -> None:
    for _ in range(100):
        try:
            await core.read_namespaced_service_account("default", namespace)
            return
        except ApiException:
            await asyncio.sleep(0.1)  # the controller-manager creates it within moments
