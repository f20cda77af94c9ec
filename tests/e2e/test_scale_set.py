"""RunnerScaleSet end to end: the operator process keeps the right number of one-job runners."""

from __future__ import annotations

from tests.support.factories import make_scale_set
from tests.support.fleet import Fleet


async def test_min_runners_become_idle_runners_with_own_secrets(running_fleet: Fleet) -> None:
    f = running_fleet
    await f.apply_scale_set(make_scale_set("linux", config_url=f.config_url, min_runners=3))
    await f.expect_runners("linux", idle=3)
    pods = await f.pods("linux")
    secrets = await f.secrets("linux")
    assert sorted(p.metadata.name for p in pods) == sorted(s.metadata.name for s in secrets)
    assert sorted(p.metadata.name for p in pods) == f.registrations("linux")
    for pod in pods:
        env = pod.spec.containers[0].env
        assert env[-1].value_from.secret_key_ref.name == pod.metadata.name
