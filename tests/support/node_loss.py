"""Node loss for the chaos suite (issue 12, scenario 4): a kwok node deleted under busy runners.

`lose_node` does what a cloud provider (or Karpenter) does when a machine goes away: the
machine dies first, taking every runner process on it (the simulated runners lose their jobs,
as `SimulatedRunners.node_lost` models), then the Node object is deleted. `BindingWatch`
samples the namespace's pods for one bound to a deleted node after it was deleted, and
`gone_within` times how long the lost runners' registrations, Secrets and pods take to go.

Layer: tests (support). I/O: the Kubernetes API and the in-process fake GitHub.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from kubernetes_asyncio import client

from tests.support.fleet import Fleet
from tests.support.kube import wait_for


@dataclass
class NodeLoss:
    """One deleted node: when, the runner pods bound to it then, and the jobs that died."""

    node: str
    at: float  # time.time() of the deletion
    pods: list[str]  # runner pods bound to the node when it went
    lost_jobs: list[int]  # jobs in progress on it: they fail on GitHub's side


async def pods_on(f: Fleet, node: str) -> list[str]:
    """Names of the namespace's pods bound to `node` (not yet being deleted)."""
    found = await client.CoreV1Api(f.kube).list_namespaced_pod(
        f.namespace, field_selector=f"spec.nodeName={node}"
    )
    return sorted(p.metadata.name for p in found.items if not p.metadata.deletion_timestamp)


async def lose_node(f: Fleet, node: str) -> NodeLoss:
    """The machine behind `node` dies, then its Node object is deleted. GitHub notices its
    idle runners are gone as it notices busy ones (`lost_runner_after`): they go offline."""
    pods = await pods_on(f, node)
    lost = f.runners.node_lost(node)  # the processes die with the machine, in this instant
    at = time.time()
    loop = asyncio.get_running_loop()
    for after in (1, 5):  # GitHub's heartbeat check, then once more for any straggler
        loop.call_later(after * f.runners.lost_runner_after, _offline, f, set(pods))
    await client.CoreV1Api(f.kube).delete_node(node)
    return NodeLoss(node, at, pods, lost)


def _offline(f: Fleet, names: set[str]) -> None:
    """GitHub noticed these runners' machine is gone: the idle ones online show offline (busy
    ones are failed by `SimulatedRunners`, with their jobs)."""
    for runner in list(f.github.runners.values()):
        if runner.name in names and runner.status == "online" and not runner.busy:
            f.github.runner_lost(runner)


@dataclass
class BindingWatch:
    """Samples the namespace's pods: any pod bound to a deleted node that was not bound there
    when the node went is a runner placed on a vanished node."""

    f: Fleet
    every: float = 0.25
    gone: dict[str, set[str]] = field(default_factory=dict)  # node -> pods bound at deletion
    misplaced: set[str] = field(default_factory=set)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> BindingWatch:
        self._task = asyncio.create_task(self._run())
        return self

    def lost(self, loss: NodeLoss) -> None:
        self.gone[loss.node] = set(loss.pods)

    async def stop(self) -> set[str]:
        self._stop.set()
        if self._task is not None:
            await self._task
        await self._sample()  # one last look
        return self.misplaced

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self._sample()
            await asyncio.sleep(self.every)  # the sampling rate, not a synchronisation

    async def _sample(self) -> None:
        if not self.gone:
            return
        pods = await client.CoreV1Api(self.f.kube).list_namespaced_pod(self.f.namespace)
        for pod in pods.items:
            bound = self.gone.get(pod.spec.node_name or "")
            if bound is not None and pod.metadata.name not in bound:
                self.misplaced.add(f"{pod.metadata.name}@{pod.spec.node_name}")


async def gone_within(f: Fleet, names: set[str], since: float, within: float) -> float:
    """Wait until no registration, Secret or pod (even a terminating one) named in `names`
    is left; return the seconds from `since` (time.time())."""

    async def left() -> list[str]:
        registered = {
            f"{r.name} ({r.status}{', busy' if r.busy else ''})"
            for r in f.github.runners.values() if r.name in names
        }  # fmt: skip
        core = client.CoreV1Api(f.kube)
        secrets = {s.metadata.name for s in (await core.list_namespaced_secret(f.namespace)).items}
        pods = (await core.list_namespaced_pod(f.namespace)).items
        return sorted(
            [f"registration {n}" for n in registered]
            + [f"secret {n}" for n in secrets & names]
            + [f"pod {p.metadata.name} {p.status.phase}" for p in pods if p.metadata.name in names]
        )

    await wait_for(left, lambda rest: not rest, what=f"{sorted(names)} cleaned",
                   within=within)  # fmt: skip
    return time.time() - since
