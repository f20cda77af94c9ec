"""Node pools with real Karpenter (its kwok provider) on a local control plane that starts with
zero nodes: isolation between teams, custom compute, scale-down without disrupting busy
runners, and in-place updates / guarded deletion of a pool's NodePool."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from runnerfleet import conventions as c
from runnerfleet.localcluster import ClusterError, LocalCluster
from tests.support.factories import make_node_pool, make_scale_set
from tests.support.fleet import Fleet, fleet
from tests.support.kube import api_client, temporary_namespace, wait_for

CRDS = Path(__file__).resolve().parents[2] / "crds"
KWOK_CLASS = {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"}
FAMILY = "karpenter.kwok.sh/instance-family"
DISRUPTED = "karpenter.sh/disrupted"


def _template(cpu: str) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "runner", "resources": {
        "requests": {"cpu": cpu, "memory": "1Gi"}}}]}}  # fmt: skip


TEMPLATE = _template("1")


@pytest.fixture(scope="module")
def karpenter_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A control plane with Karpenter's kwok provider and no nodes at all."""
    cluster = LocalCluster(tmp_path_factory.mktemp("karpenter") / "cluster")
    try:
        cluster.up([], karpenter=True)
        cluster.apply_crds(CRDS)
    except ClusterError as err:
        cluster.down()
        pytest.fail(f"the Karpenter control plane could not start: {err}", pytrace=False)
    yield cluster
    cluster.down()


@pytest.fixture
async def kfleet(karpenter_cluster: LocalCluster, tmp_path: Path) -> AsyncIterator[Fleet]:
    async with (
        api_client(karpenter_cluster.kubeconfig) as kube,
        temporary_namespace(kube) as namespace,
        fleet(karpenter_cluster, kube, namespace, tmp_path) as f,
    ):
        yield f


async def _nodes(kube: ApiClient) -> list[Any]:
    return list((await client.CoreV1Api(kube).list_node()).items)


async def _nodepool(kube: ApiClient, name: str) -> dict[str, Any]:
    api = client.CustomObjectsApi(kube)
    found: dict[str, Any] = await api.get_cluster_custom_object(
        "karpenter.sh", "v1", "nodepools", name
    )
    return found


def _pool(name: str, **spec: Any) -> dict[str, Any]:
    return make_node_pool(name, nodeClassRef=KWOK_CLASS, **spec)


@dataclass
class Watcher:
    """Samples nodes, runner pods and GitHub's busy flags until stopped."""

    f: Fleet
    placements: dict[str, tuple[str, str]] = field(default_factory=dict)  # pod -> (set, node)
    node_pools: dict[str, str] = field(default_factory=dict)  # node -> pool label
    node_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    protected_busy: set[str] = field(default_factory=set)  # busy runners seen annotated
    samples: int = 0

    async def run(self) -> None:
        core = client.CoreV1Api(self.f.kube)
        while True:
            nodes = {n.metadata.name: n for n in await _nodes(self.f.kube)}
            pods = (await core.list_namespaced_pod(
                self.f.namespace, label_selector=f"{c.LABEL_COMPONENT}={c.COMPONENT_RUNNER}"
            )).items  # fmt: skip
            busy = {r.name for r in self.f.github.runners.values() if r.busy}
            for name, node in nodes.items():
                labels = node.metadata.labels or {}
                self.node_labels[name] = labels
                self.node_pools[name] = labels.get(c.LABEL_POOL, "")
            for pod in pods:
                where = pod.spec.node_name
                if not where:
                    continue
                self.placements[pod.metadata.name] = (pod.metadata.labels[c.LABEL_SCALE_SET], where)
                if pod.metadata.name not in busy or pod.status.phase != "Running":
                    continue
                if (pod.metadata.annotations or {}).get(c.ANNOTATION_DO_NOT_DISRUPT) == "true":
                    self.protected_busy.add(pod.metadata.name)
                node = nodes.get(where)
                if (
                    node is None
                    or node.metadata.deletion_timestamp
                    or any(t.key == DISRUPTED for t in node.spec.taints or [])
                ):
                    self.violations.append(f"busy runner {pod.metadata.name} on disrupted {where}")
            self.samples += 1
            await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def watching(f: Fleet) -> AsyncIterator[Watcher]:
    watcher = Watcher(f)
    task = asyncio.create_task(watcher.run())
    try:
        yield watcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _leftovers(f: Fleet) -> Callable[[], Awaitable[list[str]]]:
    """Nodes still there, each with its taints and the pods on it (for the failure message)."""

    async def probe() -> list[str]:
        core = client.CoreV1Api(f.kube)
        pods = (await core.list_pod_for_all_namespaces()).items
        out = []
        for node in await _nodes(f.kube):
            name = node.metadata.name
            on = [f"{p.metadata.name}:{p.status.phase}" for p in pods if p.spec.node_name == name]
            taints = [t.key for t in node.spec.taints or []]
            out.append(f"{name} deleting={bool(node.metadata.deletion_timestamp)} "
                       f"taints={taints} pods={on}")  # fmt: skip
        if out:  # why the runners are still there: what GitHub and the operator think
            regs = {r.name: (r.status, r.busy) for r in f.github.runners.values()}
            out.append(f"registrations={regs}")
            for team in ("team-a", "team-b"):
                st = (await f.scale_set(team)).get("status") or {}
                bad = [(x["type"], x["reason"]) for x in st.get("conditions", [])
                       if x["status"] == "False" and x["type"] != "Standby"]  # fmt: skip
                keys = ("desired", "idle", "busy", "pending", "failed", "scaleDownPendingSince")
                out.append(f"{team}: demand={st.get('demand')} "
                           f"{ {k: st.get(k) for k in keys} } false={bad}")  # fmt: skip
        return out

    return probe


@contextlib.asynccontextmanager
async def following_demand(f: Fleet, jobs: list[Any]) -> AsyncIterator[None]:
    """Report each team's queued+running jobs as its demand, as a TeamListener would, so
    runners scale down as jobs finish (leaving half-used nodes behind)."""

    async def follow() -> None:
        sequence = 0
        while True:
            sequence += 1
            # Decided before writing: a job that completes between the two teams' writes
            # must not end the loop with the other team's stale demand as the last word
            # (team-a kept demand 1 and an idle runner, so its node never emptied).
            done = all(j.status == "completed" for j in jobs)
            for team in ("team-a", "team-b"):
                open_ = sum(1 for j in jobs if team in j.labels and j.status != "completed")
                await f.set_demand(team, open_, sequence)
            if done:
                return
            await asyncio.sleep(0.5)

    task = asyncio.create_task(follow())
    try:
        yield
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


@pytest.mark.timeout(600)  # Karpenter's disruption loop is slow; on a loaded 2-core CI more so
@pytest.mark.parametrize(
    ("per_team", "long_job"),
    [(4, 20.0), pytest.param(10, 42.0, marks=pytest.mark.slow)],  # make test: the short form
)
async def test_isolated_and_shared_pools_scale_from_zero_and_back_without_disrupting_jobs(
    kfleet: Fleet, per_team: int, long_job: float
) -> None:
    f = kfleet
    ns = f.namespace
    # Aggressive consolidation onto small (4-CPU) nodes holding two 1.5-CPU runners each: once
    # the short jobs end, half-used nodes are consolidation candidates, and only
    # do-not-disrupt on the busy runners keeps their jobs alive.
    disruption = {"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": "0s",
                  "budgets": [{"nodes": "100%"}]}  # fmt: skip
    small = [{"key": "karpenter.kwok.sh/instance-cpu", "operator": "In", "values": ["4"]}]
    await f.apply_node_pool(_pool(f"a-{ns}", teams=["team-a"], disruption=disruption,
                                  requirements=small))  # fmt: skip
    await f.apply_node_pool(_pool(f"shared-{ns}", disruption=disruption, requirements=small))
    for name in (f"a-{ns}", f"shared-{ns}"):
        await f.wait_condition("rnp", name, "Ready", "True")
        assert (await f.node_pool(name) or {})["status"]["mode"] == "Karpenter"
    for team, pool in (("team-a", f"a-{ns}"), ("team-b", f"shared-{ns}")):
        await f.apply_scale_set(make_scale_set(
            team, config_url=f.config_url, labels=["self-hosted", team], team=team,
            max_runners=10, nodePool=pool, template=_template("1500m"), scaleDownDelay="1s",
        ))  # fmt: skip
    assert await _nodes(f.kube) == []

    started = time.monotonic()
    async with watching(f) as seen:
        jobs = [
            f.github.enqueue_job("acme/app", ["self-hosted", team],
                                 duration=3.0 + long_job * (i % 2))
            for team in ("team-a", "team-b") for i in range(per_team)
        ]  # fmt: skip
        async with following_demand(f, jobs):
            await wait_for(
                lambda: asyncio.sleep(0, [j.status for j in jobs]),
                lambda states: all(s == "completed" for s in states),
                what=f"all {2 * per_team} jobs completed", within=150,
            )  # fmt: skip
        nodes_at_peak = dict(seen.node_pools)
    # No job runs any more, so nothing is left to protect: stop sampling (the fake GitHub
    # shares this event loop, and a starved loop would stall the operator's GitHub calls).
    jobs_done = time.monotonic()
    await wait_for(_leftovers(f), lambda left: left == [], interval=2.0,
                   what="Karpenter removed every empty node", within=300)  # fmt: skip
    print(
        f"jobs done after {jobs_done - started:.0f}s; nodes gone "
        f"{time.monotonic() - jobs_done:.0f}s later; {len(nodes_at_peak)} nodes in all"
    )

    assert [j.conclusion for j in jobs] == ["success"] * (2 * per_team)
    assert f.runners.lost_jobs == []
    assert seen.violations == []
    assert seen.protected_busy, "busy runners' pods carried karpenter.sh/do-not-disrupt"
    per_pool = {p: list(nodes_at_peak.values()).count(p) for p in (f"a-{ns}", f"shared-{ns}")}
    # Two 1.5-CPU runners fit a 4-CPU node: a team's jobs at once need per_team / 2 nodes
    # (the short jobs may end before the last nodes come: 3 of 5 in the long form, as before).
    assert all(count >= max(1, per_team // 2 - 2) for count in per_pool.values()), per_pool
    on = {"team-a": set(), "team-b": set()}  # type: dict[str, set[str]]
    for scale_set, node in seen.placements.values():
        on[scale_set].add(seen.node_pools[node])
    assert on == {"team-a": {f"a-{ns}"}, "team-b": {f"shared-{ns}"}}
    assert len([p for p in seen.placements.values() if p[0] == "team-a"]) >= per_team


async def test_custom_compute_pool_places_runners_on_matching_instances_and_updates_in_place(
    kfleet: Fleet,
) -> None:
    f = kfleet
    pool = f"highmem-{f.namespace}"
    requirement = {"key": FAMILY, "operator": "In", "values": ["m"]}  # m-*: 8 GiB per CPU
    await f.apply_node_pool(_pool(pool, requirements=[requirement], limits={"cpu": "64"}))
    await f.wait_condition("rnp", pool, "Ready", "True")
    before = await _nodepool(f.kube, f"runnerfleet-{pool}")
    await f.apply_scale_set(make_scale_set("mem", config_url=f.config_url, min_runners=3,
                                           nodePool=pool, template=TEMPLATE))  # fmt: skip
    await f.expect_runners("mem", idle=3, within=60)
    nodes = {n.metadata.name: n.metadata.labels for n in await _nodes(f.kube)}
    for pod in await f.pods("mem"):
        assert nodes[pod.spec.node_name][FAMILY] == "m"
        assert nodes[pod.spec.node_name][c.LABEL_POOL] == pool

    # A spec change is applied to the same NodePool object.
    api = client.CustomObjectsApi(f.kube)
    await api.patch_cluster_custom_object(
        c.GROUP, c.VERSION, c.RUNNER_NODE_POOL_PLURAL, pool, {"spec": {"limits": {"cpu": "128"}}},
        _content_type="application/merge-patch+json",
    )  # fmt: skip
    after = await wait_for(lambda: _nodepool(f.kube, f"runnerfleet-{pool}"),
                           lambda np: np["spec"].get("limits", {}).get("cpu") == "128",
                           what="NodePool limits updated")  # fmt: skip
    assert after["metadata"]["uid"] == before["metadata"]["uid"]

    # Deleting the pool while `mem` uses it is held; runners and NodePool stay.
    await api.delete_cluster_custom_object(c.GROUP, c.VERSION, c.RUNNER_NODE_POOL_PLURAL, pool)
    await f.wait_condition("rnp", pool, "Ready", "False", "DeletionBlocked")
    await f.expect_runners("mem", idle=3)
    assert (await _nodepool(f.kube, f"runnerfleet-{pool}"))["metadata"]["uid"] == before[
        "metadata"]["uid"]  # fmt: skip

    # Once the scale set is gone, the pool, its NodePool and (via Karpenter) its nodes go.
    await api.delete_namespaced_custom_object(
        c.GROUP, c.VERSION, f.namespace, c.RUNNER_SCALE_SET_PLURAL, "mem"
    )
    await wait_for(lambda: f.node_pool(pool), lambda o: o is None, what="pool gone", within=60)
    await wait_for(lambda: _nodes(f.kube), lambda nodes: nodes == [],
                   what="the pool's nodes removed", within=120)  # fmt: skip
