"""The operator's GitHub scale set (ScaleSetRegistrar) with the Actions-service client
substituted: adopt or create by name, update only on change, and which agents a sweep reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from runnerfleet.gateways.actions_service import (
    Agent,
    JitRunner,
    ScaleSetInfo,
)
from runnerfleet.gateways.github import GitHubNotFoundError
from runnerfleet.gateways.github_budget import Budget
from runnerfleet.models.github import parse_config_url
from runnerfleet.services.scale_set_protocol import RECHECK_SECONDS, ScaleSetRegistrar


@dataclass
class StubActions:
    existing: ScaleSetInfo | None = None
    groups: tuple[str, ...] = ("Default",)
    agents: dict[int, Agent] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    async def runner_group_id(self, name: str) -> int:
        if name not in self.groups:
            raise GitHubNotFoundError(f"runner group {name!r} does not exist")
        return 1

    async def get_scale_set(self, group_id: int, name: str) -> ScaleSetInfo | None:
        self.calls.append(f"get {name}")
        return self.existing

    async def create_scale_set(self, name: str, group_id: int, labels: list[str]) -> ScaleSetInfo:
        self.calls.append(f"create {name}")
        self.existing = ScaleSetInfo(7, name, group_id, tuple(labels))
        return self.existing

    async def update_scale_set(
        self, scale_set_id: int, name: str, group_id: int, labels: list[str]
    ) -> ScaleSetInfo:
        self.calls.append(f"update {scale_set_id} {sorted(labels)}")
        self.existing = ScaleSetInfo(scale_set_id, name, group_id, tuple(labels))
        return self.existing

    async def generate_jit(self, scale_set_id: int, name: str) -> JitRunner:
        self.calls.append(f"jit {scale_set_id} {name}")
        return JitRunner(100 + len(self.calls), name, "secret-config")

    async def get_agent(self, runner_id: int, background: bool = False) -> Agent | None:
        self.calls.append(f"agent {runner_id}")
        return self.agents.get(runner_id)


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def registrar(actions: StubActions, clock: Clock | None = None) -> ScaleSetRegistrar:
    target = parse_config_url("https://github.com/acme")
    return ScaleSetRegistrar(
        actions,
        target,
        Budget(),
        "team-a-linux",
        clock=clock or Clock(),  # type: ignore[arg-type]
    )


async def test_created_once_then_free() -> None:
    actions = StubActions()
    reg = registrar(actions)
    info = await reg.ensure("Default", ["linux", "self-hosted"])
    await reg.ensure("Default", ["self-hosted", "linux"])  # same labels, other order
    assert info.id == 7
    assert actions.calls == ["get team-a-linux", "create team-a-linux"]


async def test_adopted_by_name_and_updated_when_labels_change() -> None:
    actions = StubActions(existing=ScaleSetInfo(3, "team-a-linux", 1, ("linux",)))
    reg = registrar(actions)
    await reg.ensure("Default", ["linux"])
    assert actions.calls == ["get team-a-linux"], "a restarted operator adopts, never duplicates"
    await reg.ensure("Default", ["linux", "gpu"])
    assert actions.calls[-1] == "update 3 ['gpu', 'linux']"


async def test_runners_come_from_the_scale_set() -> None:
    actions = StubActions()
    reg = registrar(actions)
    await reg.ensure("Default", ["linux"])
    registration, config = await reg.create_jit_runner("linux-abc", ["linux"], 1)
    assert actions.calls[-1] == "jit 7 linux-abc"
    assert registration.name == "linux-abc"
    assert config == "secret-config"


async def test_sweep_reads_starting_runners_and_rechecks_online_ones_rarely() -> None:
    clock = Clock()
    actions = StubActions(agents={
        1: Agent(1, "linux-a", 7, online=True, busy=False),
        2: Agent(2, "linux-b", 7, online=False, busy=False),
    })  # fmt: skip
    reg = registrar(actions, clock)
    reg.track(1, "linux-a")
    reg.track(2, "linux-b")
    reg.track(3, "linux-c")  # the service no longer knows it
    first = await reg.sweep_runners()
    assert sorted(r.name for r in first.runners) == ["linux-a", "linux-b"]
    assert first.paid == 0, "no REST page was paid for"
    actions.calls.clear()
    clock.now += 5
    second = await reg.sweep_runners()
    assert actions.calls == [], "a starting runner is read again after 10 s, not every sweep"
    assert sorted(r.name for r in second.runners) == ["linux-a", "linux-b"]
    reads = []
    for _ in range(12):  # a minute of 5 s rounds (t = 10 ... 65 s)
        clock.now += 5
        actions.calls.clear()
        await reg.sweep_runners()
        reads.append(len(actions.calls))
    # read at 10 s, then 20 s later (30 s), then 40 s later (70 s: after this window)
    assert reads == [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0], reads
    actions.calls.clear()
    clock.now += RECHECK_SECONDS
    await reg.sweep_runners()
    assert sorted(actions.calls) == ["agent 1", "agent 2"]


async def test_a_missing_runner_group_holds_no_scale_set_so_deletion_completes() -> None:
    """Issue 12, scenario 6: a RunnerScaleSet naming a runner group GitHub does not have
    could never be deleted (its finalizer retried "does not exist" forever)."""
    actions = StubActions(existing=ScaleSetInfo(3, "team-a-linux", 1, ("linux",)))
    assert await registrar(actions).find("no-such-group") is False
    assert actions.calls == [], "nothing to look up or delete"
    assert await registrar(actions).find("Default") is True
