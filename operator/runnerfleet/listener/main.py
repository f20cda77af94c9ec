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
import signal
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from runnerfleet.gateways.actions_service import ActionsServiceClient
from runnerfleet.gateways.github import GitHubGateway
from runnerfleet.gateways.kubernetes import KubeGateway, connect
from runnerfleet.listener.signature import verify
from runnerfleet.metrics import ListenerMetrics, serve_metrics
from runnerfleet.models.github import GitHubCredentials, parse_config_url
from runnerfleet.models.team_listener import TeamListenerSpec
from runnerfleet.planning.polling import PollPolicy
from runnerfleet.services.listener import Listener
from runnerfleet.services.sessions import SessionManager

log = logging.getLogger("runnerfleet.listener")
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
    task = asyncio.create_task(serve(options))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def serve(options: ListenerOptions) -> None:
    api = await connect(options.kubeconfig)
    kube = KubeGateway(api)
    body = await kube.get_team_listener(options.namespace, options.name)
    spec = TeamListenerSpec.model_validate(body["spec"])
    target = parse_config_url(spec.github.config_url)
    credentials = GitHubCredentials.from_secret_data(
        spec.github.secret_ref.name, {k: os.environ[k] for k in CREDENTIAL_KEYS if k in os.environ}
    )
    metrics = ListenerMetrics.create()

    def count(endpoint: str, status: int) -> None:
        metrics.github_requests.labels(endpoint, str(status)).inc()

    github = GitHubGateway(target, credentials, on_request=count)
    listener = Listener(
        kube, github, target, options.namespace, options.name, spec, metrics,
        policy=_policy(os.environ),
    )  # fmt: skip
    # Scale sets on GitHub's scale-set protocol: one session each, in this process.
    actions = ActionsServiceClient(spec.github.config_url, github.registration_token)
    owner = os.environ.get("HOSTNAME") or f"{options.namespace}/{options.name}"
    sessions = asyncio.create_task(SessionManager(actions, listener, owner).run())
    secret = os.environ.get("RUNNERFLEET_WEBHOOK_SECRET", "").encode()
    runners = [await serve_metrics(metrics.registry, options.metrics_port)]
    if spec.webhook.enabled:
        runners.append(await _serve_webhooks(listener, metrics, secret, options.webhook_port))
    log.info("listener %s/%s up: team %s, poll every %s", options.namespace, options.name,
             spec.team, spec.poll_interval)  # fmt: skip
    try:
        while True:  # no lock: a poll and the webhooks meet only in the (synchronous) merge
            await listener.poll()
            await asyncio.sleep(listener.poll_interval)
    finally:
        sessions.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sessions  # deletes the sessions, so a successor need not wait them out
        await actions.close()
        for runner in runners:
            await runner.cleanup()
        await api.close()


def _policy(env: Mapping[str, str]) -> PollPolicy:
    """The poll schedule; RUNNERFLEET_LISTENER_READS_PER_MINUTE shares GitHub's per-endpoint
    secondary limit among listeners on one installation (default: all of it, 800)."""
    reads = env.get("RUNNERFLEET_LISTENER_READS_PER_MINUTE")
    return PollPolicy(reads_per_minute=int(reads)) if reads else PollPolicy()


async def _serve_webhooks(
    listener: Listener, metrics: ListenerMetrics, secret: bytes, port: int
) -> web.AppRunner:
    """`POST /webhook`: verify, apply to the job table, republish demand (coalesced)."""

    async def webhook(request: web.Request) -> web.Response:
        raw = await request.read()
        event = request.headers.get("X-GitHub-Event", "unknown")
        if not verify(secret, raw, request.headers.get("X-Hub-Signature-256")):
            metrics.webhook_deliveries.labels(event, "unauthorized").inc()
            return web.Response(status=401, text="bad or missing X-Hub-Signature-256\n")
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
