"""RunnerScaleSet end to end: the operator process keeps the right number of one-job runners,
against the real local control plane, the fake GitHub and simulated runners."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.support.factories import make_scale_set
from tests.support.fleet import Fleet
from tests.support.kube import wait_for

LABELS = ["self-hosted", "linux"]


async def _restricted(f: Fleet) -> None:
    core = client.CoreV1Api(f.kube)
    await core.patch_namespace(
        f.namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )


async def test_min_runners_are_idle_restricted_pods_each_with_own_secret(
    running_fleet: Fleet,
) -> None:
    f = running_fleet
    await _restricted(f)
    await f.apply_scale_set(make_scale_set("linux", config_url=f.config_url, min_runners=3))
    await f.expect_runners("linux", idle=3)
    pods = await f.pods("linux")
    secrets = await f.secrets("linux")
    names = sorted(p.metadata.name for p in pods)
    assert names == sorted(s.metadata.name for s in secrets)
    assert names == f.registrations("linux")
    for pod in pods:
        env = pod.spec.containers[0].env
        assert env[-1].value_from.secret_key_ref.name == pod.metadata.name
        assert pod.spec.automount_service_account_token is False
    status = await wait_for(
        lambda: f.scale_set("linux"),
        lambda rss: rss.get("status", {}).get("idle") == 3,
        what="status.idle == 3",
    )
    ready = next(c for c in status["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"


async def test_demand_scales_up_jobs_complete_and_set_returns_to_min(running_fleet: Fleet) -> None:
    f = running_fleet
    body = make_scale_set(
        "linux", config_url=f.config_url, min_runners=3, max_runners=20, scaleDownDelay="1s"
    )
    await f.apply_scale_set(body)
    await f.expect_runners("linux", idle=3)
    jobs = [f.github.enqueue_job("acme/app", LABELS, duration=3.0) for _ in range(10)]
    await f.set_demand("linux", 10, sequence=1)

    def busy_and_total() -> tuple[int, int]:
        mine = [r for r in f.github.runners.values() if r.name.startswith("linux-")]
        return sum(r.busy for r in mine), len(mine)

    peak = 0

    async def probe() -> int:
        nonlocal peak
        busy, total = busy_and_total()
        peak = max(peak, total)
        return busy

    await wait_for(probe, lambda busy: busy == 10, what="10 busy runners", within=30)
    await f.expect_runners("linux", idle=3, busy=10, within=15)
    assert peak <= 13

    await wait_for(
        lambda: asyncio.sleep(0, [j.status for j in jobs]),
        lambda states: states == ["completed"] * 10,
        what="all 10 jobs completed",
        within=30,
    )
    await f.set_demand("linux", 0, sequence=2)
    await f.expect_runners("linux", idle=3, within=30)
    assert all(j.conclusion == "success" for j in jobs)
    assert f.runners.lost_jobs == []
    # Every finished runner's registration and Secret are gone; only the 3 idle remain.
    assert len(f.registrations("linux")) == 3
    assert len(await f.secrets("linux")) == 3
    # 13 registrations first; each finished job frees at most one replacement.
    assert 13 <= len(f.github.jit_issued) <= 13 + 10


async def test_demand_drop_never_deletes_busy_runners(running_fleet: Fleet) -> None:
    f = running_fleet
    body = make_scale_set(
        "linux", config_url=f.config_url, min_runners=0, max_runners=10, scaleDownDelay="0s"
    )
    await f.apply_scale_set(body)
    jobs = [f.github.enqueue_job("acme/app", LABELS, duration=8.0) for _ in range(4)]
    await f.set_demand("linux", 4, sequence=1)
    await f.expect_runners("linux", idle=0, busy=4, within=30)
    busy_names = {r.name for r in f.github.runners.values() if r.busy}

    await f.set_demand("linux", 0, sequence=2)

    # While the jobs run, every busy runner keeps its pod, Secret and registration.
    async def still_there() -> bool:
        live = {p.metadata.name for p in await f.pods("linux") if p.status.phase == "Running"}
        return busy_names <= live and busy_names <= set(f.registrations("linux"))

    for _ in range(20):  # sample for ~4 s while demand is 0 and jobs still run
        assert await still_there(), "a busy runner was removed"
        await asyncio.sleep(0.2)
    await wait_for(
        lambda: asyncio.sleep(0, [j.status for j in jobs]),
        lambda states: states == ["completed"] * 4,
        what="the 4 jobs to complete",
        within=30,
    )
    assert all(j.conclusion == "success" for j in jobs)
    await f.expect_runners("linux", idle=0, busy=0, within=30)
    assert f.runners.lost_jobs == []


async def test_runner_that_never_registers_is_replaced_and_reported(running_fleet: Fleet) -> None:
    f = running_fleet
    f.runners.never_register = True
    body = make_scale_set(
        "linux", config_url=f.config_url, min_runners=1, registrationTimeout="2s",
        keepFailedRunnersFor="0s",
    )  # fmt: skip
    await f.apply_scale_set(body)
    # Three failures: each needs its pod's container running, then a sweep after its 2 s,
    # with 5 s and 10 s of backoff in between: 34-39 s alone, over 60 s on a loaded machine.
    cond = await f.wait_condition("rss", "linux", "RunnersHealthy", within=150)
    assert "RegistrationTimeout" in cond["message"]
    rss = await f.scale_set("linux")
    assert rss["status"]["consecutiveFailures"] >= 3
    assert len(f.github.jit_issued) >= 3  # each timed-out runner was replaced
    # Failed runners' registrations and Secrets are cleaned up.
    assert len(f.registrations("linux")) <= 1

    events = await client.CoreV1Api(f.kube).list_namespaced_event(f.namespace)
    reasons = {e.reason for e in events.items if e.involved_object.name == "linux"}
    assert "RunnerFailed" in reasons


async def test_delete_removes_everything_and_waits_for_github(running_fleet: Fleet) -> None:
    f = running_fleet
    await f.apply_scale_set(make_scale_set("linux", config_url=f.config_url, min_runners=3))
    await f.expect_runners("linux", idle=3)
    port = f.github.port
    await f.github.stop()  # GitHub is gone: connections are refused
    api = client.CustomObjectsApi(f.kube)
    await api.delete_namespaced_custom_object(
        "runnerfleet.dev", "v1alpha1", f.namespace, "runnerscalesets", "linux"
    )
    # GitHub is down: the finalizer holds the object and the registrations stay.
    held = await wait_for(
        lambda: f.scale_set("linux"),
        lambda r: bool(r["metadata"].get("deletionTimestamp")),
        what="deletion to be pending",
    )
    assert "runnerfleet.dev/cleanup" in held["metadata"]["finalizers"]
    assert len(f.registrations("linux")) == 3

    await f.github.start(port)

    async def leftovers() -> tuple[int, int, int]:
        return (
            len(await f.pods("linux")),
            len(await f.secrets("linux")),
            len(f.registrations("linux")),
        )

    await wait_for(
        leftovers, lambda n: n == (0, 0, 0), what="no pods/Secrets/registrations", within=30
    )
    await wait_for(
        _gone(f, "linux"), lambda gone: gone, what="the RunnerScaleSet to be deleted", within=10
    )


def _gone(f: Fleet, name: str) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        try:
            await f.scale_set(name)
        except ApiException as err:
            return err.status == 404
        return False

    return probe


async def test_rate_limit_backs_off_until_reset_and_keeps_runners(running_fleet: Fleet) -> None:
    f = running_fleet
    await f.apply_scale_set(make_scale_set("linux", config_url=f.config_url, min_runners=2))
    await f.expect_runners("linux", idle=2)
    before = sorted(f.registrations("linux"))
    f.github.exhaust_rate_limit(reset_in=8)
    calls_at_block = sum(f.github.requests.values())
    # An idle scale set makes no GitHub call of its own; a new job makes it register one.
    await f.set_demand("linux", 1, sequence=1)
    cond = await f.wait_condition("rss", "linux", "GitHubReachable", reason="RateLimited")
    assert "existing runners are kept" in cond["message"]
    # During the block: runners untouched, and at most a couple of refused calls, no storm.
    for _ in range(10):
        assert sorted(f.registrations("linux")) == before
        assert len(await f.pods("linux")) == 2
        await asyncio.sleep(0.3)
    assert sum(f.github.requests.values()) - calls_at_block <= 3
    # After the reset it carries on: the runner the job needs is created.
    await f.expect_runners("linux", idle=3, within=20)


async def test_missing_credentials_secret_is_a_condition_and_deletes_nothing(
    running_fleet: Fleet,
) -> None:
    f = running_fleet
    await f.apply_scale_set(make_scale_set("linux", config_url=f.config_url, min_runners=2))
    await f.expect_runners("linux", idle=2)
    await f.apply_scale_set(
        make_scale_set("broken", config_url=f.config_url, secret="nope", min_runners=1)
    )
    cond = await f.wait_condition("rss", "broken", "ConfigValid")
    assert "Secret nope" in cond["message"]
    assert "spec.github.secretRef.name" in cond["message"]
    await f.expect_runners("linux", idle=2, within=5)
    assert await f.pods("broken") == []


async def test_no_secret_value_reaches_the_operator_log(app_fleet: Fleet) -> None:
    """GitHub App flow end to end; then scan the operator's output for every secret value:
    the App private key, installation tokens the fake issued, and each JIT config."""
    f = app_fleet
    await f.apply_scale_set(make_scale_set("linux", config_url=f.config_url, min_runners=2))
    await f.expect_runners("linux", idle=2)
    assert f.github.tokens, "the operator exchanged its App JWT for an installation token"
    secrets = await f.secrets("linux")
    jit_values = [s.data["jitconfig"] for s in secrets]
    f.operator.stop()
    logs = f.operator.logs()
    assert "Activity 'configure' succeeded" in logs  # the log really was captured
    key_body = "".join(f.token.strip().splitlines()[1:-1])
    for needle in [*f.github.tokens, key_body[:64], key_body[-64:]]:
        assert needle not in logs
    for value in jit_values:
        assert value not in logs
        assert base64.b64decode(value).decode() not in logs


async def test_oom_killed_runner_is_replaced_and_its_pod_kept(running_fleet: Fleet) -> None:
    f = running_fleet
    body = make_scale_set(
        "linux", config_url=f.config_url, min_runners=2, keepFailedRunnersFor="1h"
    )
    await f.apply_scale_set(body)
    await f.expect_runners("linux", idle=2)
    victim = sorted(f.registrations("linux"))[0]
    await client.CoreV1Api(f.kube).patch_namespaced_pod_status(victim, f.namespace, {"status": {
        "phase": "Failed",
        "containerStatuses": [{
            "name": "runner", "ready": False, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
        }],
    }})  # fmt: skip
    await f.expect_runners("linux", idle=2, within=30)  # a replacement is online
    assert victim not in f.registrations("linux")
    kept = [p for p in await f.pods("linux") if p.metadata.name == victim]
    assert [p.status.phase for p in kept] == ["Failed"]  # kept for `kubectl logs`
    assert victim not in [s.metadata.name for s in await f.secrets("linux")]
    rss = await wait_for(
        lambda: f.scale_set("linux"),
        lambda r: r.get("status", {}).get("lastFailureReason") == "OOMKilled",
        what="status.lastFailureReason == OOMKilled",
    )
    assert rss["status"]["failed"] == 1


async def test_orphan_registration_is_removed(running_fleet: Fleet) -> None:
    f = running_fleet
    await f.apply_scale_set(make_scale_set("linux", config_url=f.config_url, min_runners=1))
    await f.expect_runners("linux", idle=1)
    # A registration of this scale set's name pattern with no pod and no Secret, as left
    # behind by a crash after a pod and Secret were deleted but before deregistration.
    orphan = f.registrations("linux")[0][:-5] + "zzzzz"
    f.github.enqueue_job  # noqa: B018  (fake in use)
    from runnerfleet.sim.github import FakeRunner

    f.github.runners[999_999] = FakeRunner(999_999, orphan, "org/acme", ["linux"], 1, "online")
    await wait_for(
        lambda: asyncio.sleep(0, orphan in f.registrations("linux")),
        lambda present: not present,
        what="the orphan registration to be deleted",
        within=75,  # the next sweep finds it; it is an orphan only after a 30 s grace
    )
    assert orphan in f.github.deleted_runners
    await f.expect_runners("linux", idle=1, within=10)


async def test_operator_metrics_expose_runner_states(running_fleet: Fleet) -> None:
    import aiohttp

    f = running_fleet
    await f.apply_scale_set(make_scale_set("linux", config_url=f.config_url, min_runners=2))
    await f.expect_runners("linux", idle=2)
    url = f"http://127.0.0.1:{f.operator.metrics_port}/metrics"

    async def scrape() -> str:
        async with aiohttp.ClientSession() as s, s.get(url) as resp:
            return await resp.text()

    labels = f'namespace="{f.namespace}",scale_set="linux"'
    text = await wait_for(
        scrape, lambda t: f'runnerfleet_runners{{{labels},state="idle"}} 2.0' in t,
        what="runnerfleet_runners idle == 2",
    )  # fmt: skip
    for family in (
        f"runnerfleet_desired_runners{{{labels}}} 2.0",
        f"runnerfleet_min_runners{{{labels}}} 2.0",
        f"runnerfleet_max_runners{{{labels}}} 10.0",
        f'runnerfleet_runners{{{labels},state="busy"}} 0.0',
        "runnerfleet_reconcile_seconds_bucket",
    ):  # fmt: skip
        assert family in text, family


async def test_forbidden_template_is_a_condition_and_event_not_a_hot_loop(
    running_fleet: Fleet,
) -> None:
    """A privileged (docker-in-docker style) template in a `restricted` namespace."""
    f = running_fleet
    await _restricted(f)
    template = {"spec": {"containers": [{
        "name": "runner", "securityContext": {"privileged": True, "allowPrivilegeEscalation": True},
    }]}}  # fmt: skip
    await f.apply_scale_set(
        make_scale_set("dind", config_url=f.config_url, min_runners=2, template=template)
    )
    cond = await f.wait_condition("rss", "dind", "PodsAdmitted")
    assert "privileged" in cond["message"]
    assert "restricted" in cond["message"]
    events = await client.CoreV1Api(f.kube).list_namespaced_event(f.namespace)
    assert any(e.reason == "PodRejected" and e.involved_object.name == "dind" for e in events.items)
    # No hot loop: the two runners wait (Secrets + registrations kept, no new ones per round).
    issued = len(f.github.jit_issued)
    await asyncio.sleep(5)  # an observation window (a negative property), not synchronisation
    assert len(f.github.jit_issued) == issued == 2
    assert await f.pods("dind") == []


async def test_deleted_busy_runner_pod_is_replaced_and_its_registration_cleaned(
    running_fleet: Fleet,
) -> None:
    """Reliability #16: someone deletes a busy runner's pod (or its node is evicted)."""
    f = running_fleet
    body = make_scale_set("linux", config_url=f.config_url, min_runners=1, scaleDownDelay="1s")
    await f.apply_scale_set(body)
    job = f.github.enqueue_job("acme/app", LABELS, 60.0)
    await f.set_demand("linux", 1, sequence=1)
    await f.expect_runners("linux", idle=1, busy=1, within=30)
    victim = job.runner_name
    assert victim is not None
    await client.CoreV1Api(f.kube).delete_namespaced_pod(victim, f.namespace)
    # The job is lost with its pod (as on GitHub); the demand for it goes away.
    await f.set_demand("linux", 0, sequence=2)
    await f.expect_runners("linux", idle=1, within=30)
    assert victim not in [s.metadata.name for s in await f.secrets("linux")]
    assert f.runners.lost_jobs == [job.id]
    # It was recognised as lost (not restarted with its spent JIT config) ...
    rss = await f.scale_set("linux")
    assert rss["status"]["lastFailureReason"] == "PodLost"
    # ... and its registration, busy until GitHub noticed, is removed once it is not.
    await wait_for(
        lambda: asyncio.sleep(0, victim in f.registrations("linux")),
        lambda present: not present, what="the lost runner's registration removed", within=30,
    )  # fmt: skip
    assert victim in f.github.deleted_runners


async def test_rotated_token_is_picked_up_at_once_when_github_refuses_the_old_one(
    running_fleet: Fleet,
) -> None:
    """Credentials Secrets are cached for 5 minutes (one read per namespace, not per round);
    a 401 drops the cached copy, so a rotation that revoked the old token costs one round."""
    f = running_fleet
    await f.apply_scale_set(make_scale_set("linux", config_url=f.config_url, min_runners=1,
                                           max_runners=5))  # fmt: skip
    await f.expect_runners("linux", idle=1)
    f.github.tokens.discard(f.token)  # revoked: GitHub answers 401 from now on
    new = f.github.add_token()
    await client.CoreV1Api(f.kube).patch_namespaced_secret(
        "github-app",
        f.namespace,
        {"data": {"github_token": base64.b64encode(new.encode()).decode()}},
    )
    await f.set_demand("linux", 2, sequence=1)
    await f.expect_runners("linux", idle=3, within=60)  # the 5-minute TTL would not make it
