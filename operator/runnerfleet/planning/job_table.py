"""The listener's table of a team's live jobs, merged from polls and webhooks.

Two sources tell the listener about jobs, and neither replaces the other:

- a **webhook** (`workflow_job`) is news about one job, applied at once;
- a **poll** of a repository is the whole truth about that repository *as of when the poll
  began*. It reconciles: jobs it lists are added or updated; a job it does not list is dropped
  only if the table learnt of it before the poll began (a job a webhook reported after that is
  kept for the next poll to judge), and, for a job a webhook reported, only after
  `webhook_grace` seconds (GitHub's lists can lag its deliveries).

A job never moves backwards (queued → in_progress → completed; a re-run is a new job id), so
an older poll result or a late delivery cannot undo a newer state, and a completed job is
remembered (a bounded set of tombstones) so that nothing resurrects it.

Layer: planning. Pure: no I/O, no clock (times are arguments).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from runnerfleet.planning.matching import COUNTED

COMPLETED = "completed"
_RANK = {"in_progress": 1, COMPLETED: 2}  # queued, waiting, pending, requested: 0
TOMBSTONES_MAX = 20_000


def rank(status: str) -> int:
    return _RANK.get(status, 0)


@dataclass(frozen=True)
class TrackedJob:
    id: int
    repo: str  # "owner/name"
    run_id: int
    labels: tuple[str, ...]
    status: str
    seen_at: float  # when this was learnt: the poll's start, or the delivery's receipt
    from_webhook: bool = False
    created_at: float | None = None
    started_at: float | None = None
    runner_name: str | None = None  # set once a runner took it


@dataclass
class JobTable:
    jobs: dict[int, TrackedJob] = field(default_factory=dict)
    completed: dict[int, None] = field(default_factory=dict)  # tombstones, oldest first
    webhook_grace: float = 0.0
    tombstones_max: int = TOMBSTONES_MAX

    def counted(self) -> list[TrackedJob]:
        """Jobs that need (or hold) a runner."""
        return [j for j in self.jobs.values() if j.status in COUNTED]

    def repos_with_jobs(self) -> set[str]:
        return {j.repo for j in self.jobs.values()}

    def webhook(self, job: TrackedJob) -> TrackedJob | None:
        """Apply one delivery; returns the job it completed, if any."""
        if job.id in self.completed:
            return None
        if job.status == COMPLETED:
            self._tombstone(job.id)
            return self.jobs.pop(job.id, None)
        self._upsert(job)
        return None

    def reconcile(
        self, polled: Mapping[str, Sequence[TrackedJob]], started: float
    ) -> list[TrackedJob]:
        """Merge complete reads of the repositories in `polled` (begun at `started`); returns
        the jobs that left the table because the read no longer lists them."""
        seen: set[int] = set()
        for jobs in polled.values():
            for job in jobs:
                seen.add(job.id)
                if job.id in self.completed:
                    continue
                if job.status == COMPLETED:
                    self._tombstone(job.id)
                    self.jobs.pop(job.id, None)
                else:
                    self._upsert(job)
        gone = [
            j for j in self.jobs.values()
            if j.repo in polled and j.id not in seen and self._stale(j, started)
        ]  # fmt: skip
        for job in gone:
            del self.jobs[job.id]
        return gone

    def retain_repos(self, repos: Iterable[str]) -> list[TrackedJob]:
        """Forget jobs of repositories no longer watched (removed, archived, filtered out)."""
        keep = set(repos)
        gone = [j for j in self.jobs.values() if j.repo not in keep]
        for job in gone:
            del self.jobs[job.id]
        return gone

    def _stale(self, job: TrackedJob, started: float) -> bool:
        grace = self.webhook_grace if job.from_webhook else 0.0
        return job.seen_at + grace < started

    def _upsert(self, job: TrackedJob) -> None:
        old = self.jobs.get(job.id)
        if old is None:
            self.jobs[job.id] = job
            return
        if rank(job.status) < rank(old.status):
            return  # older news
        self.jobs[job.id] = replace(
            job,
            seen_at=max(job.seen_at, old.seen_at),
            created_at=job.created_at or old.created_at,
            started_at=job.started_at or old.started_at,
        )

    def _tombstone(self, job_id: int) -> None:
        self.completed.pop(job_id, None)
        self.completed[job_id] = None
        while len(self.completed) > self.tombstones_max:
            del self.completed[next(iter(self.completed))]
