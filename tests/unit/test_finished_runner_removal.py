"""Scale-set protocol: a finished runner that was seen running a job is not DELETEd from the
Actions service (GitHub removed the ephemeral registration with its job; the DELETE would be
answered 404), while one never seen busy is, so no registration is ever left behind."""

from __future__ import annotations

from dataclasses import dataclass, field

from runnerfleet.gateways.actions_service import Agent, JitRunner
from runnerfleet.gateways.github_budget import Budget
from runnerfleet.models.github import parse_config_url
from runnerfleet.planning.runners import RemoveRunner
from runnerfleet.services.registrations import RegistrationBook
from runnerfleet.services.scale_set import ScaleSet, _Executor
from runnerfleet.services.scale_set_protocol import ScaleSetRegistrar


@dataclass
class StubActions:
    agents: dict[int, Agent] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    async def generate_jit(self, scale_set_id: int, name: str) -> JitRunner:
        return JitRunner(100 + len(self.calls), name, "secret-config")

    async def get_agent(self, runner_id: int, background: bool = False) -> Agent | None:
        self.calls.append(f"agent {runner_id}")
        return self.agents.get(runner_id)

    async def delete_agent(self, runner_id: int) -> None:
        self.calls.append(f"delete {runner_id}")
        self.agents.pop(runner_id, None)


@dataclass
class StubKube:
    deleted: list[str] = field(default_factory=list)

    async def delete_pod(self, namespace: str, name: str) -> None:
        self.deleted.append(f"pod {name}")

    async def delete_secret(self, namespace: str, name: str) -> None:
        self.deleted.append(f"secret {name}")


def _registrar(actions: StubActions) -> ScaleSetRegistrar:
    target = parse_config_url("https://github.com/acme")
    return ScaleSetRegistrar(actions, target, Budget(), "ns-s")  # type: ignore[arg-type]


def _executor(kube: StubKube, registrar: ScaleSetRegistrar) -> _Executor:
    owner = ScaleSet({"metadata": {"name": "s", "namespace": "ns", "uid": "u"}}).identity
    book = RegistrationBook(registrar)
    return _Executor(kube, registrar, book, None, owner, None, None)  # type: ignore[arg-type]


def _finished(name: str, runner_id: int, reason: str = "JobCompleted") -> RemoveRunner:
    return RemoveRunner(name, reason, runner_id, require_idle=False)


async def test_runner_reported_busy_then_succeeded_is_not_deleted() -> None:
    actions = StubActions(agents={5: Agent(5, "s-ns-1", 7, online=True, busy=False)})
    registrar = _registrar(actions)
    registrar.track(5, "s-ns-1")
    registrar.track(6, "s-ns-2")
    registrar.note_busy(["s-ns-1", "someone-elses"])  # the listener's busyRunners
    kube = StubKube()
    await _executor(kube, registrar)._remove(_finished("s-ns-1", 5))
    assert actions.calls == [], "no DELETE for a registration GitHub removed with its job"
    assert kube.deleted == ["pod s-ns-1", "secret s-ns-1"]
    swept = await registrar.sweep_runners()
    assert "s-ns-1" not in [r.name for r in swept.runners], "forgotten, never read again"


async def test_runner_never_seen_busy_is_deleted_when_it_ends() -> None:
    """It may have exited without a job: its registration would otherwise stay behind."""
    actions = StubActions(agents={5: Agent(5, "s-ns-1", 7, online=True, busy=False)})
    registrar = _registrar(actions)
    registrar.track(5, "s-ns-1")
    registrar.note_busy(["s-ns-2"])
    kube = StubKube()
    await _executor(kube, registrar)._remove(_finished("s-ns-1", 5))
    assert actions.calls == ["delete 5"]
    assert kube.deleted == ["pod s-ns-1", "secret s-ns-1"]


async def test_agent_read_busy_counts_as_having_taken_a_job() -> None:
    actions = StubActions(agents={5: Agent(5, "s-ns-1", 7, online=True, busy=True)})
    registrar = _registrar(actions)
    registrar.track(5, "s-ns-1")
    await registrar.sweep_runners()
    actions.calls.clear()
    await _executor(StubKube(), registrar)._remove(_finished("s-ns-1", 5))
    assert actions.calls == []


async def test_failed_runner_seen_busy_is_still_deleted() -> None:
    """A pod lost mid-job did not end its job: GitHub keeps the registration (offline)."""
    actions = StubActions(agents={5: Agent(5, "s-ns-1", 7, online=False, busy=True)})
    registrar = _registrar(actions)
    registrar.track(5, "s-ns-1")
    registrar.note_busy(["s-ns-1"])
    kube = StubKube()
    await _executor(kube, registrar)._remove(_finished("s-ns-1", 5, reason="PodLost"))
    assert actions.calls == ["delete 5"]


def test_untracked_runner_is_not_marked() -> None:
    registrar = _registrar(StubActions())
    registrar.note_busy(["s-ns-9"])  # named busy, but not one this operator registered
    assert registrar.finished_after_job(9) is False
