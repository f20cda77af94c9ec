"""The listener's demand writes (service layer, gateways substituted): sequence numbers never
go backwards, a newer report is never overwritten, conflicts are retried next round."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from runnerfleet.gateways.kubernetes import ConflictError
from runnerfleet.metrics import ListenerMetrics
from runnerfleet.models.github import parse_config_url
from runnerfleet.models.team_listener import TeamListenerSpec
from runnerfleet.planning.job_table import TrackedJob
from runnerfleet.services.listener import Listener


@dataclass
class StubKube:
    scale_sets: list[dict[str, Any]]
    writes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    conflicts: int = 0  # how many writes to refuse with 409 first
    reads: int = 0
    statuses: list[dict[str, Any]] = field(default_factory=list)

    async def list_scale_sets(self, namespace: str) -> list[dict[str, Any]]:
        await asyncio.sleep(0)  # a real read yields to the loop
        return self.scale_sets

    async def write_demand(self, ns: str, name: str, demand: dict[str, Any], rv: str) -> None:
        if self.conflicts:
            self.conflicts -= 1
            raise ConflictError("moved", 409)
        self.writes.append((name, demand))

    async def patch_team_listener_status(self, ns: str, name: str, status: dict[str, Any]) -> None:
        self.statuses.append(status)

    async def get_scale_set(self, ns: str, name: str) -> dict[str, Any]:
        self.reads += 1
        return next(s for s in self.scale_sets if s["metadata"]["name"] == name)


def _scale_set(
    name: str, labels: list[str], demand: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": "7", "labels": {}},
        "spec": {"labels": labels},
        "status": {"demand": demand} if demand else {},
    }


def _listener(kube: StubKube, now: float = 1_000.0) -> Listener:
    spec = TeamListenerSpec.model_validate({
        "team": "a", "github": {"configUrl": "https://github.com/acme", "secretRef": {"name": "g"}},
        "repositories": {"names": ["app"]},
    })  # fmt: skip
    return Listener(
        kube, None, parse_config_url("https://github.com/acme"), "ns", "a", spec,  # type: ignore[arg-type]
        ListenerMetrics.create(), clock=lambda: now,
    )  # fmt: skip


def _job(job_id: int, labels: tuple[str, ...]) -> TrackedJob:
    return TrackedJob(job_id, "acme/app", 1, labels, "queued", seen_at=0.0)


async def test_writes_demand_with_increasing_sequence() -> None:
    kube = StubKube([_scale_set("linux", ["linux"])])
    lis = _listener(kube)  # type: ignore[arg-type]
    lis.table.webhook(_job(1, ("linux",)))
    lis.table.webhook(_job(2, ("linux",)))
    await lis.publish()
    lis.table.jobs.pop(1)
    kube.scale_sets = [_scale_set("linux", ["linux"], kube.writes[-1][1])]
    await lis.publish()
    assert [w[1]["assignedJobs"] for w in kube.writes] == [2, 1]
    assert kube.writes[0][1]["sequence"] < kube.writes[1][1]["sequence"]


async def test_unchanged_demand_is_not_rewritten() -> None:
    kube = StubKube([_scale_set("linux", ["linux"])])
    lis = _listener(kube)  # type: ignore[arg-type]
    await lis.publish()
    kube.scale_sets = [_scale_set("linux", ["linux"], kube.writes[-1][1])]
    await lis.publish()
    assert len(kube.writes) == 1


async def test_a_newer_report_is_never_overwritten() -> None:
    newer = {"assignedJobs": 5, "sequence": 10**15, "observedAt": "x", "listener": "new"}
    kube = StubKube([_scale_set("linux", ["linux"], newer)])
    lis = _listener(kube)  # type: ignore[arg-type]
    await lis.publish()
    assert kube.writes == []


async def test_conflict_is_retried_at_once_on_a_fresh_read() -> None:
    kube = StubKube([_scale_set("linux", ["linux"])], conflicts=2)
    lis = _listener(kube)  # type: ignore[arg-type]
    lis.table.webhook(_job(1, ("linux",)))
    await lis.publish()
    assert [w[1]["assignedJobs"] for w in kube.writes] == [1]
    assert kube.reads == 2


async def test_endless_conflicts_give_up_without_raising() -> None:
    kube = StubKube([_scale_set("linux", ["linux"])], conflicts=99)
    lis = _listener(kube)  # type: ignore[arg-type]
    await lis.publish()
    assert kube.writes == []


async def test_a_job_starting_reports_its_runner_busy_to_the_operator() -> None:
    from runnerfleet import conventions as c

    kube = StubKube([_scale_set("linux", ["linux"])])
    lis = _listener(kube)
    mine = c.runner_name("linux", "ns", 7)
    other = c.runner_name("linux", "elsewhere", 7)  # same name in another namespace
    lis.table.webhook(_job(1, ("linux",)))
    await lis.publish()
    assert kube.writes[-1][1]["busyRunners"] == []
    kube.scale_sets = [_scale_set("linux", ["linux"], kube.writes[-1][1])]
    for job_id, runner in ((1, mine), (2, other)):
        started = TrackedJob(job_id, "acme/app", 1, ("linux",), "in_progress", seen_at=1.0,
                             runner_name=runner)  # fmt: skip
        lis.table.webhook(started)
    await lis.publish()
    # Demand did not change (a running job still holds its runner) but the news is written.
    assert kube.writes[-1][1]["assignedJobs"] == 2
    assert kube.writes[-1][1]["busyRunners"] == [mine]


async def test_unchanged_demand_is_never_rewritten_however_long_it_stays() -> None:
    """No heartbeat: an idle fleet's listeners write nothing (issue 10: apiserver load)."""
    said = {"assignedJobs": 0, "queuedJobs": 0, "runningJobs": 0, "sequence": 5,
            "observedAt": "x", "busyRunners": []}  # fmt: skip
    kube = StubKube([_scale_set("linux", ["linux"], said)])
    now = [1_000.0]
    lis = _listener(kube)
    lis.clock = lambda: now[0]
    for _ in range(5):
        await lis.write_demand(("ns", "linux"), 0, [])
        await lis.publish()
        now[0] += 3_600.0
    assert kube.writes == []
    await lis.write_demand(("ns", "linux"), 1, ["linux-abc"])
    assert [(w[1]["assignedJobs"], w[1]["busyRunners"]) for w in kube.writes] == [
        (1, ["linux-abc"])
    ]


async def test_poll_report_is_written_on_change_and_once_a_minute_otherwise() -> None:
    kube = StubKube([])
    now = [1_000.0]
    lis = _listener(kube)
    lis.github = SimpleNamespace(rate_limit_remaining=4_000, rate_limited_until=0.0)  # type: ignore[assignment]
    lis.clock = lambda: now[0]
    lis.last_poll_ok = now[0]
    await lis.report()
    for _ in range(5):  # polls every 10 s with nothing new: no write
        now[0] += 10.0
        lis.last_poll_ok = now[0]
        await lis.report()
    assert len(kube.statuses) == 1
    now[0] += 15.0  # 65 s after the first: the operator needs a fresh lastSuccessfulPoll
    lis.last_poll_ok = now[0]
    await lis.report()
    assert len(kube.statuses) == 2
    assert kube.statuses[-1]["poll"]["lastSuccessfulPoll"] == "1970-01-01T00:17:45Z"
    lis.unmatched = 3  # something new: written at once
    await lis.report()
    assert len(kube.statuses) == 3
    assert kube.statuses[-1]["poll"]["unmatchedJobs"] == 3
