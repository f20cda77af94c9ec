"""`runnerfleet demo`: the whole product on the local control plane, with a simulated GitHub.

It starts the fake GitHub and simulated runners in this process, the operator as a child
process (`runnerfleet operator`), and the listener pod's program through a stand-in kubelet;
creates the RunnerScaleSet and TeamListener from examples/, and feeds the fake GitHub a stream
of jobs. How demand reaches the listener is `delivery`:
- "scaleSet" (the default): the scale set is applied with `spec.github.protocol: scaleSet`; the
  operator registers it in GitHub's Actions service and the listener holds its message session
  (long-poll), so GitHub itself reports the jobs assigned to it: no webhook, no REST polling;
- "webhook": the REST path, jobs reach the listener as signed webhooks (plus polling);
- "poll": the REST path, polling only.
At the end it deletes the scale set and counts what was left behind (pods, Secrets, runner
registrations and, on the protocol path, the GitHub scale set).

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
from dataclasses import asdict, dataclass, field
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
DELIVERIES = ("scaleSet", "webhook", "poll")  # how demand reaches the listener
# The Actions service's figures kept in the summary (its per-endpoint table is left out).
ACTIONS_FIGURES = ("requests", "sessions", "scale_sets", "job_messages", "reassigned", "by_status")


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
    protocol: str = c.PROTOCOL_REST  # spec.github.protocol of the demo's scale set
    listener_ready_seconds: float = 0.0  # scale set applied -> listener ready for jobs
    # REST requests counted against GitHub's rate limit (304s are free): in the whole demo,
    # and per job while the jobs ran (the scale-set protocol should spend ~0 per job).
    rest_requests_counted: int = 0
    rest_counted_per_job: float = 0.0
    # The Actions service (scale-set protocol; never counted against the REST limit).
    actions_requests_per_job: float = 0.0
    actions_service: dict[str, Any] = field(default_factory=dict)
    leftover_github_scale_sets: int = 0

    @property
    def ok(self) -> bool:
        return (
            self.jobs_completed == self.jobs
            and self.jobs_failed == 0
            and self.orphan_registrations == 0
            and self.leftover_pods == 0
            and self.leftover_secrets == 0
            and self.leftover_github_scale_sets == 0
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
    delivery: str = "scaleSet"  # one of DELIVERIES: how demand reaches the listener
    poll_interval: str = "15s"
    min_runners: int | None = None  # override the example's warm pool
    idle_before: float = 0.0  # once the listener is ready, wait this long before jobs

    def __post_init__(self) -> None:
        if self.delivery not in DELIVERIES:
            raise ValueError(f"delivery must be one of {DELIVERIES}, not {self.delivery!r}")

    @property
    def protocol(self) -> str:
        return c.PROTOCOL_SCALE_SET if self.delivery == "scaleSet" else c.PROTOCOL_REST

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
        github.orgs.add(ORG)  # runner-registration (scale-set protocol) must know the org
        await github.start()
        hook_secret = await self._secrets(core, namespace, github)
        sim = SimulatedRunners(github, api, namespace)
        sim.start()
        operator = OperatorProcess(self.kubeconfig, namespace, self.log_dir / "operator-demo.log")
        operator.start()
        kubelet = ListenerKubelet(api, self.kubeconfig, namespace, self.log_dir)
        kubelet.start()
        try:
            name, set_labels, ready = await self._apply(
                api, namespace, github, kubelet, hook_secret
            )
            if self.idle_before:
                await asyncio.sleep(self.idle_before)  # jobs arrive mid poll interval
            before = (github.counted_requests, github.actions.summary()["requests"])
            jobs = await self._drive(github, name, set_labels)
            actions = github.actions.summary()  # before teardown: the session is still held
            spent = (github.counted_requests - before[0], actions["requests"] - before[1])
            leftovers = await self._teardown(api, github, namespace, name)
        finally:
            await kubelet.stop()
            operator.stop()
            await sim.stop()
            await github.stop()
            with contextlib.suppress(ApiException):
                await core.delete_namespace(namespace)
        result = self._result(jobs, github, leftovers, spent, actions)
        result.listener_ready_seconds = ready
        result.lost_jobs = len(sim.lost_jobs)
        result.elapsed_seconds = round(time.monotonic() - started, 2)
        return result

    async def _secrets(self, core: client.CoreV1Api, namespace: str, github: FakeGitHub) -> str:
        """The GitHub credentials and the webhook secret (used by the webhook delivery only)."""
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
        return hook_secret

    async def _apply(
        self, api: ApiClient, namespace: str, github: FakeGitHub, kubelet: ListenerKubelet,
        hook_secret: str,
    ) -> tuple[str, list[str], float]:  # fmt: skip
        """Create the scale set and the listener; wait until the listener can see jobs.
        Returns the scale set's name, its labels and the seconds that took."""
        applied = time.monotonic()
        custom = client.CustomObjectsApi(api)
        body = self._scale_set(github)
        name: str = body["metadata"]["name"]
        await custom.create_namespaced_custom_object(
            c.GROUP, c.VERSION, namespace, c.RUNNER_SCALE_SET_PLURAL, body
        )
        await custom.create_namespaced_custom_object(
            c.GROUP, c.VERSION, namespace, c.TEAM_LISTENER_PLURAL, self._listener(github)
        )
        await self._connect_webhooks(github, kubelet, hook_secret)
        if self.protocol == c.PROTOCOL_SCALE_SET:
            await self._wait_session(github, c.github_scale_set_name(name, namespace))
        elif self.idle_before:
            await self._first_poll(custom, namespace)
        return name, list(body["spec"]["labels"]), round(time.monotonic() - applied, 2)

    def _result(
        self, jobs: list[FakeJob], github: FakeGitHub, leftovers: dict[str, int],
        spent: tuple[int, int], actions: dict[str, Any],
    ) -> DemoResult:  # fmt: skip
        waits = [j.started_at - j.created_at for j in jobs if j.started_at is not None]
        per_job = max(1, len(jobs))
        return DemoResult(
            jobs=len(jobs),
            jobs_completed=sum(
                1 for j in jobs if j.status == "completed" and j.conclusion == "success"
            ),
            jobs_failed=sum(1 for j in jobs if j.conclusion not in (None, "success")),
            orphan_registrations=leftovers["registrations"],
            leftover_pods=leftovers["pods"],
            leftover_secrets=leftovers["secrets"],
            leftover_github_scale_sets=leftovers["github_scale_sets"],
            queue_to_running_seconds=quantiles(waits),
            runners_registered=len(github.jit_issued),
            github_requests=sum(github.requests.values()),
            elapsed_seconds=0.0,
            demand_source=self._demand_source(),
            protocol=self.protocol,
            rest_requests_counted=github.counted_requests,
            rest_counted_per_job=round(spent[0] / per_job, 3),
            actions_requests_per_job=round(spent[1] / per_job, 3),
            actions_service={k: actions[k] for k in ACTIONS_FIGURES},
        )

    def _demand_source(self) -> str:
        if self.delivery == "scaleSet":
            return "TeamListener: GitHub scale-set session (long-poll), no webhooks or polling"
        if self.delivery == "webhook":
            return f"TeamListener: webhooks + polls every {self.poll_interval}"
        return f"TeamListener: polls every {self.poll_interval}"

    def _scale_set(self, github: FakeGitHub) -> dict[str, Any]:
        body: dict[str, Any] = yaml.safe_load(self.example.read_text())
        body["spec"]["github"]["configUrl"] = f"{github.url}/{ORG}"
        # Explicit either way: the demo must not depend on the model's default protocol.
        body["spec"]["github"]["protocol"] = self.protocol
        if self.min_runners is not None:
            body["spec"]["minRunners"] = self.min_runners
        return body

    def _listener(self, github: FakeGitHub) -> dict[str, Any]:
        listener: dict[str, Any] = yaml.safe_load(self.listener_example.read_text())
        spec = listener["spec"]
        spec["github"]["configUrl"] = f"{github.url}/{ORG}"
        spec["pollInterval"] = self.poll_interval
        # The scale-set protocol needs no public endpoint: GitHub reports demand on the session.
        spec["webhook"]["enabled"] = self.delivery == "webhook"
        return listener

    async def _connect_webhooks(
        self, github: FakeGitHub, kubelet: ListenerKubelet, secret: str
    ) -> None:
        """Wait for the listener's process; point the fake's org webhook at it (in a cluster
        that would be the listener's Service behind an ingress)."""
        for _ in range(600):
            running = kubelet.running()
            if running:
                if self.delivery == "webhook":
                    github.webhook_url = f"http://127.0.0.1:{running[0].webhook_port}/webhook"
                    github.webhook_secret = secret.encode()
                return
            await asyncio.sleep(0.1)  # waiting for the operator to roll out the listener
        raise RuntimeError("the listener never started: see the operator log")

    async def _wait_session(self, github: FakeGitHub, github_name: str) -> None:
        """Wait until the operator has registered the scale set in GitHub and the listener
        holds its message session (from then on GitHub reports the jobs assigned to it)."""
        for _ in range(900):
            ids = {s.id for s in github.actions.scale_sets.values() if s.name == github_name}
            if any(s.scale_set_id in ids for s in github.actions.sessions.values()):
                return
            await asyncio.sleep(0.1)  # waiting for the registration and the listener's sync
        raise RuntimeError(f"no session on GitHub scale set {github_name}: see the logs")

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
        actions = github.actions.summary()
        messages = actions["job_messages"]
        table = Table(
            title=f"runnerfleet demo: RunnerScaleSet {name} (protocol {self.protocol})",
            caption=(
                f"REST requests counted: {github.counted_requests}  ·  Actions service: "
                f"{actions['requests']} requests, {actions['sessions']} session(s), job "
                f"messages assigned {messages['JobAssigned']} / started {messages['JobStarted']}"
                f" / completed {messages['JobCompleted']}"
            ),
        )
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
        """Delete the scale set; wait (30 s at most) for its pods, Secrets, registrations and
        GitHub scale set (the finalizer removes it) to be gone; count what is left."""
        custom = client.CustomObjectsApi(api)
        await custom.delete_namespaced_custom_object(
            c.GROUP, c.VERSION, namespace, c.RUNNER_SCALE_SET_PLURAL, name
        )
        core = client.CoreV1Api(api)
        selector = f"{c.LABEL_SCALE_SET}={name}"
        github_name = c.github_scale_set_name(name, namespace)
        deadline = time.monotonic() + 30
        counts: dict[str, int] = {}
        while time.monotonic() < deadline:
            pods = (await core.list_namespaced_pod(namespace, label_selector=selector)).items
            secrets = (await core.list_namespaced_secret(namespace, label_selector=selector)).items
            regs = [r for r in github.runners.values() if c.is_runner_of(r.name, name, namespace)]
            sets = [s for s in github.actions.scale_sets.values() if s.name == github_name]
            counts = {"pods": len(pods), "secrets": len(secrets), "registrations": len(regs),
                      "github_scale_sets": len(sets)}  # fmt: skip
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
