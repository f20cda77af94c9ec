"""The fleet benchmark's pure parts: fleet shape, desired count, reconcile lag, limit kinds,
apiserver metrics parsing, per-phase rates, and the scale-set protocol's parts (`--protocol`,
demand as GitHub's totalAssignedJobs, Actions-service figures) (bench/fleet.py)."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
from bench.fleet import (
    LagTracker,
    Snapshot,
    desired_runners,
    headline,
    limit_kind,
    parse_apiserver_requests,
    parse_args,
    phase_figures,
    protocol_demand,
    shape_for,
)


def test_full_fleet_and_scaled_fleets() -> None:
    full = shape_for(1.0)
    assert (full.teams, full.scale_sets, full.runners, full.nodes) == (100, 10, 5000, 200)
    assert full.max_runners == 5  # 1,000 scale sets share 5,000 runners
    small = shape_for(0.05)
    assert (small.teams, small.scale_sets, small.runners, small.nodes) == (5, 10, 250, 10)
    explicit = shape_for(1.0, teams=2, scale_sets=5)
    assert (explicit.sets, explicit.runners, explicit.nodes, explicit.max_runners) == (10, 50, 2, 5)
    assert explicit.other_runners == 250  # the org does not shrink with the fleet


@pytest.mark.parametrize(
    ("spec", "assigned", "want"),
    [
        ({"minRunners": 1, "maxRunners": 5}, None, 1),
        ({"minRunners": 1, "maxRunners": 5}, 2, 3),
        ({"minRunners": 1, "maxRunners": 5}, 9, 5),
        ({"minRunners": 1, "maxRunners": 5, "suspend": True}, 2, 0),
    ],
)
def test_desired_runners(spec: dict[str, object], assigned: int | None, want: int) -> None:
    status = {"demand": {"assignedJobs": assigned}} if assigned is not None else {}
    assert desired_runners({"spec": spec, "status": status}) == want


def test_lag_runs_from_a_raised_target_to_that_many_live_pods() -> None:
    t = LagTracker(phase="stream")
    key = ("team-000", "set-00")
    t.on_pod(key, "p1", True, 0.0)
    t.on_scale_set(key, 1, 0.0)  # first sight: 0 -> 1, already there
    t.on_scale_set(key, 3, 10.0)
    t.on_pod(key, "p2", True, 11.0)
    assert t.samples["stream"] == [0.0]  # not yet: 2 of 3
    t.on_pod(key, "p3", True, 12.5)
    assert t.samples["stream"] == [0.0, 2.5]
    assert t.pods_after(key, 10.0) == [11.0, 12.5]


def test_lag_superseded_and_decreases_do_not_make_samples() -> None:
    t = LagTracker(phase="burst")
    key = ("team-000", "set-00")
    t.on_scale_set(key, 2, 0.0)
    t.on_scale_set(key, 4, 1.0)  # overtakes the first change before it was met
    t.phase = "idle"
    t.on_scale_set(key, 1, 2.0)  # a decrease cancels, no sample
    t.on_pod(key, "p1", True, 3.0)
    t.on_pod(key, "p1", False, 4.0)  # finished: no longer live
    assert t.figures("burst") == {"p50": 0.0, "p95": 0.0, "samples": 0, "superseded": 2,
                                  "unresolved": 0,
                                  "until_planned": {"p50": 0.0, "p95": 0.0}}  # fmt: skip
    assert t.live[key] == set()


def test_limit_kind_from_githubs_messages() -> None:
    assert limit_kind(403, '{"message": "API rate limit exceeded for installation ID 7."}') == (
        "primary"
    )
    assert limit_kind(429, '{"message": "You have exceeded a secondary rate limit."}') == (
        "secondary"
    )
    assert limit_kind(403, '{"message": "Resource not accessible by integration"}') is None
    assert limit_kind(200, "rate limit") is None


def test_apiserver_requests_summed_by_verb_and_resource() -> None:
    text = """# HELP apiserver_request_total Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 3
apiserver_request_total{code="200",component="apiserver",resource="pods",scope="cluster",subresource="",verb="LIST",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",resource="runnerscalesets",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 7
# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_count{verb="LIST"} 99
"""  # noqa: E501
    assert parse_apiserver_requests(text) == Counter(
        {"LIST pods": 5, "PATCH runnerscalesets/status": 7}
    )


def test_phase_figures_are_rates_over_the_window() -> None:
    before = Snapshot(100.0, Counter(), Counter(), Counter(), Counter({"LIST pods": 10}), 1.0, 0)
    after = Snapshot(
        160.0,
        Counter({("GET", "/api/v3/orgs/{org}/actions/runners", 200): 50,
                 ("GET", "/api/v3/repos/{org}/{repo}/actions/runs", 304): 10}),
        Counter({"GET /api/v3/orgs/{org}/actions/runners": 50}),
        Counter({"primary 403": 2}),
        Counter({"LIST pods": 130}),
        4.0, 0.6,
    )  # fmt: skip
    got = phase_figures(before, after, jobs=10)
    assert got["github_requests_per_hour"] == 3600.0  # 60 requests in 60 s
    assert got["github_counted_per_hour"] == 3000.0  # the 304s are free
    assert got["github_counted_per_job"] == 5.0
    assert got["github_counted_by_endpoint"] == {"GET /orgs/{org}/actions/runners": 3000.0}
    assert got["github_rate_limited"] == {"primary 403": 2}
    assert got["apiserver_requests_per_second"] == 2.0
    assert got["operator_cpu_per_second"] == 0.05
    assert got["listeners_cpu_per_second"] == 0.01


def test_protocol_flag_defaults_to_rest_and_takes_only_known_protocols() -> None:
    assert parse_args([]).protocol == "rest"  # earlier result files stay comparable
    assert parse_args(["--protocol", "scaleSet"]).protocol == "scaleSet"
    with pytest.raises(SystemExit):
        parse_args(["--protocol", "webhook"])


def _job(scale_set: int | None, state: str | None, status: str = "queued") -> SimpleNamespace:
    return SimpleNamespace(scale_set_id=scale_set, scale_set_state=state, status=status)


def test_protocol_demand_is_githubs_assigned_count_and_busy_runners() -> None:
    keys = {7: ("team-000", "set-00"), 8: ("team-000", "set-01"), 9: ("team-001", "set-00")}
    jobs = [
        _job(7, "assigned"),
        _job(7, "assigned", "in_progress"),  # running jobs stay assigned
        _job(7, "assigned", "completed"),
        _job(8, "available"),  # offered (GHES), not yet acquired: not assigned
        _job(None, None),  # routed to no scale set: nobody's demand
        _job(42, "assigned"),  # another scale set's (not ours)
    ]
    runners = [
        SimpleNamespace(scale_set_id=7, busy=True, name="set-00-b"),
        SimpleNamespace(scale_set_id=7, busy=True, name="set-00-a"),
        SimpleNamespace(scale_set_id=7, busy=False, name="set-00-c"),
        SimpleNamespace(scale_set_id=None, busy=True, name="other-00001"),
    ]
    assert protocol_demand(jobs, runners, keys) == {
        ("team-000", "set-00"): (2, ("set-00-a", "set-00-b")),
        ("team-000", "set-01"): (0, ()),
        ("team-001", "set-00"): (0, ()),  # every scale set reported, so a drop to 0 is written
    }


def test_actions_service_requests_per_hour_per_job_and_by_endpoint() -> None:
    svc = "/_services/pipelines/_apis/runtime/runnerscalesets"
    before = Snapshot(
        0.0,
        Counter(),
        Counter(),
        Counter(),
        Counter(),
        0.0,
        0.0,
        Counter({("POST", svc + "/{scale_set_id}/generatejitconfig", 200): 5}),
    )
    after = Snapshot(
        60.0, Counter(), Counter(), Counter(), Counter(), 0.0, 0.0,
        Counter({("POST", svc + "/{scale_set_id}/generatejitconfig", 200): 15,
                 ("DELETE", "/_services/pipelines/_apis/distributedtask/pools/0/agents/"
                  "{runner_id}", 400): 2,
                 ("POST", "/api/v3/actions/runner-registration", 200): 1}),
    )  # fmt: skip
    got = phase_figures(before, after, jobs=10)
    assert got["github_counted_per_hour"] == 0.0  # none of it is REST-counted
    assert got["actions_requests_per_hour"] == 780.0  # 13 requests in 60 s
    assert got["actions_requests_per_job"] == 1.3
    assert got["actions_by_endpoint"] == {
        "POST _apis/runtime/runnerscalesets/{scale_set_id}/generatejitconfig": 600.0,
        "DELETE _apis/distributedtask/pools/0/agents/{runner_id}": 120.0,
        "POST /api/v3/actions/runner-registration": 60.0,
    }
    assert got["actions_refused"] == {
        "DELETE _apis/distributedtask/pools/0/agents/{runner_id} 400": 2
    }
    assert phase_figures(before, after)["actions_requests_per_job"] is None  # no jobs


def test_headline_carries_the_actions_figures_and_counts_limits_once() -> None:
    base = Snapshot(0.0, Counter(), Counter(), Counter(), Counter(), 0.0, 0.0)
    quiet = Snapshot(60.0, Counter(), Counter(), Counter(), Counter(), 0.0, 0.0)
    idle_end = Snapshot(3600.0, Counter({("POST", "/api/v3/orgs/{org}/actions/runners/"
                                           "registration-token", 201): 3}),
                        Counter({"POST /api/v3/orgs/{org}/actions/runners/registration-token": 3}),
                        Counter({"secondary 429": 1}), Counter(), 0.0, 0.0,
                        Counter({("GET", "messages", 202): 720}))  # fmt: skip
    idle = phase_figures(base, idle_end)
    phases = {
        "control": {**phase_figures(base, quiet), "apiserver_requests_per_second": 1.0},
        "idle": idle, "stream": phase_figures(base, idle_end, jobs=720),
        "burst": phase_figures(base, quiet),
        "failover": {**phase_figures(base, quiet), "first_correct_action_seconds": 9.0,
                     "operator_peak_rss_mib": 120.0},
        "whole_run": idle,  # spans the others: its 429 must not be counted again
    }  # fmt: skip
    for phase in ("stream", "burst"):
        phases[phase].update(reconcile_lag_seconds={}, queue_to_running_seconds={})
    got = headline(phases, budget_per_hour=5000)
    assert got["idle_github_counted_per_hour"] == 3.0
    assert got["idle_actions_requests_per_hour"] == 720.0
    assert got["stream_actions_requests_per_job"] == 1.0
    assert got["burst_actions_requests_per_job"] is None
    assert got["github_403_429"] == {"secondary 429": 2}  # idle and stream, not whole_run


def test_lag_until_planned_is_the_operator_writing_desired() -> None:
    """The first part of a lag: demand seen (target up) -> the operator's status.desired
    shows it; a later pod completes the lag itself."""
    t = LagTracker(phase="burst")
    key = ("team-000", "set-00")
    t.on_scale_set(key, 2, 10.0, desired=1)  # the listener wrote demand
    t.on_scale_set(key, 2, 11.5, desired=2)  # the operator's round wrote desired
    t.on_scale_set(key, 2, 12.0, desired=2)  # later writes do not count twice
    t.on_pod(key, "p1", True, 12.5)
    t.on_pod(key, "p2", True, 13.0)
    figures = t.figures("burst")
    assert figures["until_planned"] == {"p50": 1.5, "p95": 1.5}
    assert (figures["samples"], figures["p95"]) == (1, 3.0)
