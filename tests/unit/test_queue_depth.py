"""Queue depth (issue 13): queued and running jobs apart, in the pure fold
(planning/queue_depth.py), the listener's demand writes, metrics and poll report (gateways
substituted), the fleet report and `runnerfleet status`'s tables."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from runnerfleet import conventions as c
from runnerfleet.gateways.actions_service import Statistics
from runnerfleet.planning.job_table import TrackedJob
from runnerfleet.planning.queue_depth import Depth, from_jobs, from_statistics, total
from runnerfleet.planning.report import build_report
from runnerfleet.services.listener import Listener
from runnerfleet.statusview import render
from tests.unit.test_listener_demand import StubKube, _listener, _scale_set

A, B = ("ns", "a"), ("ns", "b")


def _job(job_id: int, status: str, labels: tuple[str, ...] = ("linux",)) -> TrackedJob:
    return TrackedJob(job_id, "acme/app", 1, labels, status, seen_at=0.0,
                      runner_name=f"r{job_id}" if status == "in_progress" else None)  # fmt: skip


def _gauges(lis: Listener) -> dict[tuple[str, str], float]:
    """(family, scale set) -> value of the listener's queue gauges."""
    text = generate_latest(lis.metrics.registry).decode()
    return {
        (sample.name, sample.labels["scale_set"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("runnerfleet_listener_")
        for sample in family.samples
        if "scale_set" in sample.labels
    }


# --- the pure fold -------------------------------------------------------------------------


def test_statistics_split_assigned_into_queued_and_running() -> None:
    assert from_statistics(assigned=5, running=2) == Depth(queued=3, running=2)
    assert from_statistics(assigned=5, running=2).assigned == 5
    # One snapshot, but a job can show running before its assignment does: never negative.
    assert from_statistics(assigned=1, running=2) == Depth(queued=0, running=2)


def test_jobs_fold_by_status_per_scale_set_and_unassigned_count_nowhere() -> None:
    statuses = [(1, "queued"), (2, "waiting"), (3, "pending"), (4, "in_progress"),
                (5, "in_progress"), (6, "queued"), (7, "in_progress")]  # fmt: skip
    assignment = {1: A, 2: A, 3: A, 4: A, 5: A, 6: B}  # 7 matched no scale set
    depths = from_jobs(statuses, assignment, [A, B, ("ns", "idle")])
    assert depths == {A: Depth(3, 2), B: Depth(1, 0), ("ns", "idle"): Depth(0, 0)}
    assert total(depths.values()) == Depth(4, 2)


# --- the listener (REST and scale-set protocol) ---------------------------------------------


async def test_rest_listener_writes_queued_and_running_beside_demand() -> None:
    kube = StubKube([_scale_set("linux", ["linux"])])
    lis = _listener(kube)
    lis.github = SimpleNamespace(rate_limit_remaining=4_000, rate_limited_until=0.0)  # type: ignore[assignment]
    for job_id, status in enumerate(["queued"] * 3 + ["in_progress"] * 2, start=1):
        lis.table.webhook(_job(job_id, status))
    lis.table.webhook(_job(9, "queued", ("gpu",)))  # no scale set: unmatched, not queued
    await lis.publish()
    [(_, written)] = kube.writes
    assert (written["assignedJobs"], written["queuedJobs"], written["runningJobs"]) == (5, 3, 2)
    gauges = _gauges(lis)
    assert gauges[("runnerfleet_listener_queue_depth", "linux")] == 3
    assert gauges[("runnerfleet_listener_running_jobs", "linux")] == 2
    assert gauges[("runnerfleet_listener_queued_jobs", "linux")] == 5  # deprecated: both
    await lis.report()
    poll = kube.statuses[-1]["poll"]
    assert (poll["queuedJobs"], poll["runningJobs"], poll["unmatchedJobs"]) == (3, 2, 1)


async def test_a_job_starting_is_written_though_demand_is_unchanged() -> None:
    kube = StubKube([_scale_set("linux", ["linux"])])
    lis = _listener(kube)
    lis.table.webhook(_job(1, "queued"))
    await lis.publish()
    kube.scale_sets = [_scale_set("linux", ["linux"], kube.writes[-1][1])]
    lis.table.webhook(_job(1, "in_progress"))
    await lis.publish()
    said = [(w["assignedJobs"], w["queuedJobs"], w["runningJobs"]) for _, w in kube.writes]
    assert said == [(1, 1, 0), (1, 0, 1)]
    kube.scale_sets = [_scale_set("linux", ["linux"], kube.writes[-1][1])]
    await lis.publish()  # nothing new: no write
    assert len(kube.writes) == 2


async def test_protocol_statistics_give_the_split_and_the_team_sums_both_protocols() -> None:
    kube = StubKube([_scale_set("rest", ["linux"]), _scale_set("proto", ["arm"])])
    lis = _listener(kube)
    lis.github = SimpleNamespace(rate_limit_remaining=None, rate_limited_until=0.0)  # type: ignore[assignment]
    lis.table.webhook(_job(1, "queued"))
    await lis.publish()
    # As a SessionWorker does: export GitHub's statistics, then write the demand.
    lis.export_statistics(("ns", "proto"), Statistics(0, 0, assigned=5, running=2, registered=2,
                                                      busy=2, idle=0))  # fmt: skip
    await lis.write_demand(("ns", "proto"), 5, ["proto-1", "proto-2"])
    written = {name: w for name, w in kube.writes}
    assert (written["proto"]["queuedJobs"], written["proto"]["runningJobs"]) == (3, 2)
    assert _gauges(lis)[("runnerfleet_listener_queue_depth", "proto")] == 3
    assert lis.team_depth() == Depth(queued=4, running=2)
    await lis.report()
    assert (kube.statuses[-1]["poll"]["queuedJobs"], kube.statuses[-1]["poll"]["runningJobs"]) == (
        4, 2
    )  # fmt: skip
    lis.forget_session(("ns", "proto"))  # its session ended: no longer the team's
    assert lis.team_depth() == Depth(queued=1, running=0)


async def test_a_team_moved_wholly_to_the_protocol_keeps_no_rest_depth() -> None:
    proto = _scale_set("proto", ["arm"])
    proto["spec"]["github"] = {"protocol": c.PROTOCOL_SCALE_SET}
    kube = StubKube([proto])
    lis = _listener(kube)
    lis.github = SimpleNamespace(rate_limit_remaining=None, rate_limited_until=0.0)  # type: ignore[assignment]
    lis.rest_depth = {("ns", "was-rest"): Depth(queued=2)}  # the last REST match
    await lis.poll()  # no REST reads: GitHub's sessions report every set
    assert lis.team_depth() == Depth()
    assert kube.statuses[-1]["poll"]["queuedJobs"] == 0


async def test_a_demand_written_without_a_known_split_counts_as_queued() -> None:
    kube = StubKube([_scale_set("proto", ["arm"])])
    lis = _listener(kube)
    await lis.write_demand(("ns", "proto"), 2, [])  # no statistics exported for it yet
    [(_, written)] = kube.writes
    assert (written["queuedJobs"], written["runningJobs"]) == (2, 0)


# --- the report and `runnerfleet status` ---------------------------------------------------


def _report() -> dict[str, Any]:
    rss = {"metadata": {"name": "linux", "namespace": "ns", "labels": {c.LABEL_TEAM: "a"}},
           "spec": {"minRunners": 0, "maxRunners": 5},
           "status": {"busy": 2, "demand": {"assignedJobs": 5, "queuedJobs": 3,
                                            "runningJobs": 2}}}  # fmt: skip
    listener = {"metadata": {"name": "a", "namespace": "ns"}, "spec": {"team": "a"},
                "status": {"poll": {"queuedJobs": 3, "runningJobs": 2}}}  # fmt: skip
    return build_report([rss], [listener], [], [], now=0.0)


def test_report_and_tables_show_queued_and_running_apart() -> None:
    report = _report()
    assert (report["teams"][0]["queued"], report["teams"][0]["running"]) == (3, 2)
    assert report["teams"][0]["scaleSets"] == ["linux"]
    [rss] = report["scaleSets"]
    assert (rss["queued"], rss["running"], rss["demand"]) == (3, 2, 5)
    assert (report["totals"]["queued"], report["totals"]["running"]) == (3, 2)
    console = Console(width=200, record=True)
    console.print(render(report))
    text = console.export_text()
    assert "queued 3  running 2  demand 5" in text
    header = next(line for line in text.splitlines() if "namespace/name" in line)
    row = next(line for line in text.splitlines() if "ns/linux" in line)
    cells = dict(zip(header.split("┃")[1:-1], row.split("│")[1:-1], strict=True))
    assert {k.strip(): v.strip() for k, v in cells.items()}["queued"] == "3"
    assert {k.strip(): v.strip() for k, v in cells.items()}["running"] == "2"
