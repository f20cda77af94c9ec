"""Simulated runners: what the official runner image would do inside each runner pod.

On kwok nodes no container runs, so this stands in for it: for every runner pod that is
Running, it reads the pod's JIT config from the pod's Secret (as the container's env would),
goes online in the fake GitHub, takes one matching queued job, "runs" it for the job's
duration, and exits: the pod is marked Succeeded, as a real one-job runner's pod would be.
A runner whose pod disappears mid-job loses that job; `lost_jobs` counts them.

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

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from runnerfleet import conventions as c
from runnerfleet.sim.github import FakeGitHub, FakeJob, FakeRunner

log = logging.getLogger("runnerfleet.sim.runners")
POLL = 0.05


@dataclass
class RunnerRecord:
    name: str
    namespace: str
    online_at: float | None = None
    job: FakeJob | None = None


@dataclass
class SimulatedRunners:
    fake: FakeGitHub
    api: ApiClient
    namespace: str | None = None
    startup_delay: float = 0.0  # seconds a runner takes to come online after Running
    never_register: bool = False  # simulate a broken image
    lost_runner_after: float = 2.0  # how long GitHub takes to notice a runner died mid-job
    records: dict[str, RunnerRecord] = field(default_factory=dict)
    lost_jobs: list[int] = field(default_factory=list)
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

    async def _watch(self) -> None:
        core = client.CoreV1Api(self.api)
        selector = (
            f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY_VALUE},{c.LABEL_COMPONENT}={c.COMPONENT_RUNNER}"
        )
        while True:
            w = watch.Watch()
            if self.namespace:
                stream = w.stream(core.list_namespaced_pod, self.namespace, label_selector=selector)
            else:
                stream = w.stream(core.list_pod_for_all_namespaces, label_selector=selector)
            try:
                async for event in stream:
                    self._on_pod(str(event["type"]), event["object"])
            except (ApiException, OSError) as err:
                log.debug("sim watch restarted: %s", err)
            finally:
                w.stop()

    def _on_pod(self, kind: str, pod: Any) -> None:
        name = pod.metadata.name
        if kind == "DELETED" or pod.metadata.deletion_timestamp:
            task = self._tasks.pop(name, None)
            if task is not None:
                task.cancel()
            return
        # A pod recreated under the same name (the operator re-creating a runner's pod whose
        # JIT config was never used) boots again, as a real one would: key on the pod's uid.
        uid = pod.metadata.uid
        if (
            pod.status.phase == "Running"
            and name not in self._tasks
            and uid not in self._started_uids
        ):
            self._started_uids.add(uid)
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
            record.job = job
            await asyncio.sleep(job.duration)  # simulated work
            self.fake.complete_job(runner)
            await self._exit(namespace, name)
        except asyncio.CancelledError:
            job = record.job
            if runner is not None and runner.busy and job is not None and job.status != "completed":
                self._lose(runner, job)
            raise
        finally:
            self._tasks.pop(name, None)

    def _lose(self, runner: FakeRunner, job: FakeJob) -> None:
        """The pod died mid-job. As on GitHub, the registration stays busy until the service
        notices the runner is gone; then the job fails (a scale set hears JobCompleted
        "failed") and the runner shows offline."""
        self.lost_jobs.append(job.id)
        asyncio.get_running_loop().call_later(self.lost_runner_after, self.fake.runner_lost, runner)

    async def _connect(self, namespace: str, name: str) -> FakeRunner | None:
        core = client.CoreV1Api(self.api)
        try:
            secret = await core.read_namespaced_secret(name, namespace)
        except ApiException:
            return None
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
        with contextlib.suppress(ApiException):
            await core.patch_namespaced_pod_status(name, namespace, {"status": status})
