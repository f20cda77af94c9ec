"""LeaderElector's requests (the Kubernetes gateway substituted): a renewal is one write on
the version it last wrote, and a write by anyone else makes it read again."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from runnerfleet.gateways.kubernetes import ConflictError
from runnerfleet.services.leader import LeaderElector


@dataclass
class StubLeases:
    lease: dict[str, Any] | None = None
    calls: list[str] = field(default_factory=list)
    version: int = 0

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append("get")
        return copy.deepcopy(self.lease)

    def _store(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = {"metadata": {"name": name, "resourceVersion": str(self.version)},
                      "spec": spec}  # fmt: skip
        return copy.deepcopy(self.lease)

    async def create_lease(
        self, namespace: str, name: str, spec: dict[str, Any], labels: Any = None
    ) -> Any:
        self.calls.append("create")
        return self._store(name, spec)

    async def replace_lease(
        self,
        namespace: str,
        name: str,
        spec: dict[str, Any],
        resource_version: str,
        labels: Any = None,
    ) -> Any:
        self.calls.append("replace")
        assert self.lease is not None
        if self.lease["metadata"]["resourceVersion"] != resource_version:
            raise ConflictError("the object has been modified")
        return self._store(name, spec)


async def test_renewals_are_one_write_each_and_a_foreign_write_is_noticed() -> None:
    kube = StubLeases()
    elector = LeaderElector(kube, "ns", "team-a-listener", "pod-a", duration=10)  # type: ignore[arg-type]
    assert await elector.try_take()
    assert kube.calls == ["get", "create"]
    for _ in range(3):
        assert await elector.try_take()
    assert kube.calls[2:] == ["replace"] * 3, "renewals read nothing"
    assert elector.renew_every == 10 / 3

    # Someone else writes the Lease (an admin, or a replica that saw it expire).
    assert kube.lease is not None
    kube._store("team-a-listener", {**kube.lease["spec"], "holderIdentity": "pod-b"})
    kube.calls.clear()
    assert not await elector.try_take(), "the stale version conflicts"
    assert not await elector.try_take(), "read again: pod-b holds it and it has not expired"
    assert kube.calls == ["replace", "get"]
