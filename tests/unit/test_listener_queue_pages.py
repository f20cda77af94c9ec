"""The gateway's queue reads against the paginating fake GitHub (loopback HTTP, no cluster):
every page followed, every page conditional (an unchanged list costs nothing), the ETag cache
bounded, archived repositories flagged."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from runnerfleet.gateways import github as gateway
from runnerfleet.gateways.github import GitHubGateway
from runnerfleet.models.github import GitHubCredentials, parse_config_url
from runnerfleet.sim.github import FakeGitHub


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    gh = FakeGitHub()
    await gh.start()
    yield gh
    await gh.stop()


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
