"""The listener's work: find the team's queued jobs, match them to scale sets, write demand.

Polling is the source of truth and webhooks make it faster; the job table merges both (a poll
reconciles what it read, it does not replace the table: planning/job_table.py). Each poll
reads the repositories planning/polling.py chooses: every repository with jobs, a recent
webhook or a new push, and a budgeted trickle of idle ones, all through paged conditional
requests, at most CONCURRENCY at a time. No lock is held across GitHub I/O: a poll reads
GitHub, then merges and publishes; publishing (Kubernetes I/O only) is serialised and
coalesced, so a burst of webhooks costs one demand write per scale set, not one per delivery.

Demand is written to `status.demand` of each RunnerScaleSet (see docs/runner-scale-set.md)
with a sequence number and the resourceVersion read, so an older listener can never
overwrite a newer report.

Layer: services. I/O only through the gateways.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from runnerfleet import conventions as c
from runnerfleet.gateways.github import (
    GitHubError,
    GitHubGateway,
    GitHubNotFoundError,
    RateLimitedError,
)
from runnerfleet.gateways.informer import Informer
from runnerfleet.gateways.kubernetes import ConflictError, KubeError, KubeGateway
from runnerfleet.metrics import ListenerMetrics
from runnerfleet.models.base import parse_duration
from runnerfleet.models.github import GitHubTarget
from runnerfleet.models.team_listener import TeamListenerSpec
from runnerfleet.planning import forecast
from runnerfleet.planning.forecast import ArrivalModel
from runnerfleet.planning.job_table import JobTable, TrackedJob
from runnerfleet.planning.matching import Job, ScaleSetLabels, match
from runnerfleet.planning.polling import (
    PollPlan,
    PollPolicy,
    RepoState,
    SpendWindow,
    plan_poll,
    repositories_due,
)
from runnerfleet.planning.queue_depth import Depth, from_jobs, from_statistics, total
from runnerfleet.planning.repositories import installation_repository_watched, listed_repositories

log = logging.getLogger("runnerfleet.listener")
CONFLICT_RETRIES = 5
CONCURRENCY = 8  # GitHub requests in flight per poll (GitHub allows 100 concurrent)
RUN_CONCURRENCY = 4  # runs of one repository read at once (within CONCURRENCY's repositories)
WEBHOOK_GRACE_SECONDS = 30.0  # a job a webhook reported survives polls that miss it this long


def busy_runners_of(key: tuple[str, str], running: list[str]) -> list[str]:
    """The runners of scale set `key` (namespace, name) among those running jobs: the
    operator learns a runner is busy from this at once, not at its next GitHub sweep."""
    namespace, name = key
    return sorted(r for r in running if c.is_runner_of(r, name, namespace))[:1000]


def _protocol(scale_set: dict[str, Any]) -> str:
    github = (scale_set.get("spec") or {}).get("github") or {}
    return str(github.get("protocol") or c.PROTOCOL_REST)


def _rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(value: Any) -> float | None:
    """A webhook timestamp ("2026-01-01T00:00:00Z") as epoch seconds, or None."""
    try:
        return dt.datetime.fromisoformat(str(value)).timestamp() if value else None
    except ValueError:
        return None


def _split(demand: int, depth: Depth | None) -> Depth:
    """The queue depth written with `demand`: the one given if it adds up to it, else (a
    caller that knows none) all of it queued."""
    return depth if depth is not None and depth.assigned == demand else Depth(queued=demand)


def _counted(requests: dict[tuple[str, int], int]) -> int:
    """Requests GitHub counted against the rate limit (everything but 304)."""
    return sum(n for (_, status), n in requests.items() if status != 304)


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
    policy: PollPolicy = field(default_factory=PollPolicy)
    table: JobTable = field(default_factory=lambda: JobTable(webhook_grace=WEBHOOK_GRACE_SECONDS))
    repos: dict[str, float | None] = field(default_factory=dict)  # "owner/name" -> pushed_at
    repos_read_at: float | None = None
    repo_states: dict[str, RepoState] = field(default_factory=dict)
    idle_spend: SpendWindow = field(default_factory=SpendWindow)
    sequence: int = 0
    started_seen: set[int] = field(default_factory=set)  # pruned to the table's jobs
    last_poll_ok: float | None = None
    last_webhook: float | None = None  # the last delivery for this team
    last_plan: PollPlan | None = None
    unmatched: int = 0
    assignment: dict[int, tuple[str, str]] = field(default_factory=dict)  # latest match only
    # Queued and running jobs per scale set: the REST ones as of the last match, the
    # scale-set protocol ones as of each session's last statistics (planning/queue_depth.py).
    rest_depth: dict[tuple[str, str], Depth] = field(default_factory=dict)
    session_depth: dict[tuple[str, str], Depth] = field(default_factory=dict)
    # The namespace's scale sets, watched (one watch instead of a list and a read per
    # publish); None reads them from the apiserver (service tests).
    cache: Informer | None = None
    last_report: tuple[dict[str, Any], float] | None = None  # status.poll as last written
    # Predictive warm pools (issue 14): each scale set's learnt arrivals (planning/forecast.py),
    # loaded from its status.demand.arrivals on first use, written with its demand reports;
    # and the REST jobs already counted as arrivals (pruned to the job table).
    arrival_models: dict[tuple[str, str], ArrivalModel] = field(default_factory=dict)
    arrival_seen: set[int] = field(default_factory=set)
    _publishing: asyncio.Lock = field(default_factory=asyncio.Lock)
    _dirty: bool = False

    @property
    def poll_interval(self) -> float:
        return parse_duration(self.spec.poll_interval)

    # ------------------------------------------------------------------ polling
    async def poll(self) -> None:
        """One poll: the planned repositories -> active runs -> their jobs; merge; publish."""
        if self.clock() < self.github.rate_limited_until:
            self.metrics.polls.labels("rate_limited").inc()
            await self.report()
            return
        if await self._only_protocol_scale_sets():
            # GitHub reports every scale set's demand through its session: no REST reads
            # (and no REST scale set whose last match could still count in the team's depth).
            self.rest_depth = {}
            self.metrics.polls.labels("not_needed").inc()
            self.last_poll_ok = self.clock()
            await self.report()
            return
        started = self.clock()
        results: dict[str, list[TrackedJob]] = {}
        failure: GitHubError | None = None
        try:
            async with self.github.session():
                await self._refresh_repositories(started)
                failure = await self._read(self._plan(started), started, results)
        except GitHubError as err:
            failure = err
        finally:
            self._export_rate_limit()
        self._merge(results, started)  # whatever was read completely counts, even on failure
        await self.publish()
        self._observe()
        self._record(failure, started)
        await self.report()

    def _record(self, failure: GitHubError | None, started: float) -> None:
        if failure is None:
            self.last_poll_ok = started
            self.metrics.polls.labels("ok").inc()
        elif isinstance(failure, RateLimitedError):
            log.warning(
                "GitHub rate limit exhausted; polling resumes at %s", _rfc3339(failure.reset_at)
            )
            self.metrics.polls.labels("rate_limited").inc()
        else:
            log.warning("poll failed: %s", failure)
            self.metrics.polls.labels("error").inc()

    async def _refresh_repositories(self, now: float) -> None:
        """The watched repositories: the list, or the installation's (non-archived, matching
        `nameFilter`) re-read when due; jobs and state of repositories no longer watched go."""
        sel = self.spec.repositories
        listed = listed_repositories(self.target, sel)
        repos: dict[str, float | None]
        if listed is not None:
            repos = dict.fromkeys(listed)
        elif repositories_due(self.repos_read_at, now, self.poll_interval, self.policy):
            repos = {
                f"{r.owner}/{r.name}": r.pushed_at
                for r in await self.github.installation_repositories()
                if installation_repository_watched(sel, r.name, r.archived)
            }
            self.repos_read_at = now
        else:
            return
        self.repos = repos
        for gone in [r for r in self.repo_states if r not in repos]:
            del self.repo_states[gone]
        self._finished(self.table.retain_repos(repos))

    def _plan(self, now: float) -> PollPlan:
        self.last_plan = plan_poll(
            self.repos, self.repo_states, now=now, poll_interval=self.poll_interval,
            policy=self.policy, remaining=self.github.rate_limit_remaining,
            idle_counted=self.idle_spend.total(now), webhooks_live=self._webhooks_live(now),
        )  # fmt: skip
        return self.last_plan

    def _webhooks_live(self, now: float) -> bool:
        return (
            self.last_webhook is not None
            and now - self.last_webhook < self.policy.webhook_hot_seconds
        )

    async def _read(
        self, plan: PollPlan, started: float, results: dict[str, list[TrackedJob]]
    ) -> GitHubError | None:
        """Read the hot repositories, then the cold ones (whose counted cost is budgeted)."""
        failure = await self._read_repos(plan.hot, started, results)
        if failure is not None or not plan.cold:
            return failure
        before = _counted(self.github.requests)
        failure = await self._read_repos(plan.cold, started, results)
        self.idle_spend.add(started, _counted(self.github.requests) - before)
        return failure

    async def _read_repos(
        self, names: Iterable[str], started: float, results: dict[str, list[TrackedJob]]
    ) -> GitHubError | None:
        """Read each repository completely, CONCURRENCY at a time; the first error stops the
        rest (a 404 only empties its repository: it was deleted since the list was read)."""
        gate = asyncio.Semaphore(CONCURRENCY)
        failures: list[GitHubError] = []

        async def one(full: str) -> None:
            async with gate:
                if failures:
                    return
                try:
                    results[full] = await self._read_repo(full, started)
                except GitHubNotFoundError:
                    results[full] = []
                except GitHubError as err:
                    failures.append(err)

        await asyncio.gather(*(one(full) for full in names))
        return failures[0] if failures else None

    async def _read_repo(self, full: str, started: float) -> list[TrackedJob]:
        """Every job of the repository's active runs, RUN_CONCURRENCY runs at a time (one
        after another, a busy repository of a hundred runs took 200 s per poll at GitHub's
        2 s latency, and its new jobs waited that long)."""
        owner, repo = full.split("/", 1)
        gate = asyncio.Semaphore(RUN_CONCURRENCY)
        failures: list[GitHubError] = []

        async def run_jobs(run_id: int) -> list[TrackedJob]:
            async with gate:
                if failures:  # the read is incomplete already: spend nothing more on it
                    return []
                try:
                    found = await self.github.run_jobs(owner, repo, run_id)
                except GitHubError as err:
                    failures.append(err)
                    return []
            return [
                TrackedJob(
                    id=j.id, repo=full, run_id=j.run_id, labels=j.labels, status=j.status,
                    seen_at=started, created_at=j.created_at, started_at=j.started_at,
                    runner_name=j.runner_name,
                )
                for j in found
            ]  # fmt: skip

        reads = [run_jobs(run_id) for run_id in await self.github.active_run_ids(owner, repo)]
        jobs = [job for some in await asyncio.gather(*reads) for job in some]
        if failures:
            raise failures[0]
        return jobs

    def _merge(self, results: dict[str, list[TrackedJob]], started: float) -> None:
        self._finished(self.table.reconcile(results, started))
        with_jobs = self.table.repos_with_jobs()
        for full in results:
            state = self.repo_states.setdefault(full, RepoState())
            state.last_polled = started
            state.active = full in with_jobs
            state.runs = len({j.run_id for j in results[full]})
            state.pushed_at = self.repos.get(full)

    def _export_rate_limit(self) -> None:
        if self.github.rate_limit_remaining is not None:
            self.metrics.rate_limit_remaining.labels(self.spec.team).set(
                self.github.rate_limit_remaining
            )

    def _finished(self, jobs: Iterable[TrackedJob]) -> None:
        """Jobs that left the table: count them as completed for the scale set they had."""
        for job in jobs:
            self.started_seen.discard(job.id)
            owner = self.assignment.pop(job.id, None)
            if owner is not None:
                self.metrics.jobs_completed.labels(*owner).inc()

    def _observe(self) -> None:
        """Jobs seen starting (with their queue wait), once each."""
        live = self.table.jobs
        self.started_seen.intersection_update(live)
        for job in live.values():
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
        full = str((payload.get("repository") or {}).get("full_name", ""))
        if "/" not in full or (self.repos and full not in self.repos):
            return False
        wj = payload.get("workflow_job") or {}
        if "id" not in wj:
            return False
        now = self.clock()
        job = TrackedJob(
            id=int(wj["id"]), repo=full, run_id=int(wj.get("run_id") or 0),
            labels=tuple(wj.get("labels") or ()),
            status=str(wj.get("status") or payload.get("action") or "queued"),
            seen_at=now, from_webhook=True,
            created_at=_epoch(wj.get("created_at")), started_at=_epoch(wj.get("started_at")),
            runner_name=str(wj["runner_name"]) if wj.get("runner_name") else None,
        )  # fmt: skip
        self.repo_states.setdefault(full, RepoState()).last_webhook = now
        self.last_webhook = now
        finished = self.table.webhook(job)
        if finished is not None:
            self._finished([finished])
        return True

    # ------------------------------------------------------------------ demand
    async def publish(self) -> None:
        """Match jobs to this team's scale sets and write each changed demand.

        Serialised, and coalesced: a caller queued behind a publish that started after its
        change returns at once, since that publish already wrote it.
        """
        self._dirty = True
        async with self._publishing:
            if not self._dirty:
                return
            self._dirty = False
            await self._publish()

    async def _publish(self) -> None:
        scale_sets = [
            s for s in await self._scale_sets()
            if self._selected(s) and _protocol(s) == c.PROTOCOL_REST
        ]  # fmt: skip
        by_key = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in scale_sets}
        labels = [
            ScaleSetLabels(ns, name, tuple(s["spec"].get("labels", [])))
            for (ns, name), s in by_key.items()
        ]
        counted = self.table.counted()
        result = match([Job(j.id, j.labels, j.status) for j in counted], labels)
        self._count_arrivals(result.assignment, by_key)
        self.assignment = dict(result.assignment)
        self.unmatched = len(result.unmatched)
        self.metrics.unmatched_jobs.labels(self.spec.team).set(self.unmatched)
        self.rest_depth = from_jobs(((j.id, j.status) for j in counted), result.assignment, by_key)
        running = [j.runner_name for j in self.table.jobs.values()
                   if j.status == "in_progress" and j.runner_name]  # fmt: skip
        for key, demand in result.demand.items():
            self._export_depth(key, self.rest_depth[key])
            await self._write(
                by_key[key], demand, busy_runners_of(key, running), self.rest_depth[key]
            )

    def _count_arrivals(
        self, assignment: dict[int, tuple[str, str]], by_key: dict[tuple[str, str], Any]
    ) -> None:
        """Jobs matched to a scale set for the first time are its arrivals."""
        self.arrival_seen.intersection_update(self.table.jobs)
        new: dict[tuple[str, str], int] = {}
        for job_id, key in assignment.items():
            if job_id not in self.arrival_seen:
                self.arrival_seen.add(job_id)
                new[key] = new.get(key, 0) + 1
        for key, count in new.items():
            self.note_arrivals(key, count, by_key.get(key))

    def note_arrivals(
        self, key: tuple[str, str], count: int, scale_set: dict[str, Any] | None = None
    ) -> None:
        """`count` jobs arrived for the scale set now (REST: first matched; scale-set
        protocol: JobAssigned). The model starts from what its status last stored."""
        model = self.arrival_models.get(key)
        if model is None:
            body = scale_set or (self.cache.get(*key) if self.cache is not None else None)
            stored = ((body or {}).get("status") or {}).get("demand") or {}
            model = forecast.decode(stored.get("arrivals")) or forecast.ArrivalModel()
        self.arrival_models[key] = forecast.observe(model, count, self.clock())

    async def _only_protocol_scale_sets(self) -> bool:
        protocols = {_protocol(s) for s in await self._scale_sets() if self._selected(s)}
        return protocols == {c.PROTOCOL_SCALE_SET}

    async def protocol_scale_sets(self) -> list[dict[str, Any]]:
        """The team's scale sets on the scale-set protocol (GitHub reports their demand)."""
        return [
            s for s in await self._scale_sets()
            if self._selected(s) and _protocol(s) == c.PROTOCOL_SCALE_SET
        ]  # fmt: skip

    async def _scale_sets(self) -> list[dict[str, Any]]:
        if self.cache is not None and self.cache.synced.is_set():
            return self.cache.items(self.namespace, {})
        return await self.kube.list_scale_sets(self.namespace)

    async def _scale_set(self, key: tuple[str, str]) -> dict[str, Any]:
        cached = self.cache.get(*key) if self.cache is not None else None
        return cached if cached is not None else await self.kube.get_scale_set(*key)

    async def write_demand(self, key: tuple[str, str], demand: int, busy: list[str]) -> None:
        """Write one scale set's demand as GitHub's session reported it (scale-set protocol),
        with the queue depth of its last statistics (`export_statistics`, called first).
        What the scale set already says is not written again (no read: the watch has it)."""
        await self._write(await self._scale_set(key), demand, busy, self.session_depth.get(key))

    def export_statistics(self, key: tuple[str, str], stats: Any) -> None:
        for stat in ("available", "acquired", "assigned", "running", "registered", "busy", "idle"):
            self.metrics.scale_set.labels(*key, stat).set(getattr(stats, stat))
        self.session_depth[key] = from_statistics(stats.assigned, stats.running)
        self._export_depth(key, self.session_depth[key])

    def forget_session(self, key: tuple[str, str]) -> None:
        """A scale set's session ended (the set is gone, or moved): its depth no longer counts
        in the team's (a new session reports it again at once)."""
        self.session_depth.pop(key, None)

    def _export_depth(self, key: tuple[str, str], depth: Depth) -> None:
        self.metrics.queue_depth.labels(*key).set(depth.queued)
        self.metrics.running_jobs.labels(*key).set(depth.running)
        self.metrics.queued_jobs.labels(*key).set(depth.assigned)  # deprecated: both

    def team_depth(self) -> Depth:
        """The team's queued and running jobs: the sum over its scale sets, both protocols."""
        return total([*self.rest_depth.values(), *self.session_depth.values()])

    def _selected(self, scale_set: dict[str, Any]) -> bool:
        wanted = self.spec.scale_set_selector.match_labels
        have = scale_set["metadata"].get("labels") or {}
        return all(have.get(k) == v for k, v in wanted.items())

    async def _write(
        self, scale_set: dict[str, Any], demand: int, busy: list[str] | None = None,
        depth: Depth | None = None,
    ) -> None:  # fmt: skip
        """Write one scale set's demand; on a 409 re-read it and try again (bounded).

        The operator patches the same object's status often, so conflicts are normal; leaving
        the write to the next publish could mean waiting a whole poll interval.
        """
        meta = scale_set["metadata"]
        key = (meta["namespace"], meta["name"])
        for _ in range(CONFLICT_RETRIES):
            report = self._report(key, scale_set, demand, busy or [], _split(demand, depth))
            if report is None:
                return
            try:
                stored = await self.kube.write_demand(
                    key[0], key[1], report, meta["resourceVersion"]
                )
            except ConflictError:
                scale_set = await self.kube.get_scale_set(*key)
                meta = scale_set["metadata"]
                continue
            if self.cache is not None and isinstance(stored, dict):
                self.cache.upsert(stored)  # the next publish compares with what we wrote
            self.metrics.demand.labels(*key).set(demand)
            return
        log.warning("%s/%s: demand not written after %d conflicts", *key, CONFLICT_RETRIES)

    def _report(
        self, key: tuple[str, str], scale_set: dict[str, Any], demand: int, busy: list[str],
        depth: Depth,
    ) -> dict[str, Any] | None:  # fmt: skip
        """The demand report to write, or None if there is nothing (new) to say: the scale set
        already says this demand, queue depth and busy runners (no heartbeat: unchanged demand
        is never rewritten, see docs/team-listener.md). A job starting changes the depth, not
        the demand, and is written with its runner's busyRunners entry, in the same write."""
        now = self.clock()
        current = (scale_set.get("status") or {}).get("demand") or {}
        same_busy = sorted(current.get("busyRunners") or []) == busy
        said = (current.get("assignedJobs"), current.get("queuedJobs"), current.get("runningJobs"))
        if said == (demand, depth.queued, depth.running) and same_busy:
            return None
        if int(current.get("sequence", 0)) >= max(self.sequence, int(now * 1000)) + 1:
            log.warning("%s/%s has a newer demand report; not overwriting it", *key)
            return None
        self.sequence = max(self.sequence + 1, int(now * 1000), int(current.get("sequence", 0)) + 1)
        model = self.arrival_models.get(key)
        predictive = (scale_set.get("spec") or {}).get("warmPolicy") == "predictive"
        # Only with a demand report that is written anyway (no write of its own): arrivals
        # change the demand, so the learnt rates follow within one report.
        arrivals = forecast.encode(model) if predictive and model is not None else None
        return {
            **({"arrivals": arrivals} if arrivals is not None else {}),
            "assignedJobs": demand,
            "queuedJobs": depth.queued,
            "runningJobs": depth.running,
            "sequence": self.sequence,
            "observedAt": _rfc3339(now),
            "listener": f"{self.namespace}/{self.name}",
            "busyRunners": busy,
        }

    # ------------------------------------------------------------------ status
    async def recorded_sessions(self) -> list[dict[str, Any]]:
        """The sessions the last acting replica recorded (status.sessions)."""
        body = await self.kube.get_team_listener(self.namespace, self.name)
        return list((body.get("status") or {}).get("sessions") or [])

    async def report_sessions(self, sessions: list[dict[str, Any]]) -> None:
        await self.kube.patch_team_listener_status(
            self.namespace, self.name, {"sessions": sessions}
        )

    async def report(self) -> None:
        """Write status.poll when what it says changed, and at least every
        LISTENER_REPORT_SECONDS with a fresh lastSuccessfulPoll (the operator's Polling
        condition reads it), not after every poll."""
        depth = self.team_depth()
        poll: dict[str, Any] = {
            "queuedJobs": depth.queued,
            "runningJobs": depth.running,
            "unmatchedJobs": self.unmatched,
            "rateLimitRemaining": self.github.rate_limit_remaining,
            "rateLimitedUntil": (
                _rfc3339(self.github.rate_limited_until)
                if self.github.rate_limited_until > self.clock() else None
            ),
        }  # fmt: skip
        now = self.clock()
        content = {**poll, "polled": self.last_poll_ok is not None}
        if self.last_report is not None:
            said, at = self.last_report
            if said == content and now - at < c.LISTENER_REPORT_SECONDS:
                return  # nothing new, and the last report is recent enough for the operator
        if self.last_poll_ok is not None:
            poll["lastSuccessfulPoll"] = _rfc3339(self.last_poll_ok)
        try:
            await self.kube.patch_team_listener_status(self.namespace, self.name, {"poll": poll})
        except KubeError as err:  # a failed status write must not stop polling
            log.warning("could not report poll status: %s", err)
            return
        self.last_report = (content, now)
