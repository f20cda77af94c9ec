"""GitHub's runner scale-set protocol end to end: the operator registers the scale set and its
runners through the (fake) Actions service, the team listener holds the scale set's message
session and writes demand from GitHub's statistics; no REST-rate-limited request per job."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from runnerfleet import conventions as c
from runnerfleet.gateways.actions_service import ActionsServiceClient
from runnerfleet.gateways.github import GitHubGateway
from runnerfleet.localcluster import LocalCluster
from runnerfleet.models.github import GitHubCredentials, parse_config_url
from runnerfleet.sim.github import FakeGitHub
from tests.e2e.test_ha_and_standby import _set_mode, operators
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

    async def named() -> list[Any]:
        return [s for s in f.github.actions.scale_sets.values() if s.name == wanted]

    found = await wait_for(
        named, lambda sets: len(sets) == 1, what=f"GitHub scale set {wanted}", within=30
    )
    return found[0]


async def _listening(f: Fleet, scale_set_id: int) -> None:
    await wait_for(
        lambda: asyncio.sleep(0, _holders(f, scale_set_id)),
        lambda held: len(held) == 1,
        what="the listener's session on the scale set",
        within=30,
    )


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
    assert messages["JobStarted"] >= 6
    assert messages["JobCompleted"] >= 6
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
    # The GitHub side goes first; pods and Secrets are deleted after it, concurrently.
    await wait_for(lambda: f.pods(SET), lambda pods: all(p.metadata.deletion_timestamp
                   for p in pods), what="runner pods deleted", within=10)  # fmt: skip
    await wait_for(lambda: f.secrets(SET), lambda found: found == [],
                   what="runner Secrets deleted", within=10)  # fmt: skip


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


async def _ghost_session(f: Fleet, scale_set_id: int, owner: str) -> tuple[Any, Any]:
    """A session held by someone else (another cluster, or a process that died uncleanly)."""
    rest = GitHubGateway(parse_config_url(f.config_url), GitHubCredentials(token=f.token))
    actions = ActionsServiceClient(f.config_url, rest.registration_token)
    return actions, await actions.create_session(scale_set_id, owner)


def _holders(f: Fleet, scale_set_id: int) -> list[str]:
    sessions = f.github.actions.sessions.values()
    return [s.owner_name for s in sessions if s.scale_set_id == scale_set_id]


def _session_requests(f: Fleet, status: int | None = None) -> int:
    """Session-create requests the fake answered (with `status`, or any)."""
    return sum(
        n for (method, route, code), n in f.github.actions.requests.items()
        if method == "POST" and route.endswith("/sessions") and status in (None, code)
    )  # fmt: skip


async def _team_listener(f: Fleet, replicas: int = 1) -> None:
    await f.apply_team_listener(make_team_listener(
        "team-a", team="team-a", config_url=f.config_url, pollInterval="1s", replicas=replicas,
        scaleSetSelector={"matchLabels": {c.LABEL_TEAM: "team-a"}},
    ))  # fmt: skip


async def test_stale_session_is_retaken_once_it_expires(running_fleet: Fleet) -> None:
    """A session nobody polls any more (a listener killed outside this cluster's records)
    holds the scale set until GitHub expires it; the listener waits it out (409s, backoff),
    never crash-looping, then takes the scale set."""
    f = running_fleet
    _fast(f.github, session_timeout=4.0)
    await f.apply_scale_set(_protocol_set(f, max_runners=3))
    registered = await _github_scale_set(f)
    ghost, session = await _ghost_session(f, registered.id, "killed-listener")

    async def poll_until_refused() -> None:
        # The other listener lives (polls) until ours has been refused once, then dies
        # without deleting its session: a start slower than the session timeout must not
        # let the ghost's session lapse before the conflict this test is about.
        while _session_requests(f, status=409) == 0:
            await ghost.get_messages(session, 0, 0)

    polling = asyncio.create_task(poll_until_refused())
    await _team_listener(f)
    proc = await f.listener_process()
    await wait_for(
        lambda: asyncio.sleep(0, polling.done()), bool, what="the listener refused once", within=60
    )
    polling.result()
    held = await wait_for(
        lambda: asyncio.sleep(0, _holders(f, registered.id)),
        lambda owners: owners == [proc.pod], what="the listener holding the session", within=30,
    )  # fmt: skip
    assert held
    assert proc.proc.poll() is None, "the listener waited the conflict out without exiting"
    assert _session_requests(f, status=409) >= 1
    job = f.github.enqueue_job("acme/app", TEAM_A, 20.0)
    await f.expect_runners(SET, idle=0, busy=1, within=30)
    assert job.status == "in_progress"
    await ghost.close()


async def test_standby_cluster_holds_no_session(
    running_fleet: Fleet, local_cluster: LocalCluster, tmp_path: Path
) -> None:
    """Blue/green on one GitHub scale set: the active cluster's listener holds the session;
    a standby cluster's listener holds none and does not fight for it. Switched active (and
    the other cluster switched off), it takes the scale set."""
    f = running_fleet
    _fast(f.github)
    async with operators(f, local_cluster, tmp_path, 1, RUNNERFLEET_MODE="standby"):
        await f.apply_scale_set(_protocol_set(f, max_runners=3))
        registered = await _github_scale_set(f)
        await f.wait_condition("rss", SET, "Standby", "True")
        ghost, held = await _ghost_session(f, registered.id, "active-cluster")
        await _team_listener(f)
        await f.listener_process()
        await wait_for(
            lambda: f.team_listener("team-a"),
            lambda t: bool(t.get("status", {}).get("poll", {}).get("lastSuccessfulPoll")),
            what="the standby listener up and reporting", within=30,
        )  # fmt: skip
        tries = _session_requests(f)
        assert tries == 1, "only the active cluster's session was ever asked for"
        assert _holders(f, registered.id) == ["active-cluster"]

        await ghost.delete_session(held)  # the other cluster goes standby
        await _set_mode(f, "active")
        owners = await wait_for(
            lambda: asyncio.sleep(0, _holders(f, registered.id)),
            lambda owners: len(owners) == 1 and owners[0] != "active-cluster",
            what="this cluster's listener taking the session", within=45,
        )  # fmt: skip
        assert owners
        await ghost.close()


async def test_listener_killed_mid_stream_loses_no_job(running_fleet: Fleet) -> None:
    """Two listener replicas; the acting one is SIGKILLed during a stream of 50 jobs. The
    standby takes the Lease and the scale set's session (deleting the one the dead replica
    recorded) within 15 s with a 10 s Lease (RUNNERFLEET_LISTENER_LEASE_SECONDS on the
    operator, handed to the listener pods); every job completes, each on its own runner."""
    f = running_fleet
    f.operator.stop()
    f.operator.env["RUNNERFLEET_LISTENER_LEASE_SECONDS"] = "10"
    f.operator.start()
    _fast(f.github)
    await f.apply_scale_set(_protocol_set(f, max_runners=10, scaleDownDelay="1s"))
    registered = await _github_scale_set(f)
    await _team_listener(f, replicas=2)
    await wait_for(
        lambda: asyncio.sleep(0, f.kubelet.running()), lambda running: len(running) == 2,
        what="two listener replicas", within=30,
    )  # fmt: skip
    await _listening(f, registered.id)
    acting = _holders(f, registered.id)[0]
    jobs = []
    killed_at = 0.0
    for i in range(50):
        jobs.append(f.github.enqueue_job("acme/app", TEAM_A, 2.0))
        if i == 10:
            victim = next(p for p in f.kubelet.running() if p.pod == acting)
            victim.proc.kill()  # SIGKILL: no clean shutdown, the session is left behind
            killed_at = time.monotonic()
        await asyncio.sleep(0.2)  # arrival pacing of the stream, not synchronisation
    owners = await wait_for(
        lambda: asyncio.sleep(0, _holders(f, registered.id)),
        lambda held: len(held) == 1 and held[0] != acting,
        what="the standby holding the session", within=30,
    )  # fmt: skip
    takeover = time.monotonic() - killed_at
    print(f"takeover after SIGKILL: {takeover:.1f}s (new holder {owners[0]})")
    await wait_for(
        lambda: asyncio.sleep(0, [j.status for j in jobs]),
        lambda s: s == ["completed"] * 50, what="all 50 jobs completed", within=180,
    )  # fmt: skip
    names = [j.runner_name for j in jobs]
    assert len(set(names)) == 50, "each job on its own one-job runner"
    assert all(j.conclusion == "success" for j in jobs)
    assert takeover <= 15.0
    await f.expect_runners(SET, idle=0, within=60)


async def test_server_without_the_protocol_is_named_in_a_condition(running_fleet: Fleet) -> None:
    """A server (or org) the Actions service does not know: a condition and an Event that
    name spec.github.protocol and the way out; nothing is created."""
    f = running_fleet
    github = {"configUrl": f"{f.github.url}/nobody", "secretRef": {"name": "github-app"},
              "protocol": "scaleSet"}  # fmt: skip
    await f.apply_scale_set(make_scale_set("orphan", labels=TEAM_A, min_runners=1, github=github))
    cond = await f.wait_condition(
        "rss", "orphan", "GitHubReachable", "False", "ScaleSetProtocolUnavailable"
    )
    assert "spec.github.protocol" in cond["message"]
    assert "protocol: rest" in cond["message"]
    events = await client.CoreV1Api(f.kube).list_namespaced_event(
        f.namespace, field_selector="involvedObject.name=orphan"
    )
    assert any(e.reason == "ScaleSetProtocolUnavailable" for e in events.items)
    assert await f.pods("orphan") == []


async def test_reassigned_job_is_counted_once(running_fleet: Fleet) -> None:
    """A job no runner takes in time is re-assigned by GitHub (JobCompleted canceled + a new
    JobAssigned). Demand follows GitHub's statistics: 1 job stays demand 1."""
    f = running_fleet
    _fast(f.github, assignment_timeout=2.0)
    await f.apply_scale_set(_protocol_set(f, max_runners=0))  # nothing can take the job yet
    registered = await _github_scale_set(f)
    await _team_listener(f)
    await _listening(f, registered.id)
    job = f.github.enqueue_job("acme/app", TEAM_A, 3.0)
    await wait_for(
        lambda: asyncio.sleep(0, f.github.actions.stats.get(registered.id, {})),
        lambda stats: stats.get("reassigned", 0) >= 2,
        what="GitHub re-assigning the job twice", within=30,
    )  # fmt: skip
    rss = await wait_for(
        lambda: f.scale_set(SET),
        lambda r: ((r.get("status") or {}).get("demand") or {}).get("assignedJobs") == 1,
        what="demand 1", within=10,
    )  # fmt: skip
    assert rss["status"]["demand"]["assignedJobs"] == 1
    api = client.CustomObjectsApi(f.kube)
    await api.patch_namespaced_custom_object(
        c.GROUP, c.VERSION, f.namespace, c.RUNNER_SCALE_SET_PLURAL, SET,
        {"spec": {"maxRunners": 2}}, _content_type="application/merge-patch+json",
    )  # fmt: skip
    await wait_for(
        lambda: asyncio.sleep(0, job.status), lambda s: s == "completed",
        what="the job completed once a runner may exist", within=60,
    )  # fmt: skip
    assert job.conclusion == "success"
    runners_issued = [n for n in f.github.jit_issued if c.is_runner_of(n, SET, f.namespace)]
    assert len(runners_issued) == 1, (
        f"one runner for one job, not one per assignment: {runners_issued}"
    )
