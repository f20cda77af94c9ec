"""The listener's poll (service layer, GitHub and Kubernetes gateways substituted): archived
repositories skipped, idle ones read on a budget, webhooks merged with a poll in flight, and no
lock held across GitHub I/O."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from runnerfleet.gateways.github import QueuedJob, RepositoryInfo
from runnerfleet.metrics import ListenerMetrics
from runnerfleet.models.github import parse_config_url
from runnerfleet.models.team_listener import TeamListenerSpec
from runnerfleet.planning.polling import PollPolicy
from runnerfleet.services.listener import Listener
from tests.unit.test_listener_demand import StubKube, _scale_set


@dataclass
class StubGitHub:
    repos: list[RepositoryInfo]
    jobs: dict[str, list[QueuedJob]] = field(default_factory=dict)  # repo -> live jobs
    reads: list[str] = field(default_factory=list)  # repositories whose runs were listed
    gate: asyncio.Event | None = None  # when set, run listings wait for it
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    rate_limited_until: float = 0.0
    rate_limit_remaining: int | None = None
    requests: dict[tuple[str, int], int] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        yield

    async def installation_repositories(self) -> list[RepositoryInfo]:
        return self.repos

    async def active_run_ids(self, owner: str, repo: str) -> list[int]:
        self.reads.append(f"{owner}/{repo}")
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        return sorted({j.run_id for j in self.jobs.get(f"{owner}/{repo}", [])})

    async def run_jobs(self, owner: str, repo: str, run_id: int) -> list[QueuedJob]:
        return [j for j in self.jobs.get(f"{owner}/{repo}", []) if j.run_id == run_id]


LABELS = ("self-hosted", "linux")


def _org(n: int, archived: int = 0) -> list[RepositoryInfo]:
    return [RepositoryInfo("acme", f"r{i:04}", i < archived, None) for i in range(n)]


def _queued(job_id: int) -> QueuedJob:
    return QueuedJob(job_id, job_id, LABELS, "queued", None, None)


def _listener(gh: StubGitHub, kube: StubKube, clock: list[float]) -> Listener:
    spec = TeamListenerSpec.model_validate({
        "team": "a", "github": {"configUrl": "https://github.com/acme", "secretRef": {"name": "g"}},
        "repositories": {"all": True}, "pollInterval": "15s",
    })  # fmt: skip
    return Listener(
        kube, gh, parse_config_url("https://github.com/acme"), "ns", "a", spec,  # type: ignore[arg-type]
        ListenerMetrics.create(), clock=lambda: clock[0],
        policy=PollPolicy(idle_visits_per_hour=1800, reserve=0),
    )  # fmt: skip


def _demand(kube: StubKube) -> int:
    return int(kube.writes[-1][1]["assignedJobs"])


async def test_org_of_2000_with_300_jobs_and_archived_repositories() -> None:
    gh = StubGitHub(_org(2000, archived=100))
    for i in range(300):
        repo = f"acme/r{100 + (i * 7) % 1900:04}"
        gh.jobs.setdefault(repo, []).append(_queued(1000 + i))
    gh.jobs["acme/r0000"] = [_queued(1)]  # archived: never read, never counted
    kube = StubKube([_scale_set("linux", list(LABELS))])
    clock = [1000.0]
    lis = _listener(gh, kube, clock)  # type: ignore[arg-type]
    polls = 0
    while len(set(gh.reads)) < 1900:  # the first read is paced: 100 repositories a poll
        await lis.poll()
        clock[0] += 15
        polls += 1
    assert polls == 19
    assert _demand(kube) == 300
    assert len(gh.reads) == 1900  # none read twice meanwhile
    assert "acme/r0000" not in gh.reads

    gh.reads.clear()
    await lis.poll()
    assert len(gh.reads) == 100  # the poll's share of the secondary limit
    idle = [r for r in gh.reads if r not in gh.jobs]
    assert len(idle) == 8  # the idle trickle first: 1800/h at 15 s
    busy = {r for r in gh.jobs if r != "acme/r0000"}
    for _ in range(3):  # the 300 busy repositories, 92 a poll, longest unread first
        clock[0] += 15
        await lis.poll()
    assert busy <= set(gh.reads)
    assert _demand(kube) == 300


async def test_a_webhook_during_a_poll_is_kept_and_published_without_waiting() -> None:
    gh = StubGitHub(_org(1), gate=asyncio.Event())
    kube = StubKube([_scale_set("linux", list(LABELS))])
    clock = [1000.0]
    lis = _listener(gh, kube, clock)  # type: ignore[arg-type]
    poll = asyncio.create_task(lis.poll())
    await asyncio.wait_for(gh.entered.wait(), 5)  # the poll is inside GitHub I/O now
    clock[0] += 1
    payload = {
        "action": "queued", "repository": {"full_name": "acme/r0000"},
        "workflow_job": {"id": 42, "run_id": 42, "labels": list(LABELS), "status": "queued"},
    }  # fmt: skip
    assert lis.on_workflow_job(payload)
    await asyncio.wait_for(lis.publish(), 5)  # no lock held across the poll's GitHub I/O
    assert _demand(kube) == 1
    gh.gate.set()  # type: ignore[union-attr]
    await poll  # its listing began before job 42 existed: it must not drop it
    assert _demand(kube) == 1
    completed = {**payload, "action": "completed",
                 "workflow_job": {**payload["workflow_job"], "status": "completed"}}  # type: ignore[dict-item]  # fmt: skip
    gh.gate = None
    gh.jobs["acme/r0000"] = [_queued(42)]  # a listing older than the completion
    assert lis.on_workflow_job(completed)
    await lis.publish()
    assert _demand(kube) == 0


async def test_many_webhooks_coalesce_into_few_publishes() -> None:
    gh = StubGitHub(_org(1))
    kube = StubKube([_scale_set("linux", list(LABELS))])
    lis = _listener(gh, kube, [1000.0])  # type: ignore[arg-type]
    for i in range(50):
        lis.on_workflow_job({
            "repository": {"full_name": "acme/r0000"},
            "workflow_job": {"id": i, "run_id": i, "labels": list(LABELS), "status": "queued"},
        })  # fmt: skip
    await asyncio.gather(*(lis.publish() for _ in range(50)))
    # The first publish runs; the 49 queued behind it share one more.
    assert [w[1]["assignedJobs"] for w in kube.writes] == [50, 50]


async def test_jobs_of_a_repository_that_left_the_installation_are_forgotten() -> None:
    gh = StubGitHub(_org(2))
    gh.jobs["acme/r0001"] = [_queued(5)]
    kube = StubKube([_scale_set("linux", list(LABELS))])
    clock = [1000.0]
    lis = _listener(gh, kube, clock)  # type: ignore[arg-type]
    await lis.poll()
    assert _demand(kube) == 1
    gh.repos = [RepositoryInfo("acme", "r0000", False, None), RepositoryInfo("acme", "r0001",
                True, None)]  # archived now  # fmt: skip
    clock[0] += 61
    await lis.poll()
    assert _demand(kube) == 0
    assert set(lis.repo_states) == {"acme/r0000"}
