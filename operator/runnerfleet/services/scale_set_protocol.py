"""The operator's side of GitHub's runner scale-set protocol, for one RunnerScaleSet.

A RunnerScaleSet with `spec.github.protocol: scaleSet` is registered in GitHub as a runner
scale set (its name `<namespace>-<name>`, its labels, its runner group), kept in step with the
spec, and removed by the finalizer. Its runners get their JIT configs from that scale set and
are removed through the agents API: all Actions-service calls, none counted against the REST
rate limit (only the hourly registration token that mints the admin token is).

`ScaleSetRegistrar` gives the scale-set round the same registration surface as the REST
gateway (create a JIT runner, read, find by name, delete), so the planner, the executor and
every guarantee (intent record first, busy runners never removed, evidence before failure)
are shared by both paths. Its "sweep" reads the agents the operator registered (there is no
list of a scale set's runners): only runners not yet seen online, and the others every
`RECHECK_SECONDS`; a runner's busy/idle changes come from the listener's job messages and
its end from the pod.

A runner seen taking a job (its agent read busy, or the listener's report naming it busy from
GitHub's JobStarted) is removed by GitHub when that job ends: it is ephemeral. When its pod
then ends Succeeded, `finished_after_job` says so and the agent is not DELETEd (the request
would be answered 404, one wasted call per job). A runner never seen busy is deleted as
before, so one that exited without a job leaves no registration behind.

Layer: services. Actions-service I/O through the gateway only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field

from runnerfleet.gateways.actions_service import (
    ActionsServiceClient,
    Agent,
    ScaleSetInfo,
)
from runnerfleet.gateways.github import GitHubNotFoundError, Registration, RunnerPage, RunnerSweep
from runnerfleet.gateways.github_budget import Budget
from runnerfleet.models.github import GitHubTarget

RECHECK_SECONDS = 600.0  # an online runner's agent is re-read this often (orphan/offline check)
READ_CONCURRENCY = 8
# A runner not yet seen online is read 5 s after registration, then 10, 20, 40 and every 60 s:
# reading every pending runner each round (5 s) was 120 reads a second at 600 starting scale
# sets, and the operator spent 82 % of its CPU queueing them.
UNSEEN_FIRST_SECONDS = 5.0
UNSEEN_MAX_SECONDS = 60.0
UNLIMITED_WRITES = 10_000  # the Actions service has no REST-style per-minute write limit


def _registration(agent: Agent, labels: tuple[str, ...]) -> Registration:
    return Registration(agent.id, agent.name, bool(agent.online), bool(agent.busy), labels)


@dataclass
class ScaleSetRegistrar:
    """One GitHub scale set: ensures it exists, registers and removes its runners."""

    client: ActionsServiceClient
    target: GitHubTarget
    budget: Budget  # the installation's REST budget (the registration token draws on it)
    github_name: str
    clock: Callable[[], float] = time.time
    info: ScaleSetInfo | None = None
    _tracked: dict[int, str] = field(default_factory=dict)  # runner id -> name
    _online_at: dict[int, float] = field(default_factory=dict)  # runner id -> last seen online
    _last: dict[int, Registration] = field(default_factory=dict)  # runner id -> last read
    _took_job: set[int] = field(default_factory=set)  # runner ids seen running a job
    _ran: set[int] = field(default_factory=set)  # seen online or busy, or reported busy
    _lost: set[int] = field(default_factory=set)  # read offline and idle after they ran
    _unseen: dict[int, tuple[int, float]] = field(default_factory=dict)  # id -> (reads, next)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    # ------------------------------------------------------------------ the scale set
    async def ensure(self, runner_group: str, labels: Sequence[str]) -> ScaleSetInfo:
        """The GitHub scale set for this spec: adopted by name, created, or updated when its
        labels or group changed. Costs nothing once known and unchanged."""
        wanted = tuple(sorted({label.lower() for label in labels}))
        async with self._lock:
            info = self.info
            group = await self.client.runner_group_id(runner_group)
            if info is None:
                info = await self.client.get_scale_set(group, self.github_name)
            if info is None:
                info = await self.client.create_scale_set(self.github_name, group, labels)
            have = tuple(sorted({label.lower() for label in info.labels}))
            if have != wanted or info.runner_group_id != group:
                info = await self.client.update_scale_set(info.id, self.github_name, group, labels)
            self.info = info
            return info

    async def find(self, runner_group: str) -> bool:
        """Look the GitHub scale set up by name without creating it (the finalizer).

        A runner group that does not exist holds no scale set: False, so the finalizer
        completes (before, its "does not exist" was retried forever and the RunnerScaleSet
        could never be deleted; found by issue 12's generated specs). A set registered under
        an older runnerGroup is found only while this registrar remembers it."""
        if self.info is None:
            try:
                group = await self.client.runner_group_id(runner_group)
            except GitHubNotFoundError:
                return False
            self.info = await self.client.get_scale_set(group, self.github_name)
        return self.info is not None

    async def delete(self) -> None:
        """Remove the GitHub scale set (its runners were removed first); gone counts as done."""
        info = self.info
        if info is None:
            return
        await self.client.delete_scale_set(info.id)
        self.info = None

    @property
    def scale_set_id(self) -> int:
        if self.info is None:
            raise RuntimeError("scale set not ensured yet")
        return self.info.id

    # ------------------------------------------------------------------ registration surface
    async def runner_group_id(self, name: str) -> int:
        return await self.client.runner_group_id(name)

    async def create_jit_runner(
        self, name: str, labels: list[str], group_id: int
    ) -> tuple[Registration, str]:
        """A JIT config from the scale set (the scale set's labels and group apply)."""
        jit = await self.client.generate_jit(self.scale_set_id, name)
        self._tracked[jit.id] = jit.name
        self._unseen[jit.id] = (0, self.clock() + UNSEEN_FIRST_SECONDS)  # its pod starts first
        return Registration(jit.id, jit.name, False, False, tuple(labels)), jit.encoded_jit_config

    async def delete_runner(self, registration_id: int, name: str) -> None:
        """Remove the agent; RunnerBusyError while it runs a job (keep it)."""
        await self.client.delete_agent(registration_id)
        self.untrack(registration_id)

    async def get_runner(self, runner_id: int) -> Registration | None:
        agent = await self.client.get_agent(runner_id)
        if agent is None:
            self.untrack(runner_id)
            return None
        self._seen(agent)
        return _registration(agent, ())

    async def runners_named(self, name: str) -> list[Registration]:
        return [_registration(a, ()) for a in await self.client.agents_named(name)]

    def jit_writes_available(self) -> int:
        return UNLIMITED_WRITES

    def jit_free_at(self) -> float:
        return 0.0

    # ------------------------------------------------------------------ tracking and sweeps
    def track(self, runner_id: int, name: str) -> None:
        """A runner the operator registered (from its Secret): the sweep reads it."""
        self._tracked.setdefault(runner_id, name)

    def untrack(self, runner_id: int) -> None:
        self._tracked.pop(runner_id, None)
        self._online_at.pop(runner_id, None)
        self._last.pop(runner_id, None)
        self._took_job.discard(runner_id)
        self._unseen.pop(runner_id, None)
        self._ran.discard(runner_id)
        self._lost.discard(runner_id)

    def recheck(self, names: Collection[str]) -> None:
        """Read these runners at the next sweep, though seen online lately: the listener no
        longer lists them busy and their pods have not ended (a runner lost with its node)."""
        for runner_id, name in self._tracked.items():
            if name in names:
                self._online_at.pop(runner_id, None)
                self._unseen.pop(runner_id, None)

    def lost(self) -> set[str]:
        """Names of the tracked runners read offline and idle after they had run (been seen
        online or busy, or reported busy): their processes are gone and their one-use JIT
        configs spent. Only a read made after the evidence that they ran counts: an older read
        (re-listed at each sweep) of a runner yet to start is not one of them."""
        return {self._tracked[i] for i in self._lost if i in self._tracked}

    def note_busy(self, names: Iterable[str]) -> None:
        """Runners the listener reported running a job (GitHub's JobStarted named them)."""
        wanted = set(names)
        if wanted:
            ids = {rid for rid, name in self._tracked.items() if name in wanted}
            self._took_job.update(ids)
            self._ran.update(ids)

    def finished_after_job(self, runner_id: int) -> bool:
        """True if this runner was seen running a job: its pod has ended Succeeded, so it ran
        that one job and GitHub removed the ephemeral registration with it. It is forgotten
        here; the caller skips the DELETE. False: never seen busy, delete it as usual."""
        if runner_id not in self._took_job:
            return False
        self.untrack(runner_id)
        return True

    def _seen(self, agent: Agent) -> None:
        self._last[agent.id] = _registration(agent, ())
        if agent.online or agent.busy:
            self._ran.add(agent.id)
        elif agent.id in self._ran:
            self._lost.add(agent.id)
        if agent.online:
            self._online_at[agent.id] = self.clock()
            self._unseen.pop(agent.id, None)
        elif agent.id not in self._online_at:  # still starting: read it again later, less often
            reads = self._unseen.get(agent.id, (0, 0.0))[0] + 1
            wait = min(UNSEEN_MAX_SECONDS, UNSEEN_FIRST_SECONDS * 2**reads)
            self._unseen[agent.id] = (reads, self.clock() + wait)
        if agent.busy:
            self._took_job.add(agent.id)

    async def sweep_runners(self, previous: dict[int, RunnerPage] | None = None) -> RunnerSweep:
        """The tracked runners that need evidence: not yet seen online (on a backoff from
        registration: UNSEEN_*), or not re-read for RECHECK_SECONDS. A runner the service no
        longer knows is simply not listed."""
        now = self.clock()
        due = [
            rid for rid in self._tracked
            if now - self._online_at.get(rid, float("-inf")) >= RECHECK_SECONDS
            and now >= self._unseen.get(rid, (0, 0.0))[1]
        ]  # fmt: skip
        gate = asyncio.Semaphore(READ_CONCURRENCY)

        async def read(runner_id: int) -> Agent | None:
            async with gate:
                return await self.client.get_agent(runner_id, background=True)

        agents = await asyncio.gather(*(read(rid) for rid in due))
        for runner_id, agent in zip(due, agents, strict=True):
            if agent is None:
                self.untrack(runner_id)
            else:
                self._seen(agent)
        # Runners seen online recently (not due) are listed as last read.
        listed = tuple(self._last[rid] for rid in self._tracked if rid in self._last)
        return RunnerSweep(listed, {}, 0)
