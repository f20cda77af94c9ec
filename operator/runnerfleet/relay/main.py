"""`runnerfleet webhook-relay`: one organisation (or App) webhook for every team's listener.

GitHub posts each delivery once, to the relay's Service; the relay checks it against the
**installation's** webhook secret and sends each valid `workflow_job` delivery to every
TeamListener that has webhooks enabled and watches the delivery's repository
(planning/webhook_routes.py), at that team's acting replica, signed with that team's own
secret. It is stateless: any replica serves any delivery, no leader election.

- `POST /webhook` (webhook port): 401 for a bad or missing `X-Hub-Signature-256` (nothing
  forwarded), 200 for `ping`, 202 for other events (ignored, counted), 200 after the fan-out
  of a `workflow_job` with counts only (`{"forwarded": n, "failed": n, "skipped": n}`: no
  other team's name reaches GitHub's delivery log). 503 until the TeamListener and Lease
  watches have synced and the installation secret has been read.
- `GET /healthz` (webhook port): 200 once ready (the readiness probe); the metrics port
  serves `/metrics` and an always-200 `/healthz` (liveness).

The installation secret is read at start and again whenever its Secret changes (watched by
name); it is never logged.

Layer: relay (an adapter process, like the listener). I/O: HTTP servers, the gateways.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter as Tally
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from runnerfleet.gateways.informer import Informer
from runnerfleet.gateways.kubernetes import KubeError, KubeGateway, NotFoundError, connect
from runnerfleet.listener.signature import verify
from runnerfleet.metrics import serve_metrics
from runnerfleet.planning.webhook_routes import Routes, delivery_of
from runnerfleet.relay.fanout import (
    FORWARD_TIMEOUT_SECONDS,
    OK,
    SKIPS,
    Directory,
    TeamSecrets,
    forward_one,
)
from runnerfleet.tasks import until_signalled

log = logging.getLogger("runnerfleet.relay")


@dataclass
class RelayOptions:
    secret_namespace: str  # where the installation's webhook Secret is (the relay's own)
    secret_name: str
    secret_key: str
    kubeconfig: str | None
    webhook_port: int
    metrics_port: int
    forward_timeout: float = FORWARD_TIMEOUT_SECONDS


@dataclass
class RelayMetrics:
    registry: CollectorRegistry
    deliveries: Counter  # by event, result
    forwards: Counter  # by result (ok, rejected, error, unreachable, no_holder, no_secret...)
    team_listeners: Gauge  # TeamListeners known (all, whatever their webhook setting)

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> RelayMetrics:
        r = registry or CollectorRegistry()
        return cls(
            registry=r,
            deliveries=Counter("runnerfleet_relay_deliveries", "Deliveries received",
                               ["event", "result"], registry=r),
            forwards=Counter("runnerfleet_relay_forwards", "Forwards to team listeners, "
                             "and teams skipped, by result", ["result"], registry=r),
            team_listeners=Gauge("runnerfleet_relay_team_listeners",
                                 "TeamListeners the relay knows", registry=r),
        )  # fmt: skip


@dataclass
class Relay:
    """The delivery handler and what it reads: the watched directory, the team secrets and
    the installation secret (None until read)."""

    directory: Directory
    secrets: TeamSecrets
    metrics: RelayMetrics
    session: aiohttp.ClientSession
    forward_timeout: float = FORWARD_TIMEOUT_SECONDS
    installation_secret: bytes | None = field(default=None, repr=False)

    @property
    def ready(self) -> bool:
        return self.installation_secret is not None and self.directory.synced

    async def webhook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        secret = self.installation_secret
        if secret is None or not self.directory.synced:
            self.metrics.deliveries.labels("-", "not_ready").inc()
            return web.Response(status=503, text="relay not ready\n")
        if not verify(secret, raw, request.headers.get("X-Hub-Signature-256")):
            # The event name of an unverified request is not trusted (nor used as a label).
            self.metrics.deliveries.labels("-", "unauthorized").inc()
            return web.Response(status=401, text="bad or missing X-Hub-Signature-256\n")
        event = request.headers.get("X-GitHub-Event", "unknown")
        if event == "ping":
            self.metrics.deliveries.labels(event, "ping").inc()
            return web.Response(status=200, text="pong\n")
        if event != "workflow_job":
            self.metrics.deliveries.labels(event, "ignored").inc()
            return web.Response(status=202, text="ignored\n")
        try:
            payload = json.loads(raw)
            delivery = delivery_of(payload) if isinstance(payload, dict) else None
        except ValueError:
            delivery = None
        if delivery is None:
            self.metrics.deliveries.labels(event, "malformed").inc()
            return web.Response(status=400, text="not a workflow_job payload\n")
        counts = await self.fan_out(self.directory.routes(delivery), raw, request.headers)
        self.metrics.deliveries.labels(event, "accepted").inc()
        return web.json_response(counts)

    async def fan_out(self, routes: Routes, raw: bytes, headers: Any) -> dict[str, int]:
        """Every forward at once, each tried once; the counts for GitHub's delivery log."""
        results = await asyncio.gather(*(
            forward_one(self.session, self.secrets, f, raw, headers, self.forward_timeout)
            for f in routes.forwards
        ))  # fmt: skip
        sent = Tally(results)
        for result, n in (sent + Tally(s.reason for s in routes.skipped)).items():
            self.metrics.forwards.labels(result).inc(n)
        skipped = sum(n for result, n in sent.items() if result in SKIPS)
        return {
            "forwarded": sent[OK],
            "failed": len(results) - sent[OK] - skipped,
            "skipped": len(routes.skipped) + skipped,
        }

    async def healthz(self, request: web.Request) -> web.Response:
        if not self.ready:
            return web.Response(status=503, text="not ready\n")
        return web.Response(text="ok\n")


async def run(options: RelayOptions) -> None:
    """`serve` until SIGTERM or SIGINT."""
    await until_signalled(serve(options))


async def serve(options: RelayOptions) -> None:
    api = await connect(options.kubeconfig)
    kube = KubeGateway(api)
    metrics = RelayMetrics.create()
    directory = Directory(kube)
    directory.start()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))
    relay = Relay(directory, TeamSecrets(kube.read_secret_data), metrics, session,
                  options.forward_timeout)  # fmt: skip
    watcher = _watch_installation_secret(kube, relay, options)
    runners = [await serve_metrics(metrics.registry, options.metrics_port)]
    runners.append(await _serve_webhooks(relay, options.webhook_port))
    log.info("webhook relay up: installation secret %s/%s, webhooks on :%d",
             options.secret_namespace, options.secret_name, options.webhook_port)  # fmt: skip
    try:
        await _load_installation_secret(kube, relay, options)
        while True:  # the gauge is the only periodic work; routing reads the watches
            metrics.team_listeners.set(len(directory.team_listeners))
            await asyncio.sleep(15)
    finally:
        await watcher.stop()
        await directory.stop()
        for runner in runners:
            await runner.cleanup()
        await session.close()
        await api.close()


def _watch_installation_secret(kube: KubeGateway, relay: Relay, options: RelayOptions) -> Informer:
    """Re-read the installation secret whenever its Secret changes (the watch carries no
    data: informers keep Secrets without it)."""
    reloads: set[asyncio.Task[None]] = set()

    def changed(_: dict[str, Any]) -> None:
        task = asyncio.create_task(_load_installation_secret(kube, relay, options))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    watcher = Informer(kube, "secrets", options.secret_namespace, "", changed,
                       field_selector=f"metadata.name={options.secret_name}")  # fmt: skip
    watcher.start()
    return watcher


async def _load_installation_secret(kube: KubeGateway, relay: Relay, options: RelayOptions) -> None:
    """Read the installation secret; a missing Secret or key leaves the relay unready (503,
    so GitHub records failed deliveries and the teams' polls carry on)."""
    where = f"{options.secret_namespace}/{options.secret_name}"
    try:
        data = await kube.read_secret_data(options.secret_namespace, options.secret_name)
    except NotFoundError:
        data = {}
    except KubeError as err:
        log.warning("relay: reading Secret %s failed (%s); keeping the secret as it was",
                    where, type(err).__name__)  # fmt: skip
        return
    value = data.get(options.secret_key)
    if not value:
        log.error("relay: Secret %s has no key %s: refusing deliveries (503)", where,
                  options.secret_key)  # fmt: skip
        relay.installation_secret = None
        return
    changed = relay.installation_secret not in (None, value.encode())
    relay.installation_secret = value.encode()
    log.info("relay: installation secret %s from Secret %s", "reloaded" if changed else "read",
             where)  # fmt: skip


async def _serve_webhooks(relay: Relay, port: int) -> web.AppRunner:
    app = web.Application()
    app.router.add_post("/webhook", relay.webhook)
    app.router.add_get("/healthz", relay.healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104 (the pod's own port)
    return runner
