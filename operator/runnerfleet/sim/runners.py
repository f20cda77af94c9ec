"""Simulated runners: what the official runner image would do inside each runner pod.

On kwok nodes no container runs, so this stands in for it: for every runner pod that is
Running, it reads the pod's JIT config from the pod's Secret (as the container's env would),
goes online in the fake GitHub, takes one matching queued job, "runs" it for the job's
duration, and exits: the pod is marked Succeeded, as a real one-job runner's pod would be.
A runner whose pod disappears mid-job loses that job; `lost_jobs` counts them. So does a
runner whose node vanishes (`node_lost`: a cloud provider or Karpenter deleted the machine).

Layer: tooling. Talks to the Kubernetes API directly (it plays the kubelet's role).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from runnerfleet import conventions as c
from runnerfleet.sim.github import FakeGitHub, FakeJob, FakeRunner
from runnerfleet.sim.kubewatch import watch_pods

log = logging.getLogger("runnerfleet.sim.runners")
POLL = 0.05
RETRY = 0.5  # seconds between tries of a Kubernetes call while the apiserver is away


@dataclass
class RunnerRecord:
    name: str
    namespace: str
    online_at: float | None = None
    job: FakeJob | None = None
    node: str | None = None  # the node its pod is bound to
    # For cost accounting tests (loop time): the pod first seen, the job taken, the runner
    # gone (exited, or its pod deleted or its machine lost).
    seen_at: float | None = None
    busy_at: float | None = None
    ended_at: float | None = None

    def seconds(self, until: float) -> dict[str, float]:
        """Pending (pod seen -> online), idle (online -> job), busy (job -> gone) seconds;
        a runner still alive counts until `until`."""
        if self.seen_at is None:
            return {"pending": 0.0, "idle": 0.0, "busy": 0.0}
        end = self.ended_at if self.ended_at is not None else until
        online = min(self.online_at if self.online_at is not None else end, end)
        busy = min(self.busy_at if self.busy_at is not None else end, end)
        return {"pending": online - self.seen_at, "idle": busy - online, "busy": end - busy}


@dataclass
class SimulatedRunners:
    fake: FakeGitHub
    api: ApiClient
    namespace: str | None = None
    startup_delay: float = 0.0  # seconds a runner takes to come online after Running
    never_register: bool = False  # simulate a broken image
    lost_runner_after: float = 2.0  # how long GitHub takes to notice a runner died mid-job
    # Runners that finish their job and then never exit (a hung runner, a sidecar keeping the
    # pod up): GitHub has the job completed, the pod stays Running.
    hang_after_job: bool = False
    records: dict[str, RunnerRecord] = field(default_factory=dict)
    lost_jobs: list[int] = field(default_factory=list)
    lost_nodes: set[str] = field(default_factory=set)  # machines gone: nothing runs there
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _started_uids: set[str] = field(default_factory=set)  # each pod incarnation boots once
    _main: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._main = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        tasks = [*self._tasks.values(), *([self._main] if self._main else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def alive(self, name: str) -> bool:
        """Whether the runner of pod `name` runs now (booting, idle or on its job)."""
        return name in self._tasks

    def node_lost(self, node: str) -> list[int]:
        """The machine behind `node` is gone: every runner on it dies at once (a busy one
        loses its job, as `lost_jobs` records) and pods bound to it never start. Returns the
        ids of the jobs that die with it (in progress now)."""
        self.lost_nodes.add(node)
        doomed = [r for r in self.records.values() if r.node == node and r.name in self._tasks]
        lost = [r.job.id for r in doomed if r.job is not None and r.job.status != "completed"]
        for record in doomed:
            self._tasks[record.name].cancel()  # the process dies with its machine
        return lost

    async def _watch(self) -> None:
        selector = (
            f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY_VALUE},{c.LABEL_COMPONENT}={c.COMPONENT_RUNNER}"
        )
        await watch_pods(self.api, self.namespace, selector, self._on_list, self._on_event)

    async def _on_list(self, pods: list[Any]) -> None:
        """A fresh list (at start, or after the apiserver or the watch broke): a runner whose
        pod went meanwhile stops, as if its DELETED event had come."""
        present = {p.metadata.name for p in pods}
        gone = [n for n in self._tasks if n not in present]
        if gone:
            log.warning(
                "pods gone while unwatched (%d of %d listed): %s", len(gone), len(pods), gone
            )
        for name in gone:
            self._tasks.pop(name).cancel()
        for pod in pods:
            self._on_pod("ADDED", pod)

    async def _on_event(self, kind: str, pod: Any) -> None:
        self._on_pod(kind, pod)

    def _on_pod(self, kind: str, pod: Any) -> None:
        name = pod.metadata.name
        if kind == "DELETED" or pod.metadata.deletion_timestamp:
            task = self._tasks.pop(name, None)
            if task is not None:
                # Who disrupted it, when Kubernetes says (taint eviction, PodGC, eviction API).
                why = [(x.reason, x.message) for x in pod.status.conditions or []
                       if x.type == "DisruptionTarget"]  # fmt: skip
                log.info("runner pod %s %s while its runner runs %s", name, kind, why)
                task.cancel()
            elif (gone := self.records.get(name)) is not None and gone.ended_at is None:
                gone.ended_at = asyncio.get_running_loop().time()  # went before it started
            return
        if name not in self._tasks and pod.metadata.uid not in self._started_uids:
            record = self.records.setdefault(name, RunnerRecord(name, pod.metadata.namespace))
            if record.seen_at is None:
                record.seen_at = asyncio.get_running_loop().time()
        # A pod recreated under the same name (the operator re-creating a runner's pod whose
        # JIT config was never used) boots again, as a real one would: key on the pod's uid.
        uid = pod.metadata.uid
        if (
            pod.status.phase == "Running"
            and name not in self._tasks
            and uid not in self._started_uids
            and pod.spec.node_name not in self.lost_nodes  # no machine left to run it
        ):
            self._started_uids.add(uid)
            record = self.records.setdefault(name, RunnerRecord(name, pod.metadata.namespace))
            record.node, record.job = pod.spec.node_name, None
            self._tasks[name] = asyncio.create_task(self._life(pod.metadata.namespace, name))

    async def _life(self, namespace: str, name: str) -> None:
        record = self.records.setdefault(name, RunnerRecord(name, namespace))
        runner: FakeRunner | None = None
        try:
            if self.never_register:
                return
            if self.startup_delay:
                await asyncio.sleep(self.startup_delay)  # simulated boot time
            runner = await self._connect(namespace, name)
            if runner is None:
                return
            self.fake.go_online(runner)
            record.online_at = asyncio.get_running_loop().time()
            job = None
            while job is None:
                job = self.fake.acquire_job(runner)
                if job is None:
                    await asyncio.sleep(POLL)  # a real runner long-polls GitHub for work
                    if runner.id not in self.fake.runners:
                        return  # deregistered while idle (scale-down): the runner exits
            record.job, record.busy_at = job, asyncio.get_running_loop().time()
            await asyncio.sleep(job.duration)  # simulated work
            self.fake.complete_job(runner)
            if self.hang_after_job:
                await asyncio.Event().wait()  # never exits; only its pod's deletion ends it
            await self._exit(namespace, name)
        except asyncio.CancelledError:
            job = record.job
            if runner is not None and runner.busy and job is not None and job.status != "completed":
                self._lose(runner, job)
            raise
        finally:
            self._tasks.pop(name, None)
            record.ended_at = asyncio.get_running_loop().time()

    def _lose(self, runner: FakeRunner, job: FakeJob) -> None:
        """The pod died mid-job. As on GitHub, the registration stays busy until the service
        notices the runner is gone; then the job fails (a scale set hears JobCompleted
        "failed") and the runner shows offline."""
        self.lost_jobs.append(job.id)
        asyncio.get_running_loop().call_later(self.lost_runner_after, self.fake.runner_lost, runner)

    async def _connect(self, namespace: str, name: str) -> FakeRunner | None:
        """Read the JIT config from the pod's Secret, as the container's env would. While the
        apiserver is away, retry (a kubelet retries mounting a Secret); a missing one: None."""
        core = client.CoreV1Api(self.api)
        while True:
            try:
                secret = await core.read_namespaced_secret(name, namespace)
                break
            except ApiException as err:
                if err.status == 404:
                    return None
                log.debug("reading Secret %s: %s; retrying", name, err.status)
            except (TimeoutError, aiohttp.ClientError, OSError) as err:
                log.debug("reading Secret %s: %s; retrying", name, type(err).__name__)
            await asyncio.sleep(RETRY)  # a retry backoff while the apiserver is away
        encoded = (secret.data or {}).get(c.SECRET_KEY_JITCONFIG)
        if not encoded:
            return None
        return self.fake.runner_from_jit(base64.b64decode(encoded).decode())

    async def _exit(self, namespace: str, name: str) -> None:
        """The runner process exits 0: the pod ends Succeeded."""
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {
            "phase": "Succeeded",
            "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}],
            "containerStatuses": [
                {
                    "name": c.RUNNER_CONTAINER,
                    "ready": False,
                    "restartCount": 0,
                    "image": c.DEFAULT_RUNNER_IMAGE,
                    "imageID": "",
                    "state": {
                        "terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": now}
                    },
                }
            ],
        }
        core = client.CoreV1Api(self.api)
        # Until it is written or the pod is gone: a pod left Running after its runner exited
        # would never end (the apiserver may be restarting just now).
        while True:
            try:
                await core.patch_namespaced_pod_status(name, namespace, {"status": status})
                return
            except ApiException as err:
                if err.status == 404:
                    return
                log.debug("marking pod %s Succeeded: %s; retrying", name, err.status)
            except (TimeoutError, aiohttp.ClientError, OSError) as err:
                log.debug("marking pod %s Succeeded: %s; retrying", name, type(err).__name__)
            await asyncio.sleep(RETRY)  # a retry backoff while the apiserver is away
