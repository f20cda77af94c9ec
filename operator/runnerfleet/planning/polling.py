"""Which repositories the listener reads in one poll: spend GitHub's budget where jobs are.

A team on an organisation with thousands of repositories cannot read every repository every
`pollInterval`: two conditional run lists per repository, every few seconds, is tens of
thousands of requests an hour, and after an installation token rotates (hourly) every one of
them is counted again. So each poll reads:

- every **hot** repository: one never read yet (so the first poll is complete), one whose last
  read found queued or running jobs, one with a `workflow_job` webhook in the last
  `webhook_hot_seconds`, and one whose `pushed_at` moved since it was last read (a push is
  what starts most workflows; the repository list that carries it is one paged read). While
  webhooks are live (a delivery in the last `webhook_hot_seconds`) they bring the news, so a
  busy repository is only reconciled every `reconcile_seconds`;
- a few **cold** repositories, the longest unread first, at most `idle_visits_per_hour` spread
  evenly over the polls, and none while GitHub's remaining budget is below `reserve` or the
  cold reads have already spent `idle_counted_per_hour` counted (non-304) requests in the
  last hour.

GitHub's secondary limit (900 points per minute per endpoint, a 304 included) caps a poll
at `reads_per_minute * min(interval, 60 s) / 60` run listings (two per repository) and as
many job listings (one per active run, as the last read found). When the hot repositories
do not fit, the longest unread go first, so every one is read in turn; the first read of a
large organisation therefore takes several polls (2,000 repositories: about five minutes).

Layer: planning. Pure: no I/O, no clock (time is an argument).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

HOUR = 3600.0


@dataclass(frozen=True)
class PollPolicy:
    """The knobs of the schedule (defaults documented in docs/team-listener.md)."""

    idle_visits_per_hour: int = 1800  # cold repositories read per hour (2 conditional GETs each)
    idle_counted_per_hour: int = 600  # counted requests the cold reads may spend per hour
    reserve: int = 1000  # no cold reads while x-ratelimit-remaining is below this
    webhook_hot_seconds: float = 600.0  # a webhook keeps its repository hot this long
    repos_refresh_seconds: float = 60.0  # the repository list is re-read at most this often
    reads_per_minute: int = 800  # per endpoint: GitHub allows 900 points/min (margin for others)
    reconcile_seconds: float = 300.0  # a busy repository is re-read this often while webhooks live


@dataclass
class RepoState:
    """What the listener remembers of one repository between polls."""

    last_polled: float | None = None  # when the last complete read of it began
    active: bool = False  # that read found queued or running jobs
    last_webhook: float | None = None  # when a workflow_job delivery last named it
    pushed_at: float | None = None  # its `pushed_at` as of that read
    runs: int = 0  # active runs that read found (each costs a job listing next time)


@dataclass(frozen=True)
class PollPlan:
    hot: tuple[str, ...]
    cold: tuple[str, ...]

    @property
    def repos(self) -> tuple[str, ...]:
        return self.hot + self.cold


def is_hot(
    state: RepoState | None,
    pushed_at: float | None,
    now: float,
    policy: PollPolicy,
    webhooks_live: bool = False,
) -> bool:
    """A repository to read this poll (see the module docstring). While webhooks are live
    they bring the news, and a busy repository is only reconciled every `reconcile_seconds`."""
    if state is None or state.last_polled is None:
        return True
    if pushed_at is not None and (state.pushed_at is None or pushed_at > state.pushed_at):
        return True
    recent_hook = (
        state.last_webhook is not None and now - state.last_webhook < policy.webhook_hot_seconds
    )
    if not (state.active or recent_hook):
        return False
    return not webhooks_live or now - state.last_polled >= policy.reconcile_seconds


def cold_quota(
    poll_interval: float, policy: PollPolicy, remaining: int | None, idle_counted: int
) -> int:
    """How many cold repositories this poll may read."""
    if remaining is not None and remaining < policy.reserve:
        return 0
    if idle_counted >= policy.idle_counted_per_hour:
        return 0
    return max(1, math.ceil(policy.idle_visits_per_hour * poll_interval / HOUR))


def plan_poll(
    repos: Mapping[str, float | None],
    states: Mapping[str, RepoState],
    *,
    now: float,
    poll_interval: float,
    policy: PollPolicy,
    remaining: int | None = None,
    idle_counted: int = 0,
    webhooks_live: bool = False,
) -> PollPlan:
    """`repos` maps each repository ("owner/name") to its `pushed_at`; returns what to read:
    hot ones, then the cold quota, each longest unread first (ties by name: deterministic),
    within the poll's share of the secondary limit."""

    def staleness(r: str) -> tuple[float, str]:
        state = states.get(r)
        return ((state.last_polled or -1.0) if state else -1.0, r)

    hot = sorted(
        (r for r, p in repos.items() if is_hot(states.get(r), p, now, policy, webhooks_live)),
        key=staleness,
    )
    hot_set = set(hot)
    cold = sorted((r for r in repos if r not in hot_set), key=staleness)
    # A poll reads in a burst, and the limit is a sliding minute: never more than a minute's
    # share in one poll, whatever the interval.
    cap = max(2.0, policy.reads_per_minute * min(poll_interval, 60.0) / 60.0)
    quota = min(cold_quota(poll_interval, policy, remaining, idle_counted), max(1, int(cap / 20)))
    if hot and staleness(hot[0])[0] < 0:
        quota = 0  # a first read is still going on: finish it before re-reading idle ones
    # The cold trickle (at most a tenth of the cap) comes first so busy repositories never
    # starve it; the hot ones fill the rest, always at least one.
    budget = [cap, cap]  # run listings, job listings
    cold_taken = _fit(cold[:quota], states, budget, at_least_one=False)
    hot_taken = _fit(hot, states, budget, at_least_one=not cold_taken)
    return PollPlan(hot_taken, cold_taken)


def _fit(
    names: list[str], states: Mapping[str, RepoState], budget: list[float], at_least_one: bool
) -> tuple[str, ...]:
    """The longest prefix of `names` whose listings fit in `budget` (which it spends)."""
    taken: list[str] = []
    for r in names:
        state = states.get(r)
        jobs = state.runs if state else 0
        if (taken or not at_least_one) and (budget[0] < 2 or budget[1] < jobs):
            break
        taken.append(r)
        budget[0], budget[1] = budget[0] - 2, budget[1] - jobs
    return tuple(taken)


def repositories_due(read_at: float | None, now: float, poll_interval: float,
                     policy: PollPolicy) -> bool:  # fmt: skip
    """Whether the installation's repository list should be read again."""
    return read_at is None or now - read_at >= max(poll_interval, policy.repos_refresh_seconds)


@dataclass
class SpendWindow:
    """Counted requests spent over the last hour, one entry per poll (bounded by `max_entries`)."""

    max_entries: int = 4096
    entries: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, now: float, count: int) -> None:
        if count > 0:
            self.entries.append((now, count))
        while len(self.entries) > self.max_entries:
            self.entries.popleft()

    def total(self, now: float) -> int:
        while self.entries and now - self.entries[0][0] >= HOUR:
            self.entries.popleft()
        return sum(n for _, n in self.entries)
