"""The gateway's queue reads against the paginating fake GitHub (loopback HTTP, no cluster):
every page followed, every page conditional (an unchanged list costs nothing), the ETag cache
bounded, archived repositories flagged."""

from __future__ import annotations

import time

import pytest

from runnerfleet.gateways import github as gateway
from runnerfleet.gateways.github import GitHubGateway
from runnerfleet.models.github import GitHubCredentials, parse_config_url
from runnerfleet.sim.github import FakeGitHub


def _gateway(fake: FakeGitHub) -> GitHubGateway:
    return GitHubGateway(
        parse_config_url(f"{fake.url}/acme"), GitHubCredentials(token=fake.add_token())
    )


def _counted(gh: GitHubGateway) -> int:
    return sum(n for (_, status), n in gh.requests.items() if status != 304)


async def test_all_pages_of_repositories_runs_and_jobs(fake: FakeGitHub) -> None:
    fake.add_repositories([f"acme/r{i:03}" for i in range(250)])
    fake.add_repositories(["acme/old"], archived=True)
    jobs = [fake.enqueue_job("acme/r007", ["linux"], 60.0) for _ in range(150)]
    gh = _gateway(fake)
    repos = await gh.installation_repositories()
    assert len(repos) == 251
    assert [r.name for r in repos if r.archived] == ["old"]
    assert gh.requests[("installation/repositories", 200)] == 3  # 100 + 100 + 51
    runs = await gh.active_run_ids("acme", "r007")
    assert runs == sorted(j.run_id for j in jobs)  # 150 queued runs: two pages
    assert [j.id for j in await gh.run_jobs("acme", "r007", runs[-1])] == [jobs[-1].id]

    before = _counted(gh)
    assert len(await gh.installation_repositories()) == 251
    assert len(await gh.active_run_ids("acme", "r007")) == 150
    assert _counted(gh) == before, "unchanged pages must all be answered 304"

    fake.enqueue_job("acme/r007", ["linux"], 60.0)
    assert len(await gh.active_run_ids("acme", "r007")) == 151  # a change is seen at once


async def test_the_etag_cache_is_bounded(fake: FakeGitHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway, "QUEUE_ETAG_CACHE_MAX", 5)
    fake.add_repositories([f"acme/r{i}" for i in range(10)])
    gh = _gateway(fake)
    for i in range(10):
        await gh.active_run_ids("acme", f"r{i}")
    assert gh.etag_cache_size == 5


async def test_listener_on_a_paced_org_demand_exact_and_nothing_refused() -> None:
    """The listener against the fake with GitHub's limits on and a simulated clock: 300
    repositories (and archived ones), 60 jobs; the first read is paced under the secondary
    limit (nothing refused), demand is exact, and polls after it cost no rate limit."""
    from runnerfleet.metrics import ListenerMetrics
    from runnerfleet.models.team_listener import TeamListenerSpec
    from runnerfleet.services.listener import Listener
    from tests.unit.test_listener_demand import StubKube, _scale_set

    now = [time.time()]
    fake = FakeGitHub(clock=lambda: now[0])
    await fake.start()
    try:
        repos = [f"acme/svc-{i:03}" for i in range(300)]
        fake.add_repositories(repos)
        fake.add_repositories(["acme/old"], archived=True)
        for i in range(60):
            fake.enqueue_job(repos[(i * 7) % 300], ["linux"], 3600.0)
        fake.enqueue_job("acme/old", ["linux"], 3600.0)
        spec = TeamListenerSpec.model_validate({
            "team": "a", "github": {"configUrl": "https://github.com/acme",
                                    "secretRef": {"name": "g"}},
            "repositories": {"all": True}, "pollInterval": "15s",
        })  # fmt: skip
        kube = StubKube([_scale_set("linux", ["linux"])])
        lis = Listener(
            kube, _gateway(fake), parse_config_url("https://github.com/acme"), "ns", "a",  # type: ignore[arg-type]
            spec, ListenerMetrics.create(), clock=lambda: now[0],
        )  # fmt: skip
        for _ in range(3):  # 100 repositories a poll
            await lis.poll()
            now[0] += 15
        assert kube.writes[-1][1]["assignedJobs"] == 60
        assert sum(fake.secondary_limited.values()) == 0
        assert sum(fake.primary_limited.values()) == 0
        counted = sum(n for (_, _, s), n in fake.requests.items() if s != 304)
        for _ in range(8):
            await lis.poll()
            now[0] += 15
        assert sum(n for (_, _, s), n in fake.requests.items() if s != 304) == counted
        assert kube.writes[-1][1]["assignedJobs"] == 60
    finally:
        await fake.stop()
