"""Smoke test of the built image (`make image`, then `make test-image`; docs/image.md).

Each process runs from the image's root filesystem in a chroot as the image's user 65532,
with its entrypoint and environment (tests/support/image.py); checks read /proc to prove
that the process under test is that one, not this checkout's code.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import time
from pathlib import Path

import aiohttp

from runnerfleet import conventions as c
from runnerfleet.localcluster import LocalCluster
from runnerfleet.localcluster.ports import free_ports
from tests.support.factories import make_scale_set, make_team_listener
from tests.support.fleet import Fleet
from tests.support.image import ImageRoot
from tests.support.kube import wait_for


async def _runs_from_image(pid: int, image: ImageRoot) -> None:
    """The process's root is the image's rootfs and it runs as the image's user (once chroot
    has exec'ed the entrypoint: the first moments after Popen it is still chroot(8) as root)."""

    def seen() -> tuple[str, set[int], set[int]]:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        ids = {k: {int(v) for v in line.split()[1:]} for line in status
               for k in ("Uid:", "Gid:") if line.startswith(k)}  # fmt: skip
        return str(Path(f"/proc/{pid}/root").resolve()), ids["Uid:"], ids["Gid:"]

    uid, gid = image.user
    await wait_for(
        lambda: asyncio.sleep(0, seen()),
        lambda s: s == (str(image.rootfs.resolve()), {uid}, {gid}),
        what=f"process {pid} in the image's root as {uid}:{gid}", within=10,
    )  # fmt: skip


def _seconds_since_start(pid: int) -> float:
    """How long ago the process started (its /proc start time against /proc/uptime)."""
    started = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - started / os.sysconf("SC_CLK_TCK")


async def _get(port: int, path: str) -> tuple[int, str] | None:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=5)
            ) as response,
        ):
            return response.status, await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return None


def test_image_is_non_root_without_shell_or_package_manager(image: ImageRoot) -> None:
    assert image.user == (65532, 65532)
    assert image.config["Entrypoint"] == ["runnerfleet"]
    assert image.config["Cmd"] == ["operator"]
    for tool in ("bin/sh", "bin/bash", "usr/bin/dpkg", "usr/bin/apt", "bin/tar"):
        assert not (image.rootfs / tool).exists(), f"/{tool} is in the image"
    assert (image.rootfs / "opt/venv/bin/runnerfleet").is_file()
    passwd = (image.rootfs / "etc/passwd").read_text()
    assert "runnerfleet:x:65532:65532:" in passwd


def test_version_is_the_package_version(image: ImageRoot, version: str) -> None:
    took = []
    for _ in range(3):
        started = time.monotonic()
        result = image.run("--version")
        took.append(time.monotonic() - started)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"runnerfleet, version {version}"
    print(f"runnerfleet --version from the image: min {min(took):.2f} s, "
          f"median {statistics.median(took):.2f} s, max {max(took):.2f} s")  # fmt: skip


async def test_operator_from_image_reconciles_a_scale_set(
    image_fleet: Fleet, image: ImageRoot
) -> None:
    f = image_fleet
    assert f.operator.proc is not None
    await _runs_from_image(f.operator.proc.pid, image)
    await f.apply_scale_set(make_scale_set("linux", config_url=f.config_url, min_runners=2))
    await f.expect_runners("linux", idle=2, within=90)
    await f.wait_condition("rss", "linux", "Ready", "True", within=60)
    assert f.operator.proc.poll() is None, "the operator from the image exited"


async def test_listener_from_image_serves_healthz_and_metrics(
    image_fleet: Fleet, image: ImageRoot
) -> None:
    f = image_fleet
    labels = ["self-hosted", "linux", "team-a"]
    await f.apply_scale_set(make_scale_set(
        "team-a-linux", config_url=f.config_url, team="team-a", labels=labels, max_runners=5,
    ))  # fmt: skip
    await f.apply_team_listener(make_team_listener(
        "team-a", team="team-a", config_url=f.config_url,
        scaleSetSelector={"matchLabels": {c.LABEL_TEAM: "team-a"}}, pollInterval="2s",
    ))  # fmt: skip
    proc = await f.listener_process(within=90)
    await _runs_from_image(proc.proc.pid, image)
    healthz = await wait_for(
        lambda: _get(proc.metrics_port, "/healthz"), lambda r: r is not None and r[0] == 200,
        what="the listener's /healthz", within=60,
    )  # fmt: skip
    print(f"listener from the image: /healthz 200 {_seconds_since_start(proc.proc.pid):.2f} s "
          "after its process started")  # fmt: skip
    assert healthz == (200, "ok\n")
    metrics = await wait_for(
        lambda: _get(proc.metrics_port, "/metrics"),
        lambda r: r is not None and r[0] == 200 and "runnerfleet_listener_polls" in r[1],
        what="the listener's /metrics with its poll counter", within=60,
    )  # fmt: skip
    assert metrics is not None
    # It really polls the fake GitHub from inside the chroot: a queued job becomes a runner.
    f.github.enqueue_job("acme/app", labels, 30.0)
    await f.expect_runners("team-a-linux", idle=0, busy=1, within=60)


async def test_runc_runs_the_image_as_is_and_the_operator_answers_probes(
    image: ImageRoot, local_cluster: LocalCluster, crds: list[str], tmp_path: Path
) -> None:
    """A real OCI runtime (runc) with umoci's runtime config: the default command (operator),
    read-only root, its own PID and mount namespaces; the kubeconfig mounted as a file."""
    port = free_ports(1)[0]
    kubeconfig = tmp_path / "kubeconfig"  # as a Secret volume would: readable by the user
    shutil.copyfile(local_cluster.kubeconfig, kubeconfig)
    os.chown(kubeconfig, *image.user)
    bundle = image.runc_bundle(
        tmp_path / "bundle",
        env={"KUBECONFIG": "/etc/runnerfleet/kubeconfig", "RUNNERFLEET_METRICS_PORT": str(port)},
        mounts={"/etc/runnerfleet/kubeconfig": kubeconfig},
    )
    log = tmp_path / "runc.log"
    with image.runc(bundle, log) as runc:

        async def healthz() -> tuple[int, str] | None:
            assert runc.poll() is None, f"runc exited {runc.returncode}:\n{log.read_text()[-4000:]}"
            return await _get(port, "/healthz")

        answer = await wait_for(
            healthz, lambda r: r is not None and r[0] == 200,
            what="the operator's /healthz in runc", within=60,
        )  # fmt: skip
        print(f"operator in runc: /healthz 200 {_seconds_since_start(runc.pid):.2f} s after "
              "`runc run` started")  # fmt: skip
        assert answer == (200, "ok\n")
        metrics = await _get(port, "/metrics")
        assert metrics is not None
        assert metrics[0] == 200
        assert "runnerfleet_" in metrics[1]
        # SIGTERM to runc reaches the operator (PID 1 in the container): it stops cleanly.
        runc.terminate()
        assert await asyncio.to_thread(runc.wait, 30) == 0, log.read_text()[-4000:]
