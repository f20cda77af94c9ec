"""A node with busy runners deleted during a job stream (issue 12, scenario 4).

The runners of one scale set are pinned (template nodeSelector) to nodes of this test's own,
so deleting one takes no session node from other tests. Five runners on the doomed node take
five long jobs; a stream of short jobs runs on runners elsewhere; then the node goes as a
cloud provider or Karpenter removes it: the machine dies with its runner processes, and the
Node object is deleted (tests/support/node_loss.py). What must hold:

- the five jobs fail on GitHub's side (the registration goes offline, the job ends
  "failure"), and exactly those: no other job is lost;
- their runners are replaced, and their registrations, Secrets and pods are gone within
  CLEAN_WITHIN seconds of the deletion;
- no pod is ever bound to the deleted node after it went;
- the scale set converges to minRunners idle with no orphan, no duplicate registration.

The long form (make chaos) does it during a 100-job stream, deletes a second node (with
whatever it runs then) later, and checks that kube-controller-manager's pod GC removes a bare
pod left on a deleted node (PodGC: a 40 s quarantine, then a force delete).

The deletion moments are the fault, drawn from a seeded RNG (printed; RUNNERFLEET_CHAOS_SEED
replays it); every wait on the system is on a condition with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from runnerfleet import conventions as c
from runnerfleet.localcluster import LocalCluster, NodeSpec
from runnerfleet.sim.github import FakeJob
from tests.support.chaos import (
    DuplicateWatch,
    Outcome,
    all_completed,
    converged,
    feed,
    github_requests,
    record,
    seed,
)
from tests.support.factories import make_scale_set, make_team_listener
from tests.support.fleet import Fleet
from tests.support.kube import wait_for
from tests.support.node_loss import BindingWatch, NodeLoss, gone_within, lose_node, pods_on

SCENARIO = "4 node lost with busy runners"
TEAM = ["self-hosted", "linux", "team-n"]
SET = "team-n-linux"
SELECT = "runnerfleet-test/chaos-node"
DOOMED_RUNNERS = 5  # busy runners on the first node deleted (its pod capacity)
CLEAN_WITHIN = 30.0  # registrations, Secrets and pods of the lost runners are gone by then
PODGC_WITHIN = 120.0  # PodGC: 40 s quarantine + its 20 s period, with room for a busy machine


@dataclass
class Nodes:
    """This test's nodes (all labelled SELECT=namespace); deleted at teardown if still there."""

    cluster: LocalCluster
    f: Fleet
    made: list[str]

    def add(self, prefix: str, pods: str = "110") -> str:
        ns = self.f.namespace
        [name] = self.cluster.add_nodes(
            NodeSpec(count=1, prefix=f"{prefix}-{ns}", labels={SELECT: ns}, pods=pods)
        )
        self.made.append(name)
        return name


@pytest.fixture
async def nodes(local_cluster: LocalCluster, running_fleet: Fleet) -> AsyncIterator[Nodes]:
    made = Nodes(local_cluster, running_fleet, [])
    yield made
    core = client.CoreV1Api(running_fleet.kube)
    for name in made.made:
        with contextlib.suppress(ApiException):  # 404: the test deleted it
            await core.delete_node(name)


async def _setup(f: Fleet, nodes: Nodes, max_runners: int) -> str:
    """The doomed node (room for DOOMED_RUNNERS pods) holding the first runners, then a spare
    node for every later one; returns the doomed node's name."""
    doomed = nodes.add("doomed", pods=str(DOOMED_RUNNERS))
    github = {"configUrl": f.config_url, "secretRef": {"name": "github-app"},
              "protocol": "scaleSet"}  # fmt: skip
    template = {"spec": {"nodeSelector": {SELECT: f.namespace}}}
    await f.apply_scale_set(make_scale_set(
        SET, config_url=f.config_url, team="team-n", labels=TEAM, github=github,
        min_runners=DOOMED_RUNNERS, max_runners=max_runners, template=template,
        scaleDownDelay="2s",
    ))  # fmt: skip
    await f.apply_team_listener(make_team_listener(
        "team-n", team="team-n", config_url=f.config_url, pollInterval="1s",
        scaleSetSelector={"matchLabels": {c.LABEL_TEAM: "team-n"}},
    ))  # fmt: skip
    # 60 s was short once in three make test runs (2 workers; 4 of the 5 online; alone
    # it takes ~10 s, 3 runs of 3 green): a margin, the cause unknown
    # (docs/chaos/node-loss-and-keys.md).
    await f.expect_runners(SET, idle=DOOMED_RUNNERS, within=120)
    assert len(await pods_on(f, doomed)) == DOOMED_RUNNERS
    nodes.add("spare")
    return doomed


async def _min_runners(f: Fleet, value: int) -> None:
    api = client.CustomObjectsApi(f.kube)
    await api.patch_namespaced_custom_object(
        c.GROUP, c.VERSION, f.namespace, c.RUNNER_SCALE_SET_PLURAL, SET,
        {"spec": {"minRunners": value}}, _content_type="application/merge-patch+json",
    )  # fmt: skip


async def _busy_on(f: Fleet, node: str) -> list[FakeJob]:
    """DOOMED_RUNNERS jobs that outlast the test, taken by the idle runners on `node` (the
    only idle runners when they are enqueued); waits until all run there."""
    jobs = [f.github.enqueue_job("acme/app", TEAM, 3600.0) for _ in range(DOOMED_RUNNERS)]
    await wait_for(
        lambda: asyncio.sleep(0, [j.runner_name for j in jobs]),
        lambda names: None not in names, what="the long jobs running", within=30,
    )  # fmt: skip
    here = set(await pods_on(f, node))
    assert {j.runner_name for j in jobs} <= here, "a long job ran off the doomed node"
    return jobs


def _pinned_pod(f: Fleet, node: str) -> client.V1Pod:
    """A bare pod bound to `node` (no controller, no runnerfleet label): only PodGC removes
    it once the node is gone."""
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=f"pinned-{node}"[:63]),
        spec=client.V1PodSpec(node_name=node, containers=[client.V1Container(
            name="c", image="registry.k8s.io/pause:3.9")],
            tolerations=[client.V1Toleration(operator="Exists")]),
    )  # fmt: skip


async def _podgc_seconds(f: Fleet, pod: str, since: float) -> float:
    core = client.CoreV1Api(f.kube)

    async def present() -> bool:
        try:
            await core.read_namespaced_pod(pod, f.namespace)
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    await wait_for(present, lambda there: not there, what=f"PodGC removed {pod}",
                   within=PODGC_WITHIN, interval=1.0)  # fmt: skip
    return time.time() - since


@dataclass
class Form:
    form: str
    jobs: int  # the short-job stream (besides the DOOMED_RUNNERS long ones)
    span: float  # seconds the stream lasts
    min_runners: int
    max_runners: int
    second_node: bool = False  # delete a second node later in the stream
    podgc: bool = False  # check PodGC on a bare pod left on the doomed node


def _cleanup(f: Fleet, loss: NodeLoss, pinned: str | None) -> asyncio.Task[tuple[float, float]]:
    """Time, from the deletion, until the runners that lost a job are cleaned (registration,
    Secret and pod), and until every runner the node took is: idle ones are read again only
    after PodGC removed their pods (nothing reports them, unlike the busy ones)."""
    busy = {f.github.jobs[j].runner_name or "" for j in loss.lost_jobs} - {""}
    every = set(loss.pods) - {pinned or ""}

    async def measure() -> tuple[float, float]:
        return (await gone_within(f, busy, loss.at, CLEAN_WITHIN),
                await gone_within(f, every, loss.at, PODGC_WITHIN))  # fmt: skip

    return asyncio.create_task(measure())


async def _faults(
    f: Fleet,
    rng: random.Random,
    s: Form,
    doomed: str,
    nodes: Nodes,
    bindings: BindingWatch,
    pinned: str | None,
) -> tuple[list[NodeLoss], list[asyncio.Task[tuple[float, float]]]]:
    """Delete the doomed node at a random moment of the stream's first half; in the long
    form, a second node (added for it) in the second half. Each loss's cleanup is timed
    from its deletion on."""
    second = nodes.add("second") if s.second_node else None
    began = time.monotonic()
    moments = [(doomed, 0.2, 0.5)] + ([(second, 0.6, 0.8)] if second is not None else [])
    losses: list[NodeLoss] = []
    timers: list[asyncio.Task[tuple[float, float]]] = []
    for node, low, high in moments:
        # The fault's moment, not a synchronisation.
        await asyncio.sleep(max(0.0, began + rng.uniform(low, high) * s.span - time.monotonic()))
        losses.append(await lose_node(f, node))
        bindings.lost(losses[-1])
        timers.append(_cleanup(f, losses[-1], pinned))
    return losses, timers


async def _run(f: Fleet, nodes: Nodes, s: Form) -> None:
    value = seed(f"node loss ({s.form})")
    rng = random.Random(value)  # noqa: S311 (a replayable fault schedule)
    doomed = await _setup(f, nodes, s.max_runners)
    f.github.reset_counters()
    long_jobs = await _busy_on(f, doomed)
    await _min_runners(f, s.min_runners)  # after the long jobs took the doomed node's runners
    pinned = None
    if s.podgc:
        pinned = (await client.CoreV1Api(f.kube).create_namespaced_pod(
            f.namespace, _pinned_pod(f, doomed))).metadata.name  # fmt: skip
    jobs: list[FakeJob] = []
    dupes, bindings = DuplicateWatch(f).start(), BindingWatch(f).start()
    feeding = asyncio.create_task(feed(f, rng, jobs, count=s.jobs, span=s.span, labels=TEAM))
    details: dict[str, Any] = {}
    losses: list[NodeLoss] = []
    timers: list[asyncio.Task[tuple[float, float]]] = []
    try:
        losses, timers = await _faults(f, rng, s, doomed, nodes, bindings, pinned)
        last_fault = losses[-1].at
        await feeding
        try:
            cleaned = [await timer for timer in timers]
        except AssertionError:
            status = (await f.scale_set(SET)).get("status") or {}
            print(f"scale set status: { {k: v for k, v in status.items() if k != 'demand'} }")
            print(f"demand: {status.get('demand')}; lost jobs {f.runners.lost_jobs}")
            raise
        details["cleaned_s"] = [round(busy, 1) for busy, _ in cleaned]
        details["all_cleaned_s"] = [round(every, 1) for _, every in cleaned]
        await all_completed(jobs + long_jobs, within=90)
        found_orphans = await converged(f, {SET: s.min_runners}, within=90)
        convergence = time.time() - last_fault
        if pinned is not None:
            details["podgc_s"] = round(await _podgc_seconds(f, pinned, losses[0].at), 1)
    finally:
        misplaced = await bindings.stop()
        duplicates = await dupes.stop()
        feeding.cancel()
        for timer in timers:
            timer.cancel()
    expected = {j for loss in losses for j in loss.lost_jobs}
    lost_ids = f.runners.lost_jobs
    answered, counted = github_requests(f)
    details.update(
        expected_failures=len(expected), nodes_deleted=len(losses),
        pods_on_deleted_nodes=[len(loss.pods) for loss in losses],
        misplaced=sorted(misplaced), conclusions=dict(Counter(j.conclusion for j in jobs)),
    )  # fmt: skip
    record(Outcome(
        scenario=SCENARIO, form=s.form,
        faults=f"{len(losses)} kwok node(s) deleted, {DOOMED_RUNNERS} busy runners on the first",
        jobs=len(jobs) + len(long_jobs), lost=len(lost_ids) - len(expected),
        duplicates=duplicates, orphans=len(found_orphans), convergence_s=round(convergence, 1),
        github_requests=answered, github_counted=counted, seed=value, found=FOUND,
        details=details,
    ))  # fmt: skip
    print(f"orphans: {found_orphans}")
    assert {j.id for j in long_jobs} <= set(losses[0].lost_jobs), "a long job outlived its node"
    unexpected = {
        j.id: (j.runner_name, f.runners.records[j.runner_name].node if j.runner_name else None)
        for j in [*jobs, *long_jobs] if j.id in set(lost_ids) - expected
    }  # fmt: skip
    assert sorted(lost_ids) == sorted(expected), f"jobs lost off the deleted nodes: {unexpected}"
    assert {j.conclusion for j in long_jobs} == {"failure"}, "GitHub failed the lost jobs"
    assert {j.conclusion for j in jobs if j.id not in expected} <= {"success"}
    assert duplicates == 0, dupes.samples[:3]
    assert found_orphans == [], found_orphans
    assert misplaced == set(), f"pods bound to a deleted node: {sorted(misplaced)}"


FOUND = (
    "a runner lost with its node counted as Pending (phantom capacity) until PodGC removed its "
    "pod, then its pod was made again from the spent JIT config; the scale-set protocol re-read "
    "an online runner every 10 min; fixed: RunnerLost/PodLost within a round (~6 s)"
)


async def test_node_lost_with_busy_runners_fails_their_jobs_only_and_converges(
    running_fleet: Fleet, nodes: Nodes
) -> None:
    """Short form (make test): the doomed node goes during a 12-job stream."""
    await _run(running_fleet, nodes, Form("short", jobs=12, span=8.0, min_runners=2,
                                          max_runners=15))  # fmt: skip


@pytest.mark.slow
@pytest.mark.chaos
@pytest.mark.timeout(900)
async def test_node_loss_long_form(running_fleet: Fleet, nodes: Nodes) -> None:
    """Issue 12's size (make chaos): 100 jobs, the doomed node and later a second one
    deleted, PodGC checked on a bare pod left behind."""
    await _run(running_fleet, nodes, Form(
        "long", jobs=100, span=60.0, min_runners=3, max_runners=20, second_node=True,
        podgc=True,
    ))  # fmt: skip
