"""The burst benchmark's floor under GitHub's limits (bench/run.py): the limit's lower bound,
the floor client's pacing against the fake GitHub (the best pacing, and no 403), the
per-N summary and the `NxRUNS` plan syntax."""

from __future__ import annotations

import time

import aiohttp
import pytest
from bench import run
from bench.run import FloorGitHub, WindowPacer, limit_bound, summarize

from runnerfleet.sim import github_limits
from runnerfleet.sim.github import API_PREFIX, FakeGitHub
from runnerfleet.sim.github_limits import GitHubLimits

WINDOW = 1.0  # s: GitHub's 60 s window, shrunk so the test takes seconds


def test_limit_bound_is_whole_windows_after_the_first_burst() -> None:
    assert limit_bound(180, 180) == 0.0
    assert limit_bound(200, 180) == 60.0
    assert limit_bound(1000, 180) == 300.0
    assert limit_bound(1000, 160) == 360.0
    assert limit_bound(0, 180) == 0.0


def test_plan_syntax() -> None:
    assert run._plan("200") == (200, 1)
    assert run._plan("200x3") == (200, 3)


async def _configs(github: FakeGitHub, n: int, paced: bool) -> tuple[float, int, int]:
    """(seconds, JIT configs obtained, 403s) for n registrations, paced or all at once."""
    token = github.add_token()
    url = f"{github.url}{API_PREFIX}/orgs/acme/actions/runners/generate-jitconfig"
    headers = {"Authorization": f"token {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        gh = FloorGitHub(http, url, WindowPacer(github.limits.points_per_minute // 5))
        start = time.monotonic()
        if paced:
            for i in range(n):
                await gh.jit_config(f"r{i}")
        else:
            body = {"runner_group_id": 1, "labels": ["linux"]}
            for i in range(n):
                async with http.post(url, json={**body, "name": f"r{i}"}) as resp:
                    gh.refused += resp.status == 403
        gh.pacer.close()
        return time.monotonic() - start, len(github.jit_issued), gh.refused


@pytest.fixture
def short_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(github_limits, "SECONDARY_WINDOW", WINDOW)
    monkeypatch.setattr(run, "SECONDARY_WINDOW", WINDOW)


@pytest.mark.usefixtures("short_window")
async def test_floor_client_registers_at_the_limit_without_a_403() -> None:
    github = FakeGitHub(limits=GitHubLimits(points_per_minute=50))  # 10 writes per window
    await github.start()
    try:
        seconds, issued, refused = await _configs(github, 25, paced=True)
    finally:
        await github.stop()
    assert (issued, refused) == (25, 0)
    # 10 at once, 10 one window later, 5 two windows later: as fast as the limit permits.
    assert 2 * WINDOW <= seconds < 2 * WINDOW + 0.5


@pytest.mark.usefixtures("short_window")
async def test_an_unpaced_client_is_refused_by_the_same_fake() -> None:
    github = FakeGitHub(limits=GitHubLimits(points_per_minute=50))
    await github.start()
    try:
        _, issued, refused = await _configs(github, 25, paced=False)
    finally:
        await github.stop()
    assert (issued, refused) == (10, 15)


def test_summary_reports_mean_and_spread_per_n() -> None:
    def row(n: int, floor: float, operator: float) -> dict[str, object]:
        return {
            "jobs": n, "floor_seconds": floor, "ratio_vs_floor": round(operator / floor, 3),
            "kubernetes_only_floor_seconds": 2.0,
            "floor": {"github_403_429": 0, "jit_seconds": floor - 0.5},
            "operator": {"seconds": operator, "queue_to_running_seconds": {"p50": 1.0, "p95": 2.0},
                         "operator_cpu_seconds": 2.0, "operator_peak_rss_mib": 100.0,
                         "github_counted_requests": n + 6, "github_counted_per_job": 1.03,
                         "github_403_429": 0},
        }  # fmt: skip

    summary = summarize([row(200, 60.0, 66.0), row(200, 60.0, 72.0), row(1000, 300.0, 330.0)])
    assert summary["200"]["runs"] == 2
    assert summary["200"]["operator_seconds"] == {"mean": 69.0, "min": 66.0, "max": 72.0,
                                                  "stdev": 4.243}  # fmt: skip
    assert summary["1000"]["ratio_vs_floor"]["mean"] == 1.1
    assert summary["1000"]["operator_github_403_429"]["max"] == 0
