"""The listener's work: find the team's queued jobs, match them to scale sets, write demand.

Polling is the source of truth (every `pollInterval`, conditional requests so an idle team
costs nothing); webhooks only make it faster: a signed `workflow_job` delivery updates the job
table at once and demand is republished without waiting for the next poll.

Demand is written to `status.demand` of each RunnerScaleSet (see docs/runner-scale-set.md)
with a sequence number and the resourceVersion read, so an older listener can never
overwrite a newer report.

Layer: services. I/O only through the gateways.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runnerfleet.gateways.github import GitHubError, GitHubGateway, QueuedJob, RateLimitedError
from runnerfleet.gateways.kubernetes import ConflictError, KubeError, KubeGateway
from runnerfleet.metrics import ListenerMetrics
from runnerfleet.models.base import parse_duration
from runnerfleet.models.github import GitHubTarget
from runnerfleet.models.team_listener import TeamListenerSpec
from runnerfleet.planning.matching import COUNTED, Job, ScaleSetLabels, match

log = logging.getLogger("runnerfleet.listener")
HEARTBEAT_SECONDS = 60.0
CONFLICT_RETRIES = 5


def _rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Listener:
    kube: KubeGateway
    github: GitHubGateway
    target: GitHubTarget
    namespace: str
    name: str
    spec: TeamListenerSpec
    metrics: ListenerMetrics
    clock: Callable[[], float] = time.time
    jobs: dict[int, QueuedJob] = field(default_factory=dict)
    repos: list[tuple[str, str]] = field(default_factory=list)
    sequence: int = 0
    last_written: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    started_seen: set[int] = field(default_factory=set)
    last_poll_ok: float | None = None
    unmatched: int = 0
    assignment: dict[int, tuple[str, str]] = field(default_factory=dict)

    @property
    def poll_interval(self) -> float:
        return parse_duration(self.spec.poll_interval)

    # ------------------------------------------------------------------ polling
    async def poll(self) -> None:
        """One poll: repositories -> active runs -> their jobs; then publish demand."""
        if self.clock() < self.github.rate_limited_until:
            self.metrics.polls.labels("rate_limited").inc()
            await self.report()
            return
        try:
            async with self.github.session():
                self.repos = await self._repositories()
                table: dict[int, QueuedJob] = {}
                for owner, repo in self.repos:
                    for run_id in await self.github.active_run_ids(owner, repo):
                        for job in await self.github.run_jobs(owner, repo, run_id):
                            table[job.id] = job
        except RateLimitedError as err:
            log.warning(
                "GitHub rate limit exhausted; polling resumes at %s", _rfc3339(err.reset_at)
            )
            self.metrics.polls.labels("rate_limited").inc()
            await self.report()
            return
        except GitHubError as err:
            log.warning("poll failed: %s", err)
            self.metrics.polls.labels("error").inc()
            await self.report()
            return
        finally:
            self._export_rate_limit()
        finished = [
            self.assignment[j] for j in self.jobs if j not in table and j in self.assignment
        ]
        self.jobs = table
        self.last_poll_ok = self.clock()
        self.metrics.polls.labels("ok").inc()
        await self.publish()
        self._observe(table.values(), finished)
        await self.report()

    async def _repositories(self) -> list[tuple[str, str]]:
        if self.target.scope == "repo":
            assert self.target.repo is not None
            return [(self.target.owner, self.target.repo)]
        sel = self.spec.repositories
        if sel.all:
            names = await self.github.installation_repositories()
            pattern = sel.name_filter or "*"
            return [
                (full.split("/", 1)[0], full.split("/", 1)[1])
                for full in names
                if fnmatch.fnmatch(full.split("/", 1)[1], pattern)
            ]
        out = []
        for name in sel.names:
            owner, _, repo = name.rpartition("/")
            out.append((owner or self.target.owner, repo))
        return out

    def _export_rate_limit(self) -> None:
        if self.github.rate_limit_remaining is not None:
            self.metrics.rate_limit_remaining.labels(self.spec.team).set(
                self.github.rate_limit_remaining
            )

    def _observe(self, jobs: Any, finished: list[tuple[str, str]]) -> None:
        """Jobs started (with their queue wait) and jobs gone from the queue since last poll."""
        for done in finished:
            self.metrics.jobs_completed.labels(*done).inc()
        for job in jobs:
            owner = self.assignment.get(job.id)
            if job.status != "in_progress" or job.id in self.started_seen or owner is None:
                continue
            self.started_seen.add(job.id)
            self.metrics.jobs_started.labels(*owner).inc()
            if job.created_at and job.started_at:
                wait = max(0.0, job.started_at - job.created_at)
                self.metrics.queue_wait.labels(*owner).observe(wait)

    # ------------------------------------------------------------------ webhooks
    def on_workflow_job(self, payload: dict[str, Any]) -> bool:
        """Apply a `workflow_job` delivery to the job table; False if not for this team."""
        repo = (payload.get("repository") or {}).get("full_name", "")
        owner, _, name = repo.partition("/")
        if self.repos and (owner, name) not in self.repos:
            return False
        wj = payload.get("workflow_job") or {}
        if "id" not in wj:
            return False
        job_id = int(wj["id"])
        status = str(wj.get("status") or payload.get("action") or "queued")
        if status == "completed":
            self.jobs.pop(job_id, None)
            return True
        self.jobs[job_id] = QueuedJob(
            id=job_id, run_id=int(wj.get("run_id", 0)), labels=tuple(wj.get("labels", [])),
            status=status, created_at=None, started_at=None,
        )  # fmt: skip
        return True

    # ------------------------------------------------------------------ demand
    async def publish(self) -> None:
        """Match jobs to this team's scale sets and write each changed demand."""
        scale_sets = [
            s for s in await self.kube.list_scale_sets(self.namespace)
            if self._selected(s)
        ]  # fmt: skip
        by_key = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in scale_sets}
        labels = [
            ScaleSetLabels(ns, name, tuple(s["spec"].get("labels", [])))
            for (ns, name), s in by_key.items()
        ]
        jobs = [Job(j.id, j.labels, j.status) for j in self.jobs.values() if j.status in COUNTED]
        result = match(jobs, labels)
        self.assignment.update(result.assignment)
        self.unmatched = len(result.unmatched)
        self.metrics.unmatched_jobs.labels(self.spec.team).set(self.unmatched)
        for key, demand in result.demand.items():
            self.metrics.queued_jobs.labels(*key).set(demand)
            await self._write(by_key[key], demand)

    def _selected(self, scale_set: dict[str, Any]) -> bool:
        wanted = self.spec.scale_set_selector.match_labels
        have = scale_set["metadata"].get("labels") or {}
        return all(have.get(k) == v for k, v in wanted.items())

    async def _write(self, scale_set: dict[str, Any], demand: int) -> None:
        """Write one scale set's demand; on a 409 re-read it and try again (bounded).

        The operator patches the same object's status often, so conflicts are normal; leaving
        the write to the next publish could mean waiting a whole poll interval.
        """
        meta = scale_set["metadata"]
        key = (meta["namespace"], meta["name"])
        for _ in range(CONFLICT_RETRIES):
            report = self._report(key, scale_set, demand)
            if report is None:
                return
            try:
                await self.kube.write_demand(key[0], key[1], report, meta["resourceVersion"])
            except ConflictError:
                scale_set = await self.kube.get_scale_set(*key)
                meta = scale_set["metadata"]
                continue
            self.last_written[key] = (demand, self.clock())
            self.metrics.demand.labels(*key).set(demand)
            return
        log.warning("%s/%s: demand not written after %d conflicts", *key, CONFLICT_RETRIES)

    def _report(
        self, key: tuple[str, str], scale_set: dict[str, Any], demand: int
    ) -> dict[str, Any] | None:
        """The demand report to write, or None if there is nothing (new) to say."""
        now = self.clock()
        current = (scale_set.get("status") or {}).get("demand") or {}
        previous = self.last_written.get(key)
        fresh = previous is not None and now - previous[1] < HEARTBEAT_SECONDS
        if current.get("assignedJobs") == demand and fresh:
            return None
        if int(current.get("sequence", 0)) >= max(self.sequence, int(now * 1000)) + 1:
            log.warning("%s/%s has a newer demand report; not overwriting it", *key)
            return None
        self.sequence = max(self.sequence + 1, int(now * 1000), int(current.get("sequence", 0)) + 1)
        return {
            "assignedJobs": demand,
            "sequence": self.sequence,
            "observedAt": _rfc3339(now),
            "listener": f"{self.namespace}/{self.name}",
        }

    # ------------------------------------------------------------------ status
    async def report(self) -> None:
        poll: dict[str, Any] = {
            "queuedJobs": sum(1 for j in self.jobs.values() if j.status in COUNTED),
            "unmatchedJobs": self.unmatched,
            "rateLimitRemaining": self.github.rate_limit_remaining,
            "rateLimitedUntil": (
                _rfc3339(self.github.rate_limited_until)
                if self.github.rate_limited_until > self.clock() else None
            ),
        }  # fmt: skip
        if self.last_poll_ok is not None:
            poll["lastSuccessfulPoll"] = _rfc3339(self.last_poll_ok)
        try:
            await self.kube.patch_team_listener_status(self.namespace, self.name, {"poll": poll})
        except KubeError as err:  # a failed status write must not stop polling
            log.warning("could not report poll status: %s", err)
