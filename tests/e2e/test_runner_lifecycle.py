"""Runner lifecycle against the local control plane (issue 13): a template change rolls idle
runners while busy ones finish, a job past maxJobDuration is reaped with an Event, a runner
whose job is over but whose pod runs is reaped after the grace, and a pod waiting for a node
is not failed for it (the registration timeout starts with its container)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from kubernetes_asyncio import client

from runnerfleet import conventions as c
from runnerfleet.models.base import epoch
from tests.support.factories import make_scale_set
from tests.support.fleet import Fleet
from tests.support.kube import wait_for

LABELS = ["self-hosted", "linux"]


async def _patch_spec(f: Fleet, name: str, spec: dict[str, Any]) -> None:
    await client.CustomObjectsApi(f.kube).patch_namespaced_custom_object(
        c.GROUP, c.VERSION, f.namespace, c.RUNNER_SCALE_SET_PLURAL, name,
        {"spec": spec}, _content_type="application/merge-patch+json",
    )  # fmt: skip


async def _live(f: Fleet, name: str) -> list[client.V1Pod]:
    return [
        p for p in await f.pods(name)
        if p.status.phase in ("Pending", "Running") and not p.metadata.deletion_timestamp
    ]  # fmt: skip


def _hash(pod: client.V1Pod) -> str:
    return str((pod.metadata.labels or {}).get(c.LABEL_TEMPLATE_HASH))


async def _events(f: Fleet, name: str, reason: str) -> list[client.CoreV1Event]:
    events = await client.CoreV1Api(f.kube).list_namespaced_event(f.namespace)
    return [e for e in events.items if e.involved_object.name == name and e.reason == reason]


async def test_a_template_change_replaces_idle_runners_and_busy_ones_finish(
    running_fleet: Fleet,
) -> None:
    f = running_fleet
    await f.apply_scale_set(make_scale_set(
        "linux", config_url=f.config_url, min_runners=2, max_runners=6, scaleDownDelay="0s",
    ))  # fmt: skip
    jobs = [f.github.enqueue_job("acme/app", LABELS, duration=25.0) for _ in range(3)]
    await f.set_demand("linux", 3, sequence=1)
    await f.expect_runners("linux", idle=2, busy=3, within=60)
    before = {p.metadata.name: _hash(p) for p in await _live(f, "linux")}
    (old,) = set(before.values())
    busy = {r.name for r in f.github.runners.values() if r.busy}

    peak = 0

    async def sample() -> None:  # counts the runners that exist, every 0.1 s
        nonlocal peak
        while True:
            peak = max(peak, len(await _live(f, "linux")))
            await asyncio.sleep(0.1)  # a sampling rate, not synchronisation

    sampler = asyncio.create_task(sample())
    try:
        changed = time.monotonic()
        await _patch_spec(f, "linux", {"template": {"metadata": {"labels": {"image": "v2"}}}})
        rolling = await f.wait_condition("rss", "linux", "Ready", "False", "RollingOut", 30)
        assert "outdated" in rolling["message"]

        async def idle_on_new_template() -> list[str]:
            online = {r.name for r in f.github.runners.values() if r.status == "online"}
            pods = await _live(f, "linux")
            return sorted(
                p.metadata.name for p in pods
                if _hash(p) != old and p.metadata.name in online and p.metadata.name not in busy
            )  # fmt: skip

        await wait_for(idle_on_new_template, lambda n: len(n) == 2,
                       what="2 idle runners on the new template", within=60)  # fmt: skip
        # The old idle ones are gone; the busy ones still run their jobs, untouched.
        await wait_for(
            lambda: _live(f, "linux"),
            lambda pods: {p.metadata.name for p in pods if _hash(p) == old} == busy,
            what="only the busy runners left on the old template", within=30,
        )  # fmt: skip
        assert all(j.status != "completed" for j in jobs), "the rollout waited for no job"
        ready = await f.wait_condition("rss", "linux", "Ready", "True", within=30)
        assert ready["reason"] == "Reconciled", "outdated busy runners do not hold Ready"
        print(f"rollout: Ready again {time.monotonic() - changed:.1f}s after the change")
        status = (await f.scale_set("linux"))["status"]
        assert (status["updated"], status["outdated"]) == (2, 3)
        assert await _events(f, "linux", "RolloutStarted")
        assert await _events(f, "linux", "RolloutComplete")
        replaced = await _events(f, "linux", "RunnerReplaced")
        # Only the 2 idle ones: a runner the operator had not yet seen busy may be chosen
        # too, and GitHub refuses its removal (busy): that is no replacement, and no Event.
        assert len([e for e in replaced if "outdated" in e.message]) == 2

        await wait_for(lambda: asyncio.sleep(0, [j.status for j in jobs]),
                       lambda s: s == ["completed"] * 3, what="the 3 jobs", within=60)  # fmt: skip
        await f.set_demand("linux", 0, sequence=2)
        await f.expect_runners("linux", idle=2, within=60)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    assert all(j.conclusion == "success" for j in jobs)
    assert f.runners.lost_jobs == []
    assert {_hash(p) for p in await _live(f, "linux")} != {old}
    assert all(_hash(p) != old for p in await _live(f, "linux"))
    print(f"rollout: at most {peak} runners at once (maxRunners 6)")
    assert peak <= 6, f"{peak} runners at once, over maxRunners 6"
    await wait_for(lambda: f.scale_set("linux"),
                   lambda o: (o["status"]["updated"], o["status"]["outdated"]) == (2, 0),
                   what="status: 2 updated, 0 outdated", within=30)  # fmt: skip


async def _one_busy_runner(f: Fleet, duration: float, **spec: Any) -> tuple[Any, Any, float]:
    """A scale set of at most 2 runners, one job of `duration` s, and its runner seen busy by
    the operator (its pod's busy-since mark): (the pod as marked, the job, the mark)."""
    await f.apply_scale_set(make_scale_set("linux", config_url=f.config_url, max_runners=2, **spec))
    job = f.github.enqueue_job("acme/app", LABELS, duration=duration)
    await f.set_demand("linux", 1, sequence=1)
    await f.expect_runners("linux", idle=0, busy=1, within=60)
    (pod,) = await wait_for(
        lambda: _live(f, "linux"),
        lambda pods: bool(pods) and c.ANNOTATION_BUSY_SINCE in (pods[0].metadata.annotations or {}),
        what="the busy runner's busy-since mark", within=30,
    )  # fmt: skip
    since = epoch(pod.metadata.annotations[c.ANNOTATION_BUSY_SINCE])
    assert since is not None
    return pod, job, since


async def test_a_job_past_max_job_duration_is_reaped_with_an_event(running_fleet: Fleet) -> None:
    f = running_fleet
    pod, job, since = await _one_busy_runner(f, 600.0, maxJobDuration="10s")

    events = await wait_for(lambda: _events(f, "linux", "MaxJobDuration"), bool,
                            what="a MaxJobDuration Event", within=60)  # fmt: skip
    assert pod.metadata.name in events[0].message
    assert events[0].type == "Warning"
    await wait_for(lambda: _live(f, "linux"),
                   lambda pods: pod.metadata.name not in {p.metadata.name for p in pods},
                   what="the hung runner's pod removed", within=30)  # fmt: skip
    assert time.time() - since >= 10, "not before maxJobDuration"
    await wait_for(lambda: asyncio.sleep(0, job.status), lambda s: s == "completed",
                   what="GitHub failing the job", within=30)  # fmt: skip
    assert job.conclusion == "failure"
    assert f.runners.lost_jobs == [job.id]  # the one job the scenario ends
    status = (await f.scale_set("linux"))["status"]
    assert status.get("consecutiveFailures", 0) == 0, "a hung job is not a runner failure"


async def test_a_runner_whose_job_is_over_but_whose_pod_runs_is_reaped_after_the_grace(
    running_fleet: Fleet,
) -> None:
    f = running_fleet
    f.runners.hang_after_job = True
    pod, job, _ = await _one_busy_runner(f, 6.0, jobCompletionGrace="5s")
    await wait_for(lambda: asyncio.sleep(0, job.status), lambda s: s == "completed",
                   what="the job", within=30)  # fmt: skip
    await f.set_demand("linux", 0, sequence=2)
    done = time.time()
    assert pod.metadata.name not in f.registrations("linux"), "GitHub removed the registration"

    marked = await wait_for(
        lambda: f.pods("linux"),
        lambda pods: any(c.ANNOTATION_JOB_DONE_AT in (p.metadata.annotations or {}) for p in pods),
        what="the job-done mark on the still-running pod", within=60,
    )  # fmt: skip
    assert marked[0].status.phase == "Running"
    await wait_for(lambda: f.pods("linux"), lambda pods: not pods,
                   what="the hung runner's pod reaped", within=60)  # fmt: skip
    mark = epoch(marked[0].metadata.annotations[c.ANNOTATION_JOB_DONE_AT])
    assert mark is not None
    assert time.time() - mark >= 5, "not before the grace"
    assert time.time() - done < 60
    assert job.conclusion == "success"
    assert f.runners.lost_jobs == []
    status = (await f.scale_set("linux"))["status"]
    assert status.get("consecutiveFailures", 0) == 0


async def test_a_pod_waiting_for_a_node_is_not_failed_and_its_timeout_starts_when_it_runs(
    running_fleet: Fleet,
) -> None:
    f = running_fleet
    f.runners.never_register = True  # once it runs, it never comes online: it must fail then
    key = f"runnerfleet.test/{f.namespace}"
    template = {"spec": {"nodeSelector": {key: "yes"}}}  # no node has it yet
    await f.apply_scale_set(make_scale_set(
        "linux", config_url=f.config_url, min_runners=1, max_runners=1,
        registrationTimeout="5s", template=template,
    ))  # fmt: skip
    (waiting,) = await wait_for(lambda: _live(f, "linux"), lambda pods: len(pods) == 1,
                                what="one runner pod", within=30)  # fmt: skip
    # Three registration timeouts pass with the pod unscheduled (as while Karpenter brings a
    # node): the same pod stays, and nothing is reported failed.
    deadline = time.time() + 15
    while time.time() < deadline:
        pods = await _live(f, "linux")
        assert [p.metadata.uid for p in pods] == [waiting.metadata.uid], "the pod was replaced"
        assert pods[0].status.phase == "Pending"
        await asyncio.sleep(1)  # sampling while time passes, not synchronisation
    status = (await f.scale_set("linux"))["status"]
    assert status.get("consecutiveFailures", 0) == 0
    assert await _events(f, "linux", "RunnerFailed") == []

    core = client.CoreV1Api(f.kube)
    node = next(n.metadata.name for n in (await core.list_node()).items if not n.spec.taints)
    await core.patch_node(node, {"metadata": {"labels": {key: "yes"}}})
    try:
        running = await wait_for(
            lambda: core.read_namespaced_pod(waiting.metadata.name, f.namespace),
            lambda p: p.status.phase == "Running", what="the pod running", within=30,
        )  # fmt: skip
        (runner,) = [s for s in running.status.container_statuses if s.name == "runner"]
        started = runner.state.running.started_at.timestamp()
        events = await wait_for(lambda: _events(f, "linux", "RunnerFailed"), bool,
                                what="RegistrationTimeout once it runs", within=60)  # fmt: skip
        assert "RegistrationTimeout" in events[0].message
        assert events[0].first_timestamp.timestamp() >= started + 5 - 1  # second granularity
    finally:
        await core.patch_node(node, {"metadata": {"labels": {key: None}}})
