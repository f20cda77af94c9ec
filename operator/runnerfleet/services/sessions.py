"""The listener's scale-set sessions: GitHub tells it the demand (runner scale-set protocol).

For every scale set of the team with `spec.github.protocol: scaleSet`, the one listener
process holds one message session on the Actions service (one process, many sessions; ARC
runs a pod per scale set). Each session long-polls its queue and, per batch of job messages:
- `JobAvailable` (GHES): acquires the jobs for the scale set;
- `JobStarted`: the runner is busy, written at once in `status.demand.busyRunners` so the
  operator protects its pod within a second;
- `JobCompleted`: the runner is done (a `canceled` re-assignment changes nothing: demand comes
  from the statistics, never from counting messages);
- demand = `statistics.totalAssignedJobs` (queued-and-assigned plus running), written as
  `status.demand.assignedJobs`; the operator keeps min(max, min + assigned) runners. Its
  split, `queuedJobs` = assigned - `totalRunningJobs` and `runningJobs`, is written beside it
  (planning/queue_depth.py).
A batch is acknowledged only after its demand is written, so a crash re-reads it (every
step above is idempotent): no job is lost.

A demand write Kubernetes refuses (the apiserver restarting) is retried in place, the session
kept and the batch unacknowledged until it lands.
A 409 (another session holds the scale set: a replica, a second cluster, or a session left by
an unclean exit until GitHub expires it) is waited out with jittered backoff, never a crash.
Sessions are deleted on shutdown. While GitHub is down or throttling (5xx, network, 429) a
session is kept and polled again after a backoff, or at the rate limit's reset.

Layer: services. Actions-service I/O through the gateway, Kubernetes through the listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runnerfleet import conventions as c
from runnerfleet import logs
from runnerfleet.gateways.actions_service import (
    ActionsServiceClient,
    JobEvent,
    MessageBatch,
    ScaleSetNotFoundError,
    Session,
    SessionConflictError,
    Statistics,
)
from runnerfleet.gateways.github import GitHubError, GitHubUnavailableError, RateLimitedError
from runnerfleet.gateways.kubernetes import KubeError
from runnerfleet.services.listener import Listener

log = logging.getLogger("runnerfleet.sessions")

SYNC_SECONDS = 10.0  # how often the team's scale sets are re-listed (new ones get a session)
WAITING_SYNC_SECONDS = 1.0  # while a scale set waits for the operator to register it in GitHub
CONFLICT_BACKOFF_MAX = 10.0  # a held session is retried at least this often
ERROR_BACKOFF_MAX = 30.0
KUBE_RETRY_MAX = 2.0  # a demand write the apiserver refused is retried at least this often
POLL_RETRY_MAX = 10.0  # a poll GitHub failed (5xx, network) is retried at least this often


def _backoff(attempt: int, cap: float) -> float:
    """Full jitter: uniform in [0, min(cap, 2^attempt)], at least 0.5 s."""
    return max(0.5, random.uniform(0, min(cap, 2.0**attempt)))  # noqa: S311 (jitter)


def _pause(err: GitHubError, failures: int, now: float) -> float:
    """How long a session waits before polling again: until a rate limit's reset (plus up
    to a second of jitter), else the backoff, capped at POLL_RETRY_MAX so the queue is heard
    soon after GitHub is back."""
    if isinstance(err, RateLimitedError):
        return max(0.5, err.reset_at - now) + random.uniform(0, 1)  # noqa: S311 (jitter)
    return _backoff(failures, POLL_RETRY_MAX)


@dataclass
class SessionWorker:
    """One scale set's session: connect, long-poll, apply, acknowledge; forever."""

    client: ActionsServiceClient
    listener: Listener
    key: tuple[str, str]  # (namespace, RunnerScaleSet name)
    scale_set_id: int
    owner: str
    max_capacity: int
    clock: Callable[[], float] = time.time
    busy: set[str] = field(default_factory=set)
    last_message_id: int = 0
    statistics: Statistics | None = None
    state: str = "connecting"  # connecting, conflict, listening
    attempt: int = 0  # failures in a row, for the backoff
    session_id: str = ""  # the session held now ("" if none)
    on_session: Callable[[], None] = lambda: None  # called when session_id changes

    async def run(self) -> None:
        logs.bind(scale_set="/".join(self.key))  # the worker is a task of its own
        while True:
            try:
                session = await self.client.create_session(self.scale_set_id, self.owner)
            except ScaleSetNotFoundError:
                log.warning("%s/%s: scale set %d is gone", *self.key, self.scale_set_id)
                return  # the manager looks it up again
            except SessionConflictError:
                self.state = "conflict"
                self.attempt += 1
                log.info("%s/%s: another session holds the scale set; retrying", *self.key)
                await asyncio.sleep(_backoff(self.attempt, CONFLICT_BACKOFF_MAX))
                continue
            except GitHubError as err:
                self.attempt += 1
                log.warning("%s/%s: cannot open a session: %s", *self.key, err)
                await asyncio.sleep(_backoff(self.attempt, ERROR_BACKOFF_MAX))
                continue
            self.state = "listening"
            self.session_id = session.session_id
            log.info("%s/%s: session opened on GitHub scale set %d", *self.key, self.scale_set_id)
            self.on_session()
            try:
                await self._listen(session)
            except GitHubError as err:
                log.warning("%s/%s: session lost: %s", *self.key, err)
            finally:
                self.state = "connecting"
                self.session_id = ""
                with contextlib.suppress(GitHubError):
                    await asyncio.shield(self.client.delete_session(session))
            self.attempt += 1  # a session that keeps failing is reopened ever more slowly
            await asyncio.sleep(_backoff(self.attempt, ERROR_BACKOFF_MAX))

    async def _listen(self, session: Session) -> None:
        await self._write(session.statistics)
        while True:
            batch = await self._poll(session)
            self.attempt = 0  # the session works
            if batch is None:  # the long-poll timed out: nothing new (a heartbeat write)
                await self._write(self.statistics or session.statistics)
                continue
            await self._apply(session, batch)
            try:
                await self.client.ack(session, batch.message_id)
            except (GitHubUnavailableError, RateLimitedError) as err:
                # The next poll's lastMessageId acknowledges it as well.
                log.warning("%s/%s: ack deferred to the next poll: %s", *self.key, err)
            self.last_message_id = batch.message_id

    async def _poll(self, session: Session) -> MessageBatch | None:
        """The next batch, on this session through GitHub's outages and throttling: the
        session is GitHub's for minutes without a poll, and a dropped one cannot be deleted
        while GitHub is down, so a new one was refused (409) until GitHub expired the old:
        after a 60 s outage the queue went unheard for two more minutes (issue 12,
        scenario 3). A session GitHub did expire meanwhile answers 404 (SessionGoneError)."""
        failures = 0
        while True:
            try:
                return await self.client.get_messages(
                    session, self.last_message_id, self.max_capacity
                )
            except (GitHubUnavailableError, RateLimitedError) as err:
                failures += 1
                delay = _pause(err, failures, self.clock())
                log.warning("%s/%s: cannot poll (%s); again in %.0fs on the same session",
                            *self.key, err, delay)  # fmt: skip
                await asyncio.sleep(delay)

    async def _apply(self, session: Session, batch: MessageBatch) -> None:
        available = [e.runner_request_id for e in batch.events if e.kind == "JobAvailable"]
        if available:
            await self.client.acquire_jobs(session, available)
        for event in batch.events:
            self._observe(event)
        await self._write(batch.statistics)

    def _observe(self, event: JobEvent) -> None:
        metrics = self.listener.metrics
        if event.kind == "JobAssigned":  # a new job for this set (predictive warm pools)
            self.listener.note_arrivals(self.key, 1)
        if event.kind == "JobStarted" and event.runner_name:
            self.busy.add(event.runner_name)
            metrics.jobs_started.labels(*self.key).inc()
            if event.queue_time and event.runner_assign_time:
                wait = (event.runner_assign_time - event.queue_time).total_seconds()
                metrics.queue_wait.labels(*self.key).observe(max(0.0, wait))
        elif event.kind == "JobCompleted":
            if event.runner_name:
                self.busy.discard(event.runner_name)
            if event.runner_name and event.runner_assign_time and event.finish_time:
                took = (event.finish_time - event.runner_assign_time).total_seconds()
                metrics.job_execution.labels(*self.key).observe(max(0.0, took))
            if event.result != "canceled" or event.runner_name:
                metrics.jobs_completed.labels(*self.key).inc()

    async def _write(self, statistics: Statistics) -> None:
        """Write the demand, retried in place until the apiserver takes it; the batch is
        acknowledged only after. Kubernetes failing (an apiserver or etcd restart, RBAC not
        yet loaded after one) is no reason to drop a working GitHub session: reopening it
        and the session backoff (up to 30 s, growing with each failed reopen) left the queue
        unserved for up to a minute after the apiserver was back (issue 12, scenario 2)."""
        self.statistics = statistics
        self.listener.export_statistics(self.key, statistics)
        failures = 0
        while True:
            try:
                await self.listener.write_demand(self.key, statistics.assigned, sorted(self.busy))
                break
            except KubeError as err:
                failures += 1
                delay = min(KUBE_RETRY_MAX, 0.25 * 2**failures)
                log.warning("%s/%s: demand not written (%s); retrying in %.1fs (%d)",
                            *self.key, err, delay, failures)  # fmt: skip
                await asyncio.sleep(delay)
        if failures:
            log.info("%s/%s: demand written after %d failed tries", *self.key, failures)


@dataclass
class SessionManager:
    """Keeps one SessionWorker per protocol scale set of the team."""

    client: ActionsServiceClient
    listener: Listener
    owner: str  # this process (the pod name): shown as the session's owner in GitHub
    workers: dict[tuple[str, str], tuple[int, asyncio.Task[None], SessionWorker]] = field(
        default_factory=dict
    )
    _group_ids: dict[str, int] = field(default_factory=dict)
    _recorded: list[dict[str, Any]] | None = None
    _pending: set[asyncio.Task[None]] = field(default_factory=set)
    _waiting_since: float | None = None

    async def run(self) -> None:
        try:
            await self._clear_stale()
            while True:
                waiting = False
                try:
                    waiting = await self.sync()
                except (GitHubError, KubeError) as err:
                    log.warning("scale-set sessions not synced: %s", err)
                now = time.monotonic()
                since = (self._waiting_since or now) if waiting else None
                self._waiting_since = since
                # A new scale set is looked for every second for a minute (the operator
                # registers it within seconds), then at the normal pace.
                soon = since is not None and now - since < 60.0
                await asyncio.sleep(WAITING_SYNC_SECONDS if soon else SYNC_SECONDS)
        finally:
            await self.stop()

    async def sync(self) -> bool:
        """Start sessions for new protocol scale sets, stop those gone or moved. True if a
        scale set is not registered in GitHub yet (look again soon, not in 10 s)."""
        wanted: dict[tuple[str, str], tuple[int, int]] = {}
        waiting = False
        for body in await self.listener.protocol_scale_sets():
            meta, spec = body["metadata"], body["spec"]
            key = (meta["namespace"], meta["name"])
            scale_set_id = await self._scale_set_id(key, spec)
            if scale_set_id is None:
                waiting = True
            else:
                wanted[key] = (scale_set_id, int(spec.get("maxRunners", 10)))
        for key in list(self.workers):
            ended = self.workers[key][1].done()
            if ended or key not in wanted or wanted[key][0] != self.workers[key][0]:
                await self._stop(key)
        self._export_states()
        for key, (scale_set_id, capacity) in wanted.items():
            if key in self.workers:
                self.workers[key][2].max_capacity = capacity
                continue
            worker = SessionWorker(
                self.client, self.listener, key, scale_set_id, self.owner, capacity,
                on_session=self._record_soon,
            )  # fmt: skip
            task = asyncio.create_task(worker.run(), name=f"session {key[0]}/{key[1]}")
            self.workers[key] = (scale_set_id, task, worker)
        await self._record()
        return waiting

    async def _clear_stale(self) -> None:
        """Delete the sessions a previous acting replica recorded and may have left behind
        (killed, or cut off): GitHub would refuse ours (409) until it expired them."""
        try:
            recorded = await self.listener.recorded_sessions()
        except KubeError as err:
            log.warning("recorded sessions not read: %s", err)
            return
        for record in recorded:
            if record.get("owner") == self.owner:
                continue
            stale = Session(
                int(record["scaleSetId"]), str(record["sessionId"]), str(record.get("owner", "")),
                "", "", Statistics(0, 0, 0, 0, 0, 0, 0),
            )  # fmt: skip
            with contextlib.suppress(GitHubError):
                await self.client.delete_session(stale)
                log.info("deleted session %s left by %s", stale.session_id, stale.owner)
        await self._record()

    def _export_states(self) -> None:
        states = [worker.state for _, _, worker in self.workers.values()]
        for state in ("listening", "conflict", "connecting"):
            self.listener.metrics.sessions.labels(state).set(states.count(state))

    def _record_soon(self) -> None:
        """A worker opened a session: record it now (a successor must find it even if this
        process is killed before the next sync)."""
        task = asyncio.create_task(self._record())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _record(self) -> None:
        """Write the sessions this replica holds to status.sessions."""
        records = [
            {"scaleSet": key[1], "scaleSetId": sid, "sessionId": worker.session_id,
             "owner": self.owner}
            for key, (sid, _, worker) in sorted(self.workers.items()) if worker.session_id
        ]  # fmt: skip
        if records != self._recorded:
            try:
                await self.listener.report_sessions(records)
                self._recorded = records
            except KubeError as err:
                log.warning("sessions not recorded: %s", err)

    async def _scale_set_id(self, key: tuple[str, str], spec: dict[str, Any]) -> int | None:
        """The GitHub scale set the operator registered for it (None until it has)."""
        group = str((spec.get("github") or {}).get("runnerGroup") or "Default")
        if group not in self._group_ids:
            self._group_ids[group] = await self.client.runner_group_id(group)
        if key in self.workers and not self.workers[key][1].done():
            return self.workers[key][0]
        info = await self.client.get_scale_set(
            self._group_ids[group], c.github_scale_set_name(key[1], key[0])
        )
        return info.id if info is not None else None

    async def _stop(self, key: tuple[str, str]) -> None:
        _, task, _ = self.workers.pop(key)
        self.listener.forget_session(key)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def stop(self) -> None:
        for key in list(self.workers):
            await self._stop(key)
