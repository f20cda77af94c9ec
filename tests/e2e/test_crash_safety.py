"""Crash safety: SIGKILL the operator in the middle of a scale-up; after a restart the scale set
converges to exactly the requested runners with no duplicate names and no orphan registrations.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.support.factories import make_scale_set
from tests.support.fleet import Fleet
from tests.support.kube import wait_for


@pytest.mark.parametrize("protocol", ["rest", "scaleSet"])
async def test_sigkill_mid_scale_up_converges_without_duplicates(
    running_fleet: Fleet, protocol: str
) -> None:
    f = running_fleet
    f.github.latency = 0.15  # slow GitHub down so the kill lands between steps
    await f.apply_scale_set(make_scale_set(
        "linux", config_url=f.config_url, min_runners=20, max_runners=20, protocol=protocol,
    ))  # fmt: skip

    async def progress() -> tuple[int, int]:
        return len(await f.secrets("linux")), len(await f.pods("linux"))

    seen = await wait_for(
        progress, lambda sp: sp[0] >= 6, what="scale-up under way (>= 6 Secrets)", within=30
    )
    f.operator.kill()
    secrets_at_kill, pods_at_kill = await progress()
    assert pods_at_kill < 20, f"scale-up finished before the kill ({seen})"
    # Some runners were interrupted between steps (Secret written, pod not yet created).
    assert secrets_at_kill > pods_at_kill

    f.github.latency = 0.0
    f.operator.start()
    await f.expect_runners("linux", idle=20, within=60)

    registered = [r.name for r in f.github.runners.values() if r.name.startswith("linux-")]
    assert Counter(registered).most_common(1)[0][1] == 1, "duplicate runner names"
    pods = sorted(p.metadata.name for p in await f.pods("linux"))
    secrets = sorted(s.metadata.name for s in await f.secrets("linux"))
    assert pods == secrets == sorted(registered), "orphan registrations, pods or Secrets"
    assert len(pods) == 20
    assert secrets_at_kill >= 6
