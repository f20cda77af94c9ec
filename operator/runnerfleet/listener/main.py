"""`runnerfleet listen`: the per-team listener process.

Serves `POST /webhook` (signed `workflow_job` deliveries) on the webhook port and
`/metrics` + `/healthz` on the metrics port, and polls GitHub every `pollInterval`.
GitHub credentials come from the environment (the Deployment maps the team's Secret in with
envFrom: `github_token`, or `github_app_id` + `github_app_installation_id` +
`github_app_private_key`); the webhook secret from RUNNERFLEET_WEBHOOK_SECRET; optionally
RUNNERFLEET_LISTENER_READS_PER_MINUTE (see planning/polling.py).

Layer: listener (an adapter, like the kopf handlers): parses input, calls the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from runnerfleet import conventions as c
from runnerfleet.gateways.actions_service import ActionsServiceClient
from runnerfleet.gateways.github import GitHubGateway
from runnerfleet.gateways.informer import Informer
from runnerfleet.gateways.kubernetes import KubeError, KubeGateway, connect
from runnerfleet.listener.signature import verify
from runnerfleet.metrics import ListenerMetrics, serve_metrics
from runnerfleet.models.github import GitHubCredentials, parse_config_url
from runnerfleet.models.team_listener import TeamListenerSpec
from runnerfleet.planning.polling import PollPolicy
from runnerfleet.services.leader import LeaderElector
from runnerfleet.services.listener import Listener
from runnerfleet.services.registration_token import SharedRegistrationToken
from runnerfleet.services.sessions import SessionManager
from runnerfleet.tasks import until_signalled

log = logging.getLogger("runnerfleet.listener")
# A standby takes over at most this long after the acting replica dies (at once after a clean
# stop: it watches the Lease). The holder renews every third of it: one write per 10 s.
LEASE_SECONDS = 30
CREDENTIAL_KEYS = ("github_token", "github_app_id", "github_app_installation_id",
                   "github_app_private_key")  # fmt: skip


@dataclass
class ListenerOptions:
    namespace: str
    name: str
    kubeconfig: str | None
    webhook_port: int
    metrics_port: int


async def run(options: ListenerOptions) -> None:
    """`serve` until SIGTERM or SIGINT, then shut down cleanly: the scale-set sessions are
    deleted, so the next pod (a rollout, a rescheduling) need not wait for them to expire."""
    await until_signalled(serve(options))


async def serve(options: ListenerOptions) -> None:
    """Set up, then alternate between standing by and acting for as long as the process
    runs: every replica serves webhooks and metrics; only the Lease holder polls, holds the
    scale-set sessions and writes demand."""
    api = await connect(options.kubeconfig)
    kube = KubeGateway(api)
    body = await kube.get_team_listener(options.namespace, options.name)
    spec = TeamListenerSpec.model_validate(body["spec"])
    target = parse_config_url(spec.github.config_url)
    credentials = GitHubCredentials.from_secret_data(
        spec.github.secret_ref.name, {k: os.environ[k] for k in CREDENTIAL_KEYS if k in os.environ}
    )
    metrics = ListenerMetrics.create()
    # The team's scale sets, watched: publishing and session syncs read them from memory.
    selector = ",".join(f"{k}={v}" for k, v in spec.scale_set_selector.match_labels.items())
    scale_sets = Informer(kube, c.RUNNER_SCALE_SET_PLURAL, options.namespace, selector)
    scale_sets.start()

    def count(endpoint: str, status: int) -> None:
        metrics.github_requests.labels(endpoint, str(status)).inc()

    github = GitHubGateway(target, credentials, on_request=count)
    listener = Listener(
        kube, github, target, options.namespace, options.name, spec, metrics,
        policy=_policy(os.environ), cache=scale_sets,
    )  # fmt: skip
    # Scale sets on GitHub's scale-set protocol: one session each, in this process.
    actions = ActionsServiceClient(
        spec.github.config_url,
        SharedRegistrationToken(  # the operator's token from our Secret, else our own
            kube, options.namespace, c.listener_registration_secret_name(options.name),
            github.registration_token,
        ),
    )  # fmt: skip
    pod = (
        os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or f"{options.name}-{os.getpid()}"
    )
    address = f"{os.environ.get('POD_IP') or '127.0.0.1'}:{options.webhook_port}"
    elector = LeaderElector(
        kube, options.namespace, c.listener_lease_name(options.name), f"{pod}@{address}",
        duration=int(os.environ.get("RUNNERFLEET_LEASE_SECONDS") or LEASE_SECONDS),
        labels=c.listener_lease_labels(options.name),
    )  # fmt: skip
    role = Role(elector)
    secret = os.environ.get("RUNNERFLEET_WEBHOOK_SECRET", "").encode()
    runners = [await serve_metrics(metrics.registry, options.metrics_port)]
    if spec.webhook.enabled:
        hooks = await _serve_webhooks(listener, metrics, secret, options.webhook_port, role)
        runners.append(hooks)
    log.info("listener %s/%s up as %s: team %s, poll every %s", options.namespace,
             options.name, pod, spec.team, spec.poll_interval)  # fmt: skip
    try:
        while True:
            await elector.acquire()
            role.acting = True
            try:
                await _act(listener, actions, pod, elector)
            finally:
                role.acting = False
    finally:
        await elector.release()  # a successor takes over now, not at the lease's expiry
        await scale_sets.stop()
        await actions.close()
        for runner in runners:
            await runner.cleanup()
        await api.close()


@dataclass
class Role:
    """Whether this replica acts, and where the acting one takes webhook deliveries."""

    elector: LeaderElector
    acting: bool = False
    _leader: tuple[float, str | None] = (0.0, None)

    async def leader_address(self) -> str | None:
        """`ip:port` of the Lease holder's webhook server (re-read at most every 2 s)."""
        at, address = self._leader
        if time.monotonic() - at > 2.0:
            holder = await self.elector.holder()
            address = holder.partition("@")[2] or None if holder else None
            self._leader = (time.monotonic(), address)
        return address


async def _act(
    listener: Listener, actions: ActionsServiceClient, pod: str, elector: LeaderElector
) -> None:
    """Poll and hold the sessions until the lease is lost (or the process stops). In a
    standby cluster (blue/green) no session is held: the active cluster's listener holds it."""
    lost = asyncio.Event()
    tasks = [
        asyncio.create_task(elector.hold(lost)),
        asyncio.create_task(_poll_forever(listener)),
        asyncio.create_task(lost.wait()),
    ]
    if os.environ.get("RUNNERFLEET_MODE", c.MODE_ACTIVE) != c.MODE_STANDBY:
        tasks.append(asyncio.create_task(SessionManager(actions, listener, pod).run()))
    else:
        log.info("operator in standby: holding no scale-set session")
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("listener task failed; standing by again", exc_info=task.exception())
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:  # the session manager deletes its sessions on the way out
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _poll_forever(listener: Listener) -> None:
    while True:  # no lock: a poll and the webhooks meet only in the (synchronous) merge
        await listener.poll()
        await asyncio.sleep(listener.poll_interval)


def _policy(env: Mapping[str, str]) -> PollPolicy:
    """The poll schedule; RUNNERFLEET_LISTENER_READS_PER_MINUTE shares GitHub's per-endpoint
    secondary limit among listeners on one installation (default: all of it, 800)."""
    reads = env.get("RUNNERFLEET_LISTENER_READS_PER_MINUTE")
    return PollPolicy(reads_per_minute=int(reads)) if reads else PollPolicy()


async def _serve_webhooks(
    listener: Listener, metrics: ListenerMetrics, secret: bytes, port: int, role: Role
) -> web.AppRunner:
    """`POST /webhook`: verify, apply to the job table, republish demand (coalesced). A
    standby replica forwards the delivery, still signed, to the acting one."""

    async def webhook(request: web.Request) -> web.Response:
        raw = await request.read()
        event = request.headers.get("X-GitHub-Event", "unknown")
        if not verify(secret, raw, request.headers.get("X-Hub-Signature-256")):
            metrics.webhook_deliveries.labels(event, "unauthorized").inc()
            return web.Response(status=401, text="bad or missing X-Hub-Signature-256\n")
        if not role.acting:
            return await _forward(role, metrics, event, raw, request.headers)
        if event != "workflow_job":
            metrics.webhook_deliveries.labels(event, "ignored").inc()
            return web.Response(status=202, text="ignored\n")
        try:
            payload = json.loads(raw)
        except ValueError:
            metrics.webhook_deliveries.labels(event, "malformed").inc()
            return web.Response(status=400, text="body is not JSON\n")
        if listener.on_workflow_job(payload):
            await listener.publish()
        metrics.webhook_deliveries.labels(event, "accepted").inc()
        return web.Response(status=200, text="ok\n")

    app = web.Application()
    app.router.add_post("/webhook", webhook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104
    return runner


FORWARDED_HEADERS = ("Content-Type", "X-GitHub-Event", "X-GitHub-Delivery", "X-Hub-Signature-256")


async def _forward(
    role: Role, metrics: ListenerMetrics, event: str, raw: bytes, headers: Mapping[str, str]
) -> web.Response:
    """Hand a delivery to the acting replica; 503 if there is none (GitHub records the
    failed delivery, and the next poll finds the job)."""
    try:
        address = await role.leader_address()
    except KubeError:
        address = None
    if address is None:
        metrics.webhook_deliveries.labels(event, "no_leader").inc()
        return web.Response(status=503, text="no acting listener\n")
    forward = {k: headers[k] for k in FORWARDED_HEADERS if k in headers}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.post(f"http://{address}/webhook", data=raw, headers=forward) as resp,
        ):
            metrics.webhook_deliveries.labels(event, "forwarded").inc()
            return web.Response(status=resp.status, text=await resp.text())
    except (aiohttp.ClientError, TimeoutError):
        metrics.webhook_deliveries.labels(event, "forward_failed").inc()
        return web.Response(status=503, text="acting listener unreachable\n")
