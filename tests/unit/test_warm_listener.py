"""The listener's arrival history for predictive warm pools (issue 14 part 2): jobs matched to
a scale set for the first time are counted once, the learnt model rides on the demand reports
of predictive sets only (no write of its own), and a restarted listener goes on from it."""

from __future__ import annotations

from typing import Any

import pytest

from runnerfleet.planning.forecast import decode
from tests.unit.test_listener_demand import StubKube, _job, _listener, _scale_set

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0  # epoch hour 500,000


def _predictive(demand: dict[str, Any] | None = None) -> dict[str, Any]:
    body = _scale_set("linux", ["linux"], demand)
    body["spec"]["warmPolicy"] = "predictive"
    return body


async def test_arrivals_are_counted_once_and_written_with_demand() -> None:
    kube = StubKube([_predictive()])
    lis = _listener(kube, now=NOW)  # type: ignore[arg-type]
    lis.table.webhook(_job(1, ("linux",)))
    lis.table.webhook(_job(2, ("linux",)))
    await lis.publish()
    first = decode(kube.writes[-1][1]["arrivals"])
    assert first is not None
    assert (first.hour, first.count) == (int(NOW // 3600), 2)
    kube.scale_sets = [_predictive(kube.writes[-1][1])]
    lis.table.webhook(_job(3, ("linux",)))
    await lis.publish()  # jobs 1 and 2 again, and 3: one new arrival
    second = decode(kube.writes[-1][1]["arrivals"])
    assert second is not None
    assert second.count == 3
    assert len(kube.writes) == 2  # no write beyond the demand reports


async def test_static_sets_carry_no_history() -> None:
    kube = StubKube([_scale_set("linux", ["linux"])])
    lis = _listener(kube, now=NOW)  # type: ignore[arg-type]
    lis.table.webhook(_job(1, ("linux",)))
    await lis.publish()
    assert "arrivals" not in kube.writes[-1][1]


async def test_a_restarted_listener_goes_on_from_the_stored_history() -> None:
    kube = StubKube([_predictive()])
    lis = _listener(kube, now=NOW)  # type: ignore[arg-type]
    lis.table.webhook(_job(1, ("linux",)))
    await lis.publish()
    stored = kube.writes[-1][1]
    kube.scale_sets = [_predictive(stored)]
    again = _listener(kube, now=NOW + 10)  # type: ignore[arg-type]  (a new process)
    again.table.webhook(_job(1, ("linux",)))
    again.table.webhook(_job(7, ("linux",)))
    await again.publish()
    model = decode(kube.writes[-1][1]["arrivals"])
    assert model is not None
    # The stored arrival plus the two it sees (job 1 again: its seen-set did not survive).
    assert model.count == 3
