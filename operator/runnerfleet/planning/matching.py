"""Match queued GitHub jobs to RunnerScaleSets and count each set's demand.

GitHub runs a job on a runner that has *all* of the job's `runs-on` labels (compared
case-insensitively). So a job can go to every scale set whose labels include the job's. To
count each job exactly once, it is assigned to the **most specific** candidate: the one with
the fewest labels (the closest fit: a `[linux]` job prefers `[linux]` over `[linux, gpu]`).
Ties are broken by (namespace, name), so every listener replica decides the same way.

Layer: planning. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Job:
    id: int
    labels: tuple[str, ...]
    status: str  # queued | in_progress | waiting ...


@dataclass(frozen=True)
class ScaleSetLabels:
    namespace: str
    name: str
    labels: tuple[str, ...]

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True)
class Matched:
    demand: dict[tuple[str, str], int]
    assignment: dict[int, tuple[str, str]]
    unmatched: list[int] = field(default_factory=list)


COUNTED = frozenset({"queued", "in_progress", "waiting", "pending", "requested"})


def match(jobs: Iterable[Job], scale_sets: Iterable[ScaleSetLabels]) -> Matched:
    """Demand per scale set (every set present, zero if no job), and jobs nobody can run."""
    sets = sorted(scale_sets, key=lambda s: (len(set(s.labels)), s.namespace, s.name))
    lowered = [(s, {label.lower() for label in s.labels}) for s in sets]
    demand = {s.key: 0 for s in sets}
    assignment: dict[int, tuple[str, str]] = {}
    unmatched: list[int] = []
    for job in sorted(jobs, key=lambda j: j.id):
        if job.status not in COUNTED:
            continue
        wanted = {label.lower() for label in job.labels}
        chosen = next((s for s, have in lowered if wanted <= have), None)
        if chosen is None:
            unmatched.append(job.id)
            continue
        demand[chosen.key] += 1
        assignment[job.id] = chosen.key
    return Matched(demand, assignment, unmatched)
