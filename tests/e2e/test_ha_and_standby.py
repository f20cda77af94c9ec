"""Several operator replicas (only the Lease holder acts; a standby takes over when it dies),
and blue/green: a standby operator creates no runners until switched active, and switching an
active one to standby drains it without killing busy runners."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from runnerfleet import conventions as c
from runnerfleet.localcluster import LocalCluster
from runnerfleet.sim.operator_process import OperatorProcess
from tests.support.factories import make_scale_set
from tests.support.fleet import Fleet
from tests.support.kube import wait_for

LABELS = ["self-hosted", "linux"]


@asynccontextmanager
async def operators(
    f: Fleet, cluster: LocalCluster, log_dir: Path, count: int, **env: str
) -> AsyncIterator[list[OperatorProcess]]:
    """Replace the fleet's operator by `count` replicas with the given environment."""
    f.operator.stop()
    procs = [
        OperatorProcess(cluster.kubeconfig, f.namespace, log_dir / f"operator-{i}.log",
                        env={"RUNNERFLEET_NAMESPACE": f.namespace, **env})
        for i in range(count)
    ]  # fmt: skip
    for proc in procs:
        proc.start()
    try:
        yield procs
    finally:
        for i, proc in enumerate(procs):
            proc.stop()
            print(f"---- operator {i} log ----\n{proc.logs()[-8000:]}")


async def _lease(f: Fleet) -> client.V1Lease | None:
    try:
        return await client.CoordinationV1Api(f.kube).read_namespaced_lease(
            "runnerfleet-operator", f.namespace
        )
    except ApiException as err:
        if err.status == 404:
            return None
        raise


async def test_two_replicas_only_the_lease_holder_acts_and_the_other_takes_over(
    running_fleet: Fleet, local_cluster: LocalCluster, tmp_path: Path
) -> None:
    f = running_fleet
    env = {"RUNNERFLEET_LEADER_ELECT": "true", "RUNNERFLEET_LEASE_SECONDS": "4"}
    async with operators(f, local_cluster, tmp_path, 2, **env) as (one, two):
        lease = await wait_for(
            lambda: _lease(f),
            lambda lz: bool(lz and lz.spec.holder_identity),
            what="a lease holder",
        )
        await f.apply_scale_set(make_scale_set("linux", config_url=f.config_url, min_runners=2))
        await f.expect_runners("linux", idle=2)
        leader, follower = (one, two) if f"-{one.proc.pid}" in lease.spec.holder_identity else (
            two, one)  # fmt: skip
        assert "acting" in leader.logs()
        # The follower may still be starting (imports on a loaded machine): wait for its line.
        await wait_for(
            lambda: asyncio.sleep(0, follower.logs()), lambda text: "standing by" in text,
            what="the follower standing by", within=30,
        )  # fmt: skip
        assert "acting" not in follower.logs()  # so it never created a runner
        # A warm standby: its runner caches are listed before it leads, and it answers the
        # chart's probes (a standby without /healthz was restarted by its liveness probe).
        await wait_for(
            lambda: asyncio.sleep(0, follower.logs()),
            lambda text: "standby warm: caches hold" in text,
            what="the follower's caches listed", within=30,
        )  # fmt: skip
        assert await _get(follower.metrics_port, "/healthz") == 200
        assert await _get(follower.metrics_port, "/readyz") == 200

        leader.kill()  # no release: the follower must wait for the lease to expire
        taken = await wait_for(
            lambda: _lease(f),
            lambda lz: f"-{follower.proc.pid}" in ((lz and lz.spec.holder_identity) or ""),
            what="the follower holds the lease", within=20,
        )  # fmt: skip
        assert taken.spec.lease_transitions == (lease.spec.lease_transitions or 0) + 1
        await client.CustomObjectsApi(f.kube).patch_namespaced_custom_object(
            c.GROUP, c.VERSION, f.namespace, c.RUNNER_SCALE_SET_PLURAL, "linux",
            {"spec": {"minRunners": 3}}, _content_type="application/merge-patch+json",
        )  # fmt: skip
        await f.expect_runners("linux", idle=3)
        assert "acting" in follower.logs()


async def _get(port: int, path: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=5)
        ) as response,
    ):
        return response.status


async def _set_mode(f: Fleet, mode: str) -> None:
    core = client.CoreV1Api(f.kube)
    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=c.CONTROL_CONFIGMAP), data={"mode": mode}
    )
    try:
        await core.create_namespaced_config_map(f.namespace, body)
    except ApiException as err:
        if err.status != 409:
            raise
        await core.replace_namespaced_config_map(c.CONTROL_CONFIGMAP, f.namespace, body)


async def test_standby_creates_nothing_until_active_and_drain_lets_busy_runners_finish(
    running_fleet: Fleet, local_cluster: LocalCluster, tmp_path: Path
) -> None:
    f = running_fleet
    async with operators(f, local_cluster, tmp_path, 1, RUNNERFLEET_MODE="standby"):
        await f.apply_scale_set(make_scale_set("linux", config_url=f.config_url, min_runners=2,
                                               scaleDownDelay="1s"))  # fmt: skip
        job = f.github.enqueue_job("acme/app", LABELS, duration=8.0)
        await f.set_demand("linux", 1, sequence=1)
        standby = await f.wait_condition("rss", "linux", "Standby", "True")
        assert standby["reason"] == "OperatorStandby"
        assert (await f.scale_set("linux"))["status"]["desired"] == 0
        assert await f.pods("linux") == []
        assert f.registrations("linux") == []

        # Switched active: the queued job gets a runner, plus the two warm ones.
        await _set_mode(f, "active")
        await f.expect_runners("linux", idle=2, busy=1, within=30)
        await f.wait_condition("rss", "linux", "Standby", "False")

        # Drain: back to standby mid-job. Idle runners go; the busy one finishes its job.
        await _set_mode(f, "standby")
        await f.expect_runners("linux", idle=0, busy=1, within=20)
        assert job.status != "completed"
        await wait_for(lambda: asyncio.sleep(0, job.status), lambda s: s == "completed",
                       what="the job done", within=30)  # fmt: skip
        # The listener reports the job done (this test writes the demand itself); until a
        # report newer than the job's end, its runner is held (runner-scale-set.md).
        await f.set_demand("linux", 0, sequence=2)
        await wait_for(lambda: f.pods("linux"), lambda pods: pods == [],
                       what="no runner pods once the job is done", within=30)  # fmt: skip
        assert job.conclusion == "success"
        assert f.runners.lost_jobs == []
        assert f.registrations("linux") == []
