"""The fleet report behind `runnerfleet status` (pure)."""

from __future__ import annotations

from typing import Any

from runnerfleet import conventions as c
from runnerfleet.planning.report import build_report

NOW = 1_800_000_000.0


def _cond(ok: bool, reason: str = "Reconciled", message: str = "") -> list[dict[str, str]]:
    return [{"type": "Ready", "status": "True" if ok else "False", "reason": reason,
             "message": message}]  # fmt: skip


def _rss(name: str, team: str | None, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns",
                         "labels": {c.LABEL_TEAM: team} if team else {}},
            "spec": {"minRunners": 1, "maxRunners": 5, "nodePool": "shared"},
            "status": {"conditions": _cond(True), **status}}  # fmt: skip


def test_teams_sum_their_scale_sets_and_failures_are_recent_only() -> None:
    sets = [_rss("a", "team-a", busy=2, idle=1, desired=3,
                 demand={"assignedJobs": 2, "queuedJobs": 1, "runningJobs": 1}),
            _rss("b", "team-a", pending=1), _rss("c", None, failed=1)]  # fmt: skip
    listener = {"metadata": {"name": "team-a", "namespace": "ns"}, "spec": {"team": "team-a"},
                "status": {"conditions": _cond(False, "ListenerNotReady", "starting"),
                           "poll": {"queuedJobs": 2, "runningJobs": 1,
                                    "rateLimitRemaining": 4000}}}  # fmt: skip
    pool = {"metadata": {"name": "shared"}, "spec": {},
            "status": {"mode": "Static", "nodes": 2, "conditions": _cond(True)}}  # fmt: skip
    events = [
        {"involvedObject": {"namespace": "ns", "name": "c"}, "message": "runner c-1: OOMKilled",
         "lastTimestamp": "2027-01-15T08:00:00Z"},
        {"involvedObject": {"namespace": "ns", "name": "c"}, "message": "old",
         "lastTimestamp": "2020-01-01T00:00:00Z"},
    ]  # fmt: skip
    report = build_report(sets, [listener], [pool], events, now=1_800_000_000.0 + 60)
    [team] = report["teams"]
    assert team["runners"] == {"pending": 1, "idle": 1, "busy": 2, "failed": 0}
    assert team["scaleSets"] == ["a", "b"]
    assert (team["queued"], team["running"], team["ready"]) == (2, 1, False)
    assert [(s["name"], s["queued"], s["running"], s["demand"]) for s in report["scaleSets"]] == [
        ("a", 1, 1, 2), ("b", None, None, 0), ("c", None, None, 0)
    ]  # fmt: skip
    assert team["problem"] == "ListenerNotReady: starting"
    assert report["totals"] == {"pending": 1, "idle": 1, "busy": 2, "failed": 1, "queued": 2,
                                "running": 1, "demand": 2}  # fmt: skip
    assert report["nodePools"][0]["teams"] == []
    assert [f["message"] for f in report["recentFailures"]] == ["runner c-1: OOMKilled"]


def test_a_rollout_shows_its_counts() -> None:
    from rich.console import Console

    from runnerfleet.statusview import render

    why = _cond(False, "RollingOut", "the runner template changed")
    rolling = _rss("r", "team-a", updated=1, outdated=2, conditions=why)
    report = build_report([rolling, _rss("s", "team-a")], [], [], [], now=NOW)
    rows = {s["name"]: s for s in report["scaleSets"]}
    assert (rows["r"]["updated"], rows["r"]["outdated"]) == (1, 2)
    assert (rows["s"]["updated"], rows["s"]["outdated"]) == (None, None)
    console = Console(width=250, record=True)
    console.print(render(report))
    assert "rolling out: 2 outdated, 1 updated" in console.export_text()
