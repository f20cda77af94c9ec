"""The installation-level webhook relay end to end: one organisation webhook, three teams.

Team a and team b watch acme/app with webhooks (each its own secret), team c watches acme/lib.
Every listener runs as its pod's real program (the stand-in kubelet), polls every 10 minutes
(so only a webhook can move demand during the test), and the relay runs as a local
`runnerfleet webhook-relay` process with the chart's own ServiceAccount and RBAC.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client

from runnerfleet import conventions as c
from runnerfleet.listener.signature import sign
from runnerfleet.localcluster import LocalCluster
from runnerfleet.localcluster.ports import free_ports
from tests.e2e.test_chart import CHART, _docs, _token_kubeconfig, helm
from tests.support.factories import make_scale_set, make_team_listener
from tests.support.fleet import Fleet
from tests.support.kube import wait_for

LABELS = ["self-hosted", "linux"]
INSTALLATION = "the organisation webhook's secret"
TEAMS = {"team-a": ["app"], "team-b": ["app"], "team-c": ["lib"]}


def team_secret(team: str) -> str:
    return f"{team}'s own webhook secret"


@dataclass
class RelayProcess:
    """`runnerfleet webhook-relay` as a child process, as the chart's Deployment runs it."""

    kubeconfig: Path
    namespace: str
    secret_name: str
    log_path: Path
    ports: list[int] = field(default_factory=lambda: free_ports(2))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runnerfleet.cli", "webhook-relay",
                 "--kubeconfig", str(self.kubeconfig), "--secret-namespace", self.namespace,
                 "--secret-name", self.secret_name, "--webhook-port", str(self.ports[0]),
                 "--metrics-port", str(self.ports[1])],
                stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ),
            )  # fmt: skip

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def _create_secret(f: Fleet, name: str, value: str) -> None:
    await client.CoreV1Api(f.kube).create_namespaced_secret(f.namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name=name), string_data={"github_webhook_secret": value},
    ))  # fmt: skip


async def _teams(f: Fleet) -> None:
    for team, repos in TEAMS.items():
        await _create_secret(f, f"{team}-hook", team_secret(team))
        await f.apply_scale_set(make_scale_set(
            f"{team}-linux", config_url=f.config_url, team=team, labels=LABELS, max_runners=5,
        ))  # fmt: skip
        await f.apply_team_listener(make_team_listener(
            team, team=team, config_url=f.config_url, repositories=repos, pollInterval="10m",
            scaleSetSelector={"matchLabels": {c.LABEL_TEAM: team}},
            webhook={"enabled": True, "secretRef": {"name": f"{team}-hook"}},
        ))  # fmt: skip


async def _acting(f: Fleet) -> None:
    """Every listener holds its Lease and has made its first poll (the next is 10 min away)."""
    coordination = client.CoordinationV1Api(f.kube)
    for team in TEAMS:
        await wait_for(
            lambda: f.team_listener(team),  # noqa: B023 (awaited within the iteration)
            lambda tl: bool(tl.get("status", {}).get("poll", {}).get("lastSuccessfulPoll")),
            what=f"{team}'s first poll", within=60,
        )  # fmt: skip
        lease = await coordination.read_namespaced_lease(c.listener_lease_name(team), f.namespace)
        assert "@127.0.0.1:" in (lease.spec.holder_identity or "")


@pytest.fixture
async def relay(
    running_fleet: Fleet, local_cluster: LocalCluster, tmp_path: Path
) -> AsyncIterator[RelayProcess]:
    """The relay with only the chart's RBAC for it (applied from the rendered chart)."""
    f = running_fleet
    release = f"rl{uuid.uuid4().hex[:6]}"
    rendered = helm(
        "template", release, str(CHART), "--namespace", f.namespace,
        "--set", "webhookRelay.enabled=true", "--set", "webhookRelay.secretRef.name=org-hook",
    )  # fmt: skip
    account = f"{release}-runnerfleet-webhook-relay"
    rbac = [d for d in _docs(rendered) if d["metadata"]["name"] == account
            and d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                              "RoleBinding")]  # fmt: skip
    stdin = "\n---\n".join(json.dumps(d) for d in rbac)
    local_cluster.kubectl("apply", "--server-side", "-f", "-", stdin=stdin)
    try:
        token = await client.CoreV1Api(f.kube).create_namespaced_service_account_token(
            account, f.namespace, client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)))  # fmt: skip
        kubeconfig = _token_kubeconfig(local_cluster, tmp_path / "relay.kubeconfig",
                                       token.status.token)  # fmt: skip
        proc = RelayProcess(kubeconfig, f.namespace, "org-hook", tmp_path / "relay.log")
        try:
            yield proc
        finally:
            proc.stop()
            print(f"---- relay log ----\n{proc.logs()[-8000:]}")
    finally:
        local_cluster.kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false",
                              stdin=stdin)  # fmt: skip


async def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.text()


async def _get(url: str) -> tuple[int, str] | None:
    try:
        async with aiohttp.ClientSession() as s, s.get(url) as resp:
            return resp.status, await resp.text()
    except aiohttp.ClientConnectionError:
        return None


async def _demands(f: Fleet) -> dict[str, int]:
    out = {}
    for team in TEAMS:
        status = (await f.scale_set(f"{team}-linux")).get("status") or {}
        out[team] = int((status.get("demand") or {}).get("assignedJobs", 0))
    return out


async def _accepted(f: Fleet) -> dict[str, float]:
    """Each team listener's accepted webhook deliveries, from its own metrics."""
    out = {}
    for proc in f.kubelet.running():
        team = proc.pod.split("-listener-")[0]
        got = await _get(f"http://127.0.0.1:{proc.metrics_port}/metrics")
        assert got is not None
        out[team] = sum(
            float(line.rsplit(" ", 1)[1]) for line in got[1].splitlines()
            if line.startswith("runnerfleet_webhook_deliveries_total{")
            and 'result="accepted"' in line
        )  # fmt: skip
    return out


async def test_one_org_webhook_reaches_every_watching_team_at_once(
    running_fleet: Fleet, relay: RelayProcess
) -> None:
    f = running_fleet
    await _create_secret(f, "org-hook", INSTALLATION)
    await _teams(f)
    await wait_for(lambda: asyncio.sleep(0, len(f.kubelet.running())), lambda n: n == 3,
                   what="three listener processes", within=60)  # fmt: skip
    await _acting(f)
    relay.start()
    await wait_for(lambda: _get(f"{relay.url}/healthz"), lambda r: r is not None and r[0] == 200,
                   what="the relay ready (watches synced, secret read)", within=30)  # fmt: skip

    payload = json.dumps({
        "action": "queued",
        "workflow_job": {"id": 424242, "run_id": 4242, "labels": LABELS, "status": "queued"},
        "repository": {"full_name": "acme/app", "html_url": f"{f.github.url}/acme/app"},
        "organization": {"login": "acme"},
    }).encode()  # fmt: skip
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "workflow_job",
               "X-GitHub-Delivery": str(uuid.uuid4())}  # fmt: skip

    # A team's own secret is not the installation's: refused, nothing forwarded.
    wrong = {**headers, "X-Hub-Signature-256": sign(team_secret("team-a").encode(), payload)}
    assert (await _post(f"{relay.url}/webhook", payload, wrong))[0] == 401
    assert (await _post(f"{relay.url}/webhook", payload, headers))[0] == 401  # unsigned
    assert await _demands(f) == {"team-a": 0, "team-b": 0, "team-c": 0}
    assert await _accepted(f) == {"team-a": 0, "team-b": 0, "team-c": 0}

    good = {**headers, "X-Hub-Signature-256": sign(INSTALLATION.encode(), payload)}
    sent = time.monotonic()
    status, text = await _post(f"{relay.url}/webhook", payload, good)
    assert status == 200, text
    assert json.loads(text) == {"forwarded": 2, "failed": 0, "skipped": 0}
    await wait_for(lambda: _demands(f), lambda d: d["team-a"] == 1 and d["team-b"] == 1,
                   what="both watching teams' demand", within=3.0)  # fmt: skip
    took = time.monotonic() - sent
    assert (await _demands(f))["team-c"] == 0
    assert await _accepted(f) == {"team-a": 1, "team-b": 1, "team-c": 0}

    # The installation secret is re-read when its Secret changes (watched by name).
    await client.CoreV1Api(f.kube).patch_namespaced_secret("org-hook", f.namespace, {
        "stringData": {"github_webhook_secret": "rotated"}})  # fmt: skip
    ping = {"X-GitHub-Event": "ping", "X-Hub-Signature-256": sign(b"rotated", b"{}")}
    await wait_for(lambda: _post(f"{relay.url}/webhook", b"{}", ping), lambda r: r[0] == 200,
                   what="the rotated installation secret in use", within=15)  # fmt: skip

    logs = relay.logs()
    for secret in (INSTALLATION, "rotated", *(team_secret(t) for t in TEAMS)):
        assert secret not in logs
    assert "Forbidden" not in logs, logs[-3000:]
    print(f"relay -> two teams' demand in {took:.2f}s")
