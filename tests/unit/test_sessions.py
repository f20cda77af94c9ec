"""The listener's scale-set session worker, with the Actions-service client and the listener's
Kubernetes side substituted (the client itself is tested against the fake service)."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runnerfleet.gateways.actions_service import (
    JobEvent,
    MessageBatch,
    Session,
    SessionConflictError,
    Statistics,
)
from runnerfleet.gateways.kubernetes import KubeError
from runnerfleet.metrics import ListenerMetrics
from runnerfleet.services import sessions
from runnerfleet.services.sessions import SessionWorker

KEY = ("team-a", "linux")


def stats(assigned: int = 0, running: int = 0) -> Statistics:
    return Statistics(0, 0, assigned, running, 0, 0, 0)


def event(kind: str, request: int, runner: str = "", result: str = "") -> JobEvent:
    return JobEvent(
        kind, request, f"job-{request}", "app", "acme", ("linux",),  # type: ignore[arg-type]
        7 if runner else 0, runner, result, None, None, None,
    )  # fmt: skip


@dataclass
class StubClient:
    batches: list[MessageBatch | None]
    conflicts: int = 0
    log: list[str] = field(default_factory=list)
    acquired: list[list[int]] = field(default_factory=list)

    async def create_session(self, scale_set_id: int, owner: str) -> Session:
        if self.conflicts:
            self.conflicts -= 1
            self.log.append("conflict")
            raise SessionConflictError("held", 409)
        self.log.append("session")
        return Session(scale_set_id, "s-1", owner, "http://q", "token", stats())

    async def delete_session(self, session: Session) -> None:
        self.log.append("delete-session")

    async def get_messages(
        self, session: Session, last_message_id: int, max_capacity: int
    ) -> MessageBatch | None:
        if not self.batches:
            await asyncio.Event().wait()  # long-poll forever: the test cancels
        return self.batches.pop(0)

    async def ack(self, session: Session, message_id: int) -> None:
        self.log.append(f"ack {message_id}")

    async def acquire_jobs(self, session: Session, ids: list[int]) -> list[int]:
        self.acquired.append(list(ids))
        return list(ids)


@dataclass
class StubListener:
    metrics: ListenerMetrics = field(default_factory=ListenerMetrics.create)
    writes: list[tuple[int, list[str]]] = field(default_factory=list)
    fail: bool = False
    fail_times: int = 0  # the first writes refused, then accepted (an apiserver restart)
    log: list[str] | None = None
    arrivals: int = 0  # jobs noted as arrived (JobAssigned), for predictive warm pools

    async def write_demand(self, key: tuple[str, str], demand: int, busy: list[str]) -> None:
        if self.fail or self.fail_times:
            self.fail_times = max(0, self.fail_times - 1)
            if self.log is not None:
                self.log.append("write refused")
            raise KubeError("apiserver down")
        self.writes.append((demand, busy))
        if self.log is not None:
            self.log.append(f"write {demand}")

    def export_statistics(self, key: tuple[str, str], statistics: Any) -> None:
        pass

    def note_arrivals(self, key: tuple[str, str], count: int) -> None:
        self.arrivals += count


async def run_until(worker: SessionWorker, done: Any, within: float = 5.0) -> None:
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(within):
            while not done():  # noqa: ASYNC110 (a condition on plain state, with a timeout)
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def worker_for(client: StubClient, listener: StubListener) -> SessionWorker:
    return SessionWorker(client, listener, KEY, 5, "pod-1", 10)  # type: ignore[arg-type]


async def test_started_and_completed_runners_and_demand_from_statistics() -> None:
    client = StubClient([
        MessageBatch(1, stats(assigned=2), (event("JobAssigned", 1), event("JobAssigned", 2))),
        MessageBatch(2, stats(assigned=2, running=1), (event("JobStarted", 1, "linux-ab"),)),
        MessageBatch(3, stats(assigned=1), (event("JobCompleted", 1, "linux-ab", "succeeded"),)),
    ])  # fmt: skip
    listener = StubListener(log=client.log)
    worker = worker_for(client, listener)
    await run_until(worker, lambda: "ack 3" in client.log)
    assert listener.writes == [(0, []), (2, []), (2, ["linux-ab"]), (1, [])]
    # Each batch is acknowledged only after its demand is written.
    assert client.log[:8] == [
        "session", "write 0", "write 2", "ack 1", "write 2", "ack 2", "write 1", "ack 3",
    ]  # fmt: skip
    assert worker.last_message_id == 3
    assert listener.arrivals == 2  # the two JobAssigned (predictive warm pools learn from them)


async def test_reassignment_does_not_double_count() -> None:
    """GitHub re-assigns a job no runner took: canceled + a new JobAssigned. Demand comes from
    the statistics (1 job), not from counting assignment messages (2)."""
    client = StubClient([
        MessageBatch(1, stats(assigned=1), (event("JobAssigned", 1),)),
        MessageBatch(2, stats(assigned=1), (event("JobCompleted", 1, result="canceled"),
                                            event("JobAssigned", 2))),
    ])  # fmt: skip
    listener = StubListener()
    worker = worker_for(client, listener)
    await run_until(worker, lambda: "ack 2" in client.log)
    assert [demand for demand, _ in listener.writes] == [0, 1, 1]
    completed = listener.metrics.jobs_completed.labels(*KEY)._value.get()
    assert completed == 0, "a canceled assignment is not a completed job"


async def test_available_jobs_are_acquired() -> None:
    client = StubClient(
        [MessageBatch(1, stats(), (event("JobAvailable", 11), event("JobAvailable", 12)))]
    )
    worker = worker_for(client, StubListener())
    await run_until(worker, lambda: "ack 1" in client.log)
    assert client.acquired == [[11, 12]]


async def test_session_conflict_is_waited_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "_backoff", lambda attempt, cap: 0.01)
    client = StubClient([], conflicts=3)
    worker = worker_for(client, StubListener())
    await run_until(worker, lambda: worker.state == "listening")
    assert client.log[:4] == ["conflict", "conflict", "conflict", "session"]


async def test_unwritten_demand_is_not_acknowledged(monkeypatch: pytest.MonkeyPatch) -> None:
    """While Kubernetes refuses the demand, the batch stays unacknowledged and the session is
    kept (retried in place, not reopened)."""
    monkeypatch.setattr(sessions, "KUBE_RETRY_MAX", 0.01)
    client = StubClient([MessageBatch(1, stats(assigned=3), (event("JobAssigned", 1),))])
    listener = StubListener(fail=True, log=client.log)
    worker = worker_for(client, listener)
    await run_until(worker, lambda: client.log.count("write refused") >= 5)
    assert not any(entry.startswith("ack") for entry in client.log)
    assert worker.last_message_id == 0
    assert client.log.count("session") == 1, "a Kubernetes failure is no reason to reopen"
    assert "delete-session" not in client.log[:-1], "deleted only when the test stops it"


async def test_demand_refused_during_an_apiserver_restart_lands_on_the_same_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 12, scenario 2: the session used to be dropped on the first refused write, and the
    growing reopen backoff (up to 30 s) held the queue for up to a minute after the
    apiserver was back. Now the write is retried, then the batch acknowledged."""
    monkeypatch.setattr(sessions, "KUBE_RETRY_MAX", 0.01)
    client = StubClient([MessageBatch(1, stats(assigned=3), (event("JobAssigned", 1),))])
    listener = StubListener(fail_times=4, log=client.log)
    worker = worker_for(client, listener)
    await run_until(worker, lambda: "ack 1" in client.log)
    assert client.log[:8] == ["session", *["write refused"] * 4, "write 0", "write 3", "ack 1"]
    assert listener.writes == [(0, []), (3, [])]
    assert worker.attempt == 0, "no session backoff built up"


async def test_queue_wait_and_execution_histograms() -> None:
    t0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    started = dataclasses.replace(
        event("JobStarted", 1, "linux-ab"),
        queue_time=t0, runner_assign_time=t0 + timedelta(seconds=3),
    )  # fmt: skip
    done = dataclasses.replace(
        event("JobCompleted", 1, "linux-ab", "succeeded"),
        queue_time=t0, runner_assign_time=t0 + timedelta(seconds=3),
        finish_time=t0 + timedelta(seconds=45),
    )  # fmt: skip
    client = StubClient(
        [MessageBatch(1, stats(1, 1), (started,)), MessageBatch(2, stats(), (done,))]
    )
    listener = StubListener()
    await run_until(worker_for(client, listener), lambda: "ack 2" in client.log)
    registry = listener.metrics.registry
    labels = {"namespace": KEY[0], "scale_set": KEY[1]}
    assert registry.get_sample_value("runnerfleet_job_queue_wait_seconds_sum", labels) == 3.0
    assert registry.get_sample_value("runnerfleet_job_execution_seconds_sum", labels) == 42.0
    assert registry.get_sample_value("runnerfleet_jobs_completed_total", labels) == 1.0
