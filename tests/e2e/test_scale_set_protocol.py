"""GitHub's runner scale-set protocol end to end: the operator registers the scale set and its
runners through the (fake) Actions service, the team listener holds the scale set's message
session and writes demand from GitHub's statistics; no REST-rate-limited request per job."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from kubernetes_asyncio import client

from runnerfleet import conventions as c
from runnerfleet.sim.github import FakeGitHub
from tests.support.factories import make_scale_set, make_team_listener
from tests.support.fleet import Fleet
from tests.support.kube import wait_for

TEAM_A = ["self-hosted", "linux", "team-a"]
SET = "team-a-linux"


def _protocol_set(f: Fleet, name: str = SET, **spec: Any) -> dict[str, Any]:
    github = {"configUrl": f.config_url, "secretRef": {"name": "github-app"},
              "protocol": "scaleSet"}  # fmt: skip
    return make_scale_set(
        name, config_url=f.config_url, team="team-a", labels=TEAM_A, github=github, **spec
    )


def _fast(github: FakeGitHub, **options: Any) -> None:
    """Short long-polls (heartbeats) and whatever the test needs."""
    actions = github.actions
    actions.options = replace(actions.options, long_poll_timeout=2.0, **options)


def _counted(github: FakeGitHub) -> dict[str, int]:
    return dict(github.counted_by_endpoint)


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


async def _github_scale_set(f: Fleet, name: str = SET) -> Any:
    wanted = c.github_scale_set_name(name, f.namespace)
    found = await wait_for(
        lambda: asyncio.sleep(0, [s for s in f.github.actions.scale_sets.values()
                                  if s.name == wanted]),  # fmt: skip
        lambda sets: len(sets) == 1, what=f"GitHub scale set {wanted}", within=30,
    )  # fmt: skip
    return found[0]


async def _listening(f: Fleet, scale_set_id: int) -> None:
    await wait_for(
        lambda: asyncio.sleep(0, [s for s in f.github.actions.sessions.values()
                                  if s.scale_set_id == scale_set_id]),  # fmt: skip
        lambda held: len(held) == 1, what="the listener's session on the scale set", within=30,
    )  # fmt: skip


@pytest.mark.parametrize("acquire_flow", [False, True], ids=["github.com", "ghes-acquire"])
async def test_jobs_flow_through_the_scale_set_protocol(
    running_fleet: Fleet, acquire_flow: bool
) -> None:
    f = running_fleet
    _fast(f.github, acquire_flow=acquire_flow)
    await f.apply_scale_set(_protocol_set(f, min_runners=1, max_runners=10, scaleDownDelay="1s"))
    registered = await _github_scale_set(f)
    assert {label.name for label in registered.labels} == set(TEAM_A)
    await f.apply_team_listener(make_team_listener(
        "team-a", team="team-a", config_url=f.config_url, pollInterval="1s",
        scaleSetSelector={"matchLabels": {c.LABEL_TEAM: "team-a"}},
    ))  # fmt: skip
    await f.expect_runners(SET, idle=1, within=30)
    await _listening(f, registered.id)
    runners = [r for r in f.github.runners.values() if c.is_runner_of(r.name, SET, f.namespace)]
    assert [r.scale_set_id for r in runners] == [registered.id], "JIT config from the scale set"

    before = _counted(f.github)
    jobs = [f.github.enqueue_job("acme/app", TEAM_A, 4.0) for _ in range(6)]
    await f.expect_runners(SET, idle=1, busy=6, within=30)
    await wait_for(
        lambda: asyncio.sleep(0, [j.status for j in jobs]),
        lambda s: s == ["completed"] * 6, what="the 6 jobs to complete", within=60,
    )  # fmt: skip
    await f.expect_runners(SET, idle=1, within=30)
    spent = _delta(_counted(f.github), before)
    print(f"REST requests counted during 6 jobs: {spent}")
    print(f"Actions service: {f.github.actions.summary()}")
    assert spent == {}, "no REST-rate-limited request per job on the scale-set path"
    messages = f.github.actions.summary()["job_messages"]
    assert messages["JobStarted"] >= 6 and messages["JobCompleted"] >= 6
    if acquire_flow:
        assert messages["JobAvailable"] >= 6
    rss = await f.scale_set(SET)
    assert rss["status"]["demand"]["assignedJobs"] == 0

    api = client.CustomObjectsApi(f.kube)
    await api.delete_namespaced_custom_object(
        c.GROUP, c.VERSION, f.namespace, c.RUNNER_SCALE_SET_PLURAL, SET
    )
    await wait_for(
        lambda: asyncio.sleep(0, registered.id in f.github.actions.scale_sets),
        lambda present: not present, what="the GitHub scale set removed", within=30,
    )  # fmt: skip
    assert f.registrations(SET) == []
    assert await f.pods(SET) == [] or all(
        p.metadata.deletion_timestamp for p in await f.pods(SET)
    )
    assert await f.secrets(SET) == []


async def test_busy_runner_is_protected_from_the_job_started_message(running_fleet: Fleet) -> None:
    """JobStarted marks the runner busy at once: its pod gets Karpenter's do-not-disrupt
    annotation from the listener's report, without waiting for a sweep."""
    f = running_fleet
    _fast(f.github)
    await f.apply_scale_set(_protocol_set(f, min_runners=0, max_runners=3))
    registered = await _github_scale_set(f)
    await f.apply_team_listener(make_team_listener(
        "team-a", team="team-a", config_url=f.config_url, pollInterval="1s",
        scaleSetSelector={"matchLabels": {c.LABEL_TEAM: "team-a"}},
    ))  # fmt: skip
    await _listening(f, registered.id)
    job = f.github.enqueue_job("acme/app", TEAM_A, 30.0)
    await wait_for(
        lambda: asyncio.sleep(0, job.runner_name), bool, what="the job started", within=30
    )
    core = client.CoreV1Api(f.kube)
    pod = await wait_for(
        lambda: core.read_namespaced_pod(job.runner_name or "", f.namespace),
        lambda p: (p.metadata.annotations or {}).get(c.ANNOTATION_DO_NOT_DISRUPT) == "true",
        what="do-not-disrupt on the busy runner's pod", within=5,
    )  # fmt: skip
    assert pod
    rss = await f.scale_set(SET)
    assert rss["status"]["demand"]["busyRunners"] == [job.runner_name]
