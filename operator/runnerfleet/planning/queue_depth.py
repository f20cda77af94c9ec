"""Queue depth: a scale set's jobs split into queued (waiting for a runner) and running.

Demand (`status.demand.assignedJobs`) counts both, since a running job holds its runner; the
queue depth people watch and alert on is the queued part alone. Both protocols fold into the
same `Depth`:

- REST (polls + webhooks): the listener's matched jobs, by their GitHub status: `in_progress`
  is running, every other live status (queued, waiting, pending, requested) is queued;
- scale-set protocol: GitHub's statistics, where `totalAssignedJobs` includes the running
  ones, so queued = assigned - running (never below zero: the two counts are one snapshot,
  but a job GitHub reports running before its assignment shows would otherwise go negative).

A team's figure is the sum over its scale sets: jobs no scale set's labels cover are not in
it (they are `unmatchedJobs`, on their own).

Layer: planning. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

RUNNING = "in_progress"

Key = tuple[str, str]  # (namespace, RunnerScaleSet name)


@dataclass(frozen=True)
class Depth:
    queued: int = 0  # waiting for a runner
    running: int = 0  # in progress on a runner

    @property
    def assigned(self) -> int:
        """What demand counts: queued plus running."""
        return self.queued + self.running

    def __add__(self, other: Depth) -> Depth:
        return Depth(self.queued + other.queued, self.running + other.running)


def is_running(status: str) -> bool:
    return status == RUNNING


def from_statistics(assigned: int, running: int) -> Depth:
    """GitHub's statistics of one scale set (scale-set protocol) as a depth."""
    running = max(0, running)
    return Depth(queued=max(0, assigned - running), running=running)


def from_jobs(
    statuses: Iterable[tuple[int, str]], assignment: Mapping[int, Key], keys: Iterable[Key]
) -> dict[Key, Depth]:
    """Each scale set's depth (every key present, zero if no job) from (job id, status) pairs
    and the matcher's assignment of job ids to scale sets; unassigned jobs count nowhere."""
    queued = dict.fromkeys(keys, 0)
    running = dict(queued)
    for job_id, status in statuses:
        key = assignment.get(job_id)
        if key is None or key not in queued:
            continue
        if is_running(status):
            running[key] += 1
        else:
            queued[key] += 1
    return {key: Depth(queued[key], running[key]) for key in queued}


def total(depths: Iterable[Depth]) -> Depth:
    """The sum of some scale sets' depths (a team's)."""
    return sum(depths, Depth())
