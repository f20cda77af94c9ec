"""Leader election's pure rules: who may take the Lease, and when a standby should try."""

from __future__ import annotations

from runnerfleet.planning.lease import LeaseView, expires_in, may_take


def test_a_standby_tries_exactly_when_the_holders_lease_expires() -> None:
    held = LeaseView(holder="a", renewed_at=100.0, duration=10.0, transitions=1)
    assert not may_take(held, "b", 109.9)
    assert expires_in(held, 104.0) == 6.0
    assert may_take(held, "b", 110.1)
    assert expires_in(held, 112.0) == 0.0
    assert may_take(held, "a", 105.0), "the holder renews its own at any time"
    free = LeaseView(holder=None, renewed_at=None, duration=0.0, transitions=1)
    assert expires_in(free, 104.0) == 0.0
    assert may_take(free, "b", 104.0)
