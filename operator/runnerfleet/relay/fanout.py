"""The relay's moving parts: who may receive a delivery, with which secret, and the forward.

- `Directory`: every TeamListener (all namespaces) and every listener Lease's holder, kept
  by two watches (`Informer`), so a delivery costs no apiserver request for routing.
- `TeamSecrets`: each team's webhook secret, read on first use and kept 5 minutes (a missing
  Secret 30 s), so a delivery to 100 teams is not 100 GETs; a listener that answers 401 (the
  team rotated its secret) drops the cached copy.
- `forward_one`: POST the raw body to one acting listener, re-signed with the team's secret,
  GitHub's own headers kept; one attempt with a short timeout (a miss is counted, and the
  team's next poll reconciles: retrying in a loop would only pile up behind a dead replica).

Secrets never reach a log line, an exception message or a repr.

Layer: relay (an adapter process like the listener). I/O through the gateways (Kubernetes)
and aiohttp (the listeners' webhook servers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from runnerfleet import conventions as c
from runnerfleet.gateways.informer import Informer
from runnerfleet.gateways.kubernetes import KubeError, KubeGateway, NotFoundError
from runnerfleet.listener.signature import sign
from runnerfleet.planning.webhook_routes import (
    WEBHOOK_SECRET_KEY,
    Delivery,
    Forward,
    Routes,
    route,
)

log = logging.getLogger("runnerfleet.relay")

SECRET_TTL_SECONDS = 300.0  # a rotated team secret is used within 5 min (or at the next 401)
MISSING_TTL_SECONDS = 30.0  # a team whose Secret is missing is asked again after 30 s
FORWARD_TIMEOUT_SECONDS = 5.0  # GitHub waits 10 s for the relay's answer
# Listener Leases carry c.listener_lease_labels: the apiserver sends only those, not every
# controller's and kubelet's Lease renewal in the cluster.
LEASE_SUFFIX = c.listener_lease_name("")  # "<tl>-listener"

# Forward results (the `result` label of runnerfleet_relay_forwards_total).
OK, REJECTED, ERROR, UNREACHABLE = "ok", "rejected", "error", "unreachable"
NO_SECRET, SECRET_ERROR = "no_secret", "secret_error"
SKIPS = (NO_SECRET,)  # a team skipped (counted apart from failures in the answer)

Key = tuple[str, str]  # (namespace, name)


class Directory:
    """TeamListeners and their acting replicas, from two watches; `routes` reads memory only."""

    def __init__(self, kube: KubeGateway) -> None:
        self.team_listeners: dict[Key, dict[str, Any]] = {}
        self.holders: dict[Key, str | None] = {}  # TeamListener key -> Lease holder identity
        self._listeners = Informer(kube, c.TEAM_LISTENER_PLURAL, None, "", self._on_listener)
        self._leases = Informer(kube, "leases", None, c.LISTENER_LEASE_SELECTOR, self._on_lease)

    def start(self) -> None:
        self._listeners.start()
        self._leases.start()

    async def stop(self) -> None:
        await self._listeners.stop()
        await self._leases.stop()

    @property
    def synced(self) -> bool:
        return self._listeners.synced.is_set() and self._leases.synced.is_set()

    async def wait_synced(self) -> None:
        await self._listeners.synced.wait()
        await self._leases.synced.wait()

    def routes(self, delivery: Delivery) -> Routes:
        return route(delivery, self.team_listeners.values(), self.holders)

    # The informer calls these for every change; a deleted object is no longer in its cache.
    def _on_listener(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        current = self._listeners.get(*key)
        if current is None:
            self.team_listeners.pop(key, None)
        else:
            self.team_listeners[key] = current

    def _on_lease(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if not meta["name"].endswith(LEASE_SUFFIX):
            return
        key = (meta["namespace"], meta["name"].removesuffix(LEASE_SUFFIX))
        current = self._leases.get(meta["namespace"], meta["name"])
        if current is None:
            self.holders.pop(key, None)
        else:
            self.holders[key] = (current.get("spec") or {}).get("holderIdentity")


@dataclass
class TeamSecrets:
    """Team webhook secrets by (namespace, Secret name), cached; None when the Secret or its
    key is missing. One read at a time per Secret: concurrent deliveries share it."""

    read: Callable[[str, str], Awaitable[dict[str, str]]]  # KubeGateway.read_secret_data
    clock: Callable[[], float] = time.monotonic
    ttl: float = SECRET_TTL_SECONDS
    missing_ttl: float = MISSING_TTL_SECONDS
    reads: int = 0
    _cache: dict[Key, tuple[bytes | None, float]] = field(default_factory=dict, repr=False)
    _reading: dict[Key, asyncio.Task[bytes | None]] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"TeamSecrets({len(self._cache)} cached)"

    async def get(self, namespace: str, name: str) -> bytes | None:
        """The secret's bytes; raises KubeError (not cached) if the apiserver failed."""
        key = (namespace, name)
        hit = self._cache.get(key)
        if hit is not None and hit[1] > self.clock():
            return hit[0]
        task = self._reading.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(key))
            self._reading[key] = task
            task.add_done_callback(lambda _: self._reading.pop(key, None))
        return await asyncio.shield(task)

    def drop(self, namespace: str, name: str) -> None:
        self._cache.pop((namespace, name), None)

    async def _fetch(self, key: Key) -> bytes | None:
        self.reads += 1
        try:
            data = await self.read(*key)
        except NotFoundError:
            data = {}
        value = data.get(WEBHOOK_SECRET_KEY)
        secret = value.encode() if value else None
        now = self.clock()
        if len(self._cache) > 4096:  # teams come and go: drop what expired
            self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
        self._cache[key] = (secret, now + (self.ttl if secret else self.missing_ttl))
        return secret


# GitHub's headers travel with the body; its signatures do not (they are the installation
# secret's, which the team's listener does not know).
_KEPT = ("content-type", "user-agent")  # compared lower-case: HTTP/2 sends them so


def resign(headers: Mapping[str, str], raw: bytes, secret: bytes) -> dict[str, str]:
    """The headers to forward a delivery with: GitHub's (`X-GitHub-Event`,
    `X-GitHub-Delivery`, `X-GitHub-Hook-*`...) and the content type kept, signed anew with
    the team's secret over the unchanged raw body."""
    out = {
        k: v for k, v in headers.items()
        if k.lower() in _KEPT or k.lower().startswith("x-github-")
    }  # fmt: skip
    out["X-Hub-Signature-256"] = sign(secret, raw)
    return out


async def forward_one(
    session: aiohttp.ClientSession,
    secrets: TeamSecrets,
    target: Forward,
    raw: bytes,
    headers: Mapping[str, str],
    within: float = FORWARD_TIMEOUT_SECONDS,
) -> str:
    """Send one forward, once, for at most `within` seconds; returns its result (OK,
    REJECTED, ERROR, UNREACHABLE, NO_SECRET, SECRET_ERROR). Failures are logged by team and
    address only."""
    team = f"{target.namespace}/{target.team_listener}"
    try:
        async with asyncio.timeout(within):  # a slow apiserver must not hold up GitHub's answer
            secret = await secrets.get(target.namespace, target.secret_name)
    except (KubeError, TimeoutError) as err:
        log.warning("relay: team %s skipped: its webhook Secret could not be read (%s)",
                    team, type(err).__name__)  # fmt: skip
        return SECRET_ERROR
    if secret is None:
        log.warning("relay: team %s skipped: Secret %s has no %s", team, target.secret_name,
                    WEBHOOK_SECRET_KEY)  # fmt: skip
        return NO_SECRET
    url = f"http://{target.address}/webhook"
    try:
        async with session.post(
            url, data=raw, headers=resign(headers, raw, secret),
            timeout=aiohttp.ClientTimeout(total=within),
        ) as resp:  # fmt: skip
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as err:
        log.warning("relay: forward to team %s at %s failed: %s", team, target.address,
                    type(err).__name__)  # fmt: skip
        return UNREACHABLE
    if 200 <= status < 300:
        return OK
    if status == 401:  # the team's listener holds another secret now: read it again next time
        secrets.drop(target.namespace, target.secret_name)
        log.warning("relay: team %s at %s refused the signature (401)", team, target.address)
        return REJECTED
    log.warning("relay: team %s at %s answered %d", team, target.address, status)
    return ERROR
