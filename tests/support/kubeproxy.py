"""A Kubernetes fault proxy for the chaos suite (issue 12, scenario 2, long form).

An aiohttp reverse proxy in front of the session's kube-apiserver. The operator's kubeconfig
points at it (`KubeProxy.kubeconfig`: the admin kubeconfig with the proxy as its server, served
with the apiserver's own certificate so TLS verification holds); it forwards every request
upstream with the admin client certificate, streaming watches line by line. On demand it:

- expires the open watches (`expire_watches`): each gets an ERROR event with a 410 Gone
  Status, as the apiserver sends when a watch's resourceVersion was compacted away, and its
  stream ends; or, with `gone=False`, the stream is just closed (a load balancer's idle cut);
- answers 409 Conflict to a share of status writes (`conflict_share`, seeded), as the
  apiserver does when another writer changed the object meanwhile.

Nothing is mocked: every other answer is the real apiserver's. While the apiserver is away
(a restart), requests get 503 with a Status body, as a load balancer in front of it answers.

Layer: test support. Loopback network I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from runnerfleet.localcluster import LocalCluster

# Hop-by-hop headers (RFC 9110 7.6.1) and those aiohttp sets itself.
_DROPPED = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
            "host", "content-length", "proxy-connection"}  # fmt: skip
_END = object()  # the watch's stream ended (upstream closed or a fault)


def is_watch(query: dict[str, str]) -> bool:
    """A list request with watch=true/1 (how every client of ours asks for a watch)."""
    return query.get("watch", "").lower() in ("true", "1")


def is_status_write(method: str, path: str) -> bool:
    """PUT or PATCH of an object's status subresource."""
    return method in ("PUT", "PATCH") and path.rstrip("/").endswith("/status")


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    """A metav1.Status as the apiserver writes it."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}  # fmt: skip


def conflict_body(path: str) -> dict[str, Any]:
    """The apiserver's 409 on a stale write, naming the object of `path`
    (.../<plural>/<name>/status)."""
    parts = path.rstrip("/").split("/")
    plural, name = parts[-3], parts[-2]
    group = parts[2] if parts[1] == "apis" else ""
    what = f"{plural}.{group}" if group else plural
    body = status_body(409, "Conflict", f'Operation cannot be fulfilled on {what} "{name}": the '
                       "object has been modified; please apply your changes to the latest "
                       "version and try again")  # fmt: skip
    body["details"] = {"name": name, "group": group, "kind": plural}
    return body


def gone_event() -> bytes:
    """The ERROR event the apiserver sends on a watch whose resourceVersion is too old."""
    status = status_body(410, "Expired", "too old resource version (expired by the chaos proxy)")
    return json.dumps({"type": "ERROR", "object": status}).encode() + b"\n"


@dataclass
class Counters:
    requests: int = 0
    watches: int = 0  # opened
    expired: int = 0  # watches ended by `expire_watches`
    conflicts: int = 0  # 409s answered instead of forwarding a status write
    unavailable: int = 0  # 503s while the apiserver was away


@dataclass
class KubeProxy:
    """Start with `await start()`, point a client at `kubeconfig`, `await stop()` at the end."""

    cluster: LocalCluster
    work_dir: Path
    seed: int = 0
    conflict_share: float = 0.0  # of status writes answered 409 instead of forwarded
    counters: Counters = field(default_factory=Counters)
    port: int = 0
    _watches: dict[int, asyncio.Queue[Any]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)  # noqa: S311 (a replayable fault schedule)

    @property
    def kubeconfig(self) -> Path:
        return self.work_dir / "proxy.kubeconfig"

    async def start(self) -> None:
        pki = self.cluster.state_dir / "pki"
        upstream = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        upstream.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=upstream, limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            auto_decompress=False,
        )
        serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        serving.load_cert_chain(str(pki / "apiserver.crt"), str(pki / "apiserver.key"))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=serving)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._write_kubeconfig()

    async def stop(self) -> None:
        self.expire_watches(gone=False)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def expire_watches(self, share: float = 1.0, *, gone: bool = True) -> int:
        """End `share` of the open watches: with an ERROR 410 Gone event, or (`gone=False`)
        by closing the stream. Returns how many."""
        chosen = [q for q in self._watches.values() if self._rng.random() < share]
        for queue in chosen:
            queue.put_nowait(gone_event() if gone else b"")
            queue.put_nowait(_END)
        self.counters.expired += len(chosen)
        return len(chosen)

    def _write_kubeconfig(self) -> None:
        config = yaml.safe_load(self.cluster.kubeconfig.read_text())
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{self.port}"
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    # ------------------------------------------------------------------ forwarding
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.counters.requests += 1
        if (
            self.conflict_share
            and is_status_write(request.method, request.path)
            and self._rng.random() < self.conflict_share
        ):
            self.counters.conflicts += 1
            return web.json_response(conflict_body(request.path), status=409)
        assert self._session is not None
        url = f"{self.cluster.info.server}{request.rel_url}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED}
        try:
            # No body at all when there is none: an empty one comes with a content type
            # (octet-stream) that the apiserver refuses with 415 on a GET.
            body = await request.read() if request.body_exists else None
            upstream = await self._session.request(
                request.method, url, headers=headers, data=body or None
            )
        except (aiohttp.ClientError, OSError) as err:
            self.counters.unavailable += 1
            status = status_body(503, "ServiceUnavailable", f"apiserver unreachable: {err}")
            return web.json_response(status, status=503, headers={"Retry-After": "1"})
        async with upstream:
            if is_watch(dict(request.query)) and upstream.status == 200:
                return await self._relay_watch(request, upstream)
            return web.Response(
                status=upstream.status, body=await upstream.read(), headers=_kept(upstream)
            )

    async def _relay_watch(
        self, request: web.Request, upstream: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        """Stream the watch's events line by line until upstream ends it or a fault does."""
        self.counters.watches += 1
        response = web.StreamResponse(status=upstream.status, headers=_kept(upstream))
        await response.prepare(request)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        key = id(queue)
        self._watches[key] = queue
        reader = asyncio.create_task(_pump(upstream, queue))
        try:
            while (item := await queue.get()) is not _END:
                if item:
                    await response.write(item)
        except (ConnectionResetError, aiohttp.ClientError):
            pass  # the client went away
        finally:
            self._watches.pop(key, None)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        with contextlib.suppress(ConnectionResetError, aiohttp.ClientError):
            await response.write_eof()
        return response


async def _pump(upstream: aiohttp.ClientResponse, queue: asyncio.Queue[Any]) -> None:
    """Upstream's watch lines into `queue`, then _END (also when the apiserver goes away)."""
    try:
        async for line in upstream.content:
            queue.put_nowait(line)
    except (aiohttp.ClientError, OSError):
        pass  # the apiserver went away mid-stream: the client sees its watch end
    finally:
        queue.put_nowait(_END)


def _kept(upstream: aiohttp.ClientResponse) -> dict[str, str]:
    return {k: v for k, v in upstream.headers.items() if k.lower() not in _DROPPED}
