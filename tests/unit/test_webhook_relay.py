"""The webhook relay's process parts without a cluster: re-signing (checked with the
listener's own verifier), the team-secret cache, and the `/webhook` handler fanning out to
real HTTP servers on 127.0.0.1 that stand in for team listeners (the Kubernetes watches
replaced by TeamListener bodies and Lease holders)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from runnerfleet.gateways.kubernetes import KubeUnavailableError, NotFoundError
from runnerfleet.listener.signature import sign, verify
from runnerfleet.planning.webhook_routes import Delivery, Routes, route
from runnerfleet.relay.fanout import TeamSecrets, resign
from runnerfleet.relay.main import Relay, RelayMetrics
from tests.unit.test_webhook_relay_routes import tl

INSTALLATION = b"installation secret"
BODY = json.dumps({
    "action": "queued", "repository": {"full_name": "acme/app"},
    "workflow_job": {"id": 7, "run_id": 3, "labels": ["linux"], "status": "queued"},
}).encode()  # fmt: skip
GITHUB_HEADERS = {
    "Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/abc",
    "X-GitHub-Event": "workflow_job", "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab",
    "X-GitHub-Hook-ID": "292430182", "X-GitHub-Hook-Installation-Target-Type": "organization",
}  # fmt: skip


def test_resigned_headers_verify_with_the_teams_secret_only() -> None:
    incoming = {
        **GITHUB_HEADERS, "X-Hub-Signature-256": sign(INSTALLATION, BODY),
        "X-Hub-Signature": "sha1=installation", "Authorization": "x", "Host": "relay",
    }  # fmt: skip
    out = resign(incoming, BODY, b"team-a secret")
    assert verify(b"team-a secret", BODY, out["X-Hub-Signature-256"])
    assert not verify(INSTALLATION, BODY, out["X-Hub-Signature-256"])
    assert not verify(b"team-b secret", BODY, out["X-Hub-Signature-256"])
    assert {k: v for k, v in out.items() if k != "X-Hub-Signature-256"} == GITHUB_HEADERS
    lower = resign({k.lower(): v for k, v in incoming.items()}, BODY, b"team-a secret")
    assert sorted(lower) == sorted([*(k.lower() for k in GITHUB_HEADERS), "X-Hub-Signature-256"])


@dataclass
class SecretStore:
    """What the apiserver holds: (namespace, name) -> data; counts reads."""

    data: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    reads: int = 0
    fail: bool = False

    async def read(self, namespace: str, name: str) -> dict[str, str]:
        self.reads += 1
        await asyncio.sleep(0)
        if self.fail:
            raise KubeUnavailableError("apiserver down")
        if (namespace, name) not in self.data:
            raise NotFoundError(f"Secret {namespace}/{name} not found", 404)
        return self.data[(namespace, name)]


async def test_team_secrets_are_read_once_then_cached_for_their_ttl() -> None:
    store = SecretStore({("a", "hook"): {"github_webhook_secret": "s1"}})
    now = [0.0]
    secrets = TeamSecrets(store.read, clock=lambda: now[0])
    got = await asyncio.gather(*(secrets.get("a", "hook") for _ in range(10)))
    assert got == [b"s1"] * 10
    assert store.reads == 1  # concurrent first uses share one read
    store.data[("a", "hook")] = {"github_webhook_secret": "s2"}
    now[0] = 299.0
    assert await secrets.get("a", "hook") == b"s1"
    now[0] = 301.0
    assert await secrets.get("a", "hook") == b"s2"
    assert store.reads == 2
    secrets.drop("a", "hook")  # a listener refused the signature: read again at once
    assert await secrets.get("a", "hook") == b"s2"
    assert store.reads == 3
    assert "s2" not in repr(secrets)


async def test_missing_secret_or_key_is_none_and_asked_again_after_30s() -> None:
    store = SecretStore({("a", "nokey"): {"other": "x"}})
    now = [0.0]
    secrets = TeamSecrets(store.read, clock=lambda: now[0])
    assert await secrets.get("a", "absent") is None
    assert await secrets.get("a", "nokey") is None
    assert await secrets.get("a", "absent") is None
    assert store.reads == 2
    store.data[("a", "absent")] = {"github_webhook_secret": "late"}
    now[0] = 31.0
    assert await secrets.get("a", "absent") == b"late"
    store.fail = True
    with pytest.raises(KubeUnavailableError):
        await secrets.get("b", "hook")  # an apiserver failure is not cached as "missing"


# ---------------------------------------------------------------- the handler, end to end
@dataclass
class TeamServer:
    """A team listener's webhook endpoint: verifies as the listener does, records what came."""

    secret: bytes
    received: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)

    async def webhook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if not verify(self.secret, raw, request.headers.get("X-Hub-Signature-256")):
            return web.Response(status=401)
        self.received.append((raw, dict(request.headers)))
        return web.Response(text="ok\n")


@dataclass
class StaticDirectory:
    """The relay's Directory with the watches replaced by fixed bodies and holders."""

    bodies: list[dict[str, Any]]
    holders: dict[tuple[str, str], str | None]
    synced: bool = True

    def routes(self, delivery: Delivery) -> Routes:
        return route(delivery, self.bodies, self.holders)


@dataclass
class Setup:
    relay: Relay
    url: str
    teams: dict[str, TeamServer]
    store: SecretStore
    session: aiohttp.ClientSession

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        async with self.session.post(self.url, data=body, headers=headers) as resp:
            return resp.status, await resp.text()

    def count(self, name: str, **labels: str) -> float:
        value = self.relay.metrics.registry.get_sample_value(f"{name}_total", labels)
        return value or 0.0


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    """Team a and b watch acme/app (different secrets); c watches acme/lib; d watches
    acme/app but its replica is gone; e has no Secret; f holds no Lease."""
    teams = {n: TeamServer(f"{n} secret".encode()) for n in ("a", "b", "c", "e")}
    servers = {}
    for name, team in teams.items():
        app = web.Application()
        app.router.add_post("/webhook", team.webhook)
        servers[name] = TestServer(app, host="127.0.0.1")
        await servers[name].start_server()
    store = SecretStore({
        (n, f"team-{n}-hook"): {"github_webhook_secret": f"{n} secret"}
        for n in ("a", "b", "c", "d")
    })  # fmt: skip
    bodies = [tl(f"team-{n}", n) for n in "abdef"]
    bodies.append(tl("team-c", "c", repositories={"names": ["lib"]}))
    holders: dict[tuple[str, str], str | None] = {
        (n, f"team-{n}"): f"pod@127.0.0.1:{servers[n].port}" for n in ("a", "b", "c", "e")
    }
    holders[("d", "team-d")] = "pod@127.0.0.1:1"  # nothing listens there
    session = aiohttp.ClientSession()
    relay = Relay(StaticDirectory(bodies, holders), TeamSecrets(store.read), RelayMetrics.create(),  # type: ignore[arg-type]
                  session, forward_timeout=2.0, installation_secret=INSTALLATION)  # fmt: skip
    app = web.Application()
    app.router.add_post("/webhook", relay.webhook)
    front = TestServer(app, host="127.0.0.1")
    await front.start_server()
    try:
        yield Setup(relay, f"http://127.0.0.1:{front.port}/webhook", teams, store, session)
    finally:
        await session.close()
        await front.close()
        for server in servers.values():
            await server.close()


async def test_a_signed_delivery_reaches_each_watching_team_resigned(setup: Setup) -> None:
    headers = {**GITHUB_HEADERS, "X-Hub-Signature-256": sign(INSTALLATION, BODY)}
    status, text = await setup.post(BODY, headers)
    assert status == 200
    # a and b got it; d's replica is unreachable; e has no Secret and f no holder (skipped).
    assert json.loads(text) == {"forwarded": 2, "failed": 1, "skipped": 2}
    for name in ("a", "b"):
        [(raw, got)] = setup.teams[name].received
        assert raw == BODY
        assert got["X-GitHub-Delivery"] == GITHUB_HEADERS["X-GitHub-Delivery"]
        assert got["X-GitHub-Event"] == "workflow_job"
        assert verify(f"{name} secret".encode(), raw, got["X-Hub-Signature-256"])
    assert setup.teams["c"].received == []
    assert setup.teams["e"].received == []
    assert "team-" not in text  # no other team's name reaches GitHub's delivery log
    m = "runnerfleet_relay_forwards"
    assert setup.count(m, result="ok") == 2
    assert setup.count(m, result="unreachable") == 1
    assert setup.count(m, result="no_secret") == 1
    assert setup.count(m, result="no_holder") == 1
    assert setup.count("runnerfleet_relay_deliveries", event="workflow_job", result="accepted") == 1


async def test_bad_or_missing_signature_is_401_and_forwards_nothing(setup: Setup) -> None:
    for bad in ({}, {"X-Hub-Signature-256": sign(b"a secret", BODY)},
                {"X-Hub-Signature-256": sign(INSTALLATION, BODY + b" ")}):  # fmt: skip
        status, _ = await setup.post(BODY, {**GITHUB_HEADERS, **bad})
        assert status == 401
    assert all(t.received == [] for t in setup.teams.values())
    assert setup.store.reads == 0
    assert setup.count("runnerfleet_relay_deliveries", event="-", result="unauthorized") == 3


async def test_ping_other_events_and_malformed_bodies(setup: Setup) -> None:
    def signed(event: str, body: bytes) -> dict[str, str]:
        return {"X-GitHub-Event": event, "X-Hub-Signature-256": sign(INSTALLATION, body)}

    assert (await setup.post(b"{}", signed("ping", b"{}")))[0] == 200
    assert (await setup.post(BODY, signed("push", BODY)))[0] == 202
    assert (await setup.post(b"nope", signed("workflow_job", b"nope")))[0] == 400
    assert (await setup.post(b"{}", signed("workflow_job", b"{}")))[0] == 400
    assert all(t.received == [] for t in setup.teams.values())
    assert setup.count("runnerfleet_relay_deliveries", event="push", result="ignored") == 1
    assert (
        setup.count("runnerfleet_relay_deliveries", event="workflow_job", result="malformed") == 2
    )


async def test_a_team_that_rotated_its_secret_is_read_again_after_its_401(setup: Setup) -> None:
    headers = {**GITHUB_HEADERS, "X-Hub-Signature-256": sign(INSTALLATION, BODY)}
    await setup.post(BODY, headers)
    setup.teams["a"].secret = b"rotated"
    setup.store.data[("a", "team-a-hook")] = {"github_webhook_secret": "rotated"}
    _, text = await setup.post(BODY, headers)
    assert json.loads(text)["forwarded"] == 1  # the cached old secret: a refused it
    assert setup.count("runnerfleet_relay_forwards", result="rejected") == 1
    _, text = await setup.post(BODY, headers)
    assert json.loads(text)["forwarded"] == 2
    assert len(setup.teams["a"].received) == 2


async def test_not_ready_until_the_installation_secret_is_read(setup: Setup) -> None:
    setup.relay.installation_secret = None
    headers = {**GITHUB_HEADERS, "X-Hub-Signature-256": sign(INSTALLATION, BODY)}
    assert (await setup.post(BODY, headers))[0] == 503
    assert all(t.received == [] for t in setup.teams.values())
