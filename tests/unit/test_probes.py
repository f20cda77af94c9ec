"""The probe endpoints every runnerfleet process serves on its metrics port: `/healthz` says
the process is alive, `/readyz` says it is ready (for the operator: its runner caches are
complete, so a standby can take over at once)."""

from __future__ import annotations

import socket

import aiohttp
from prometheus_client import CollectorRegistry

from runnerfleet.metrics import serve_metrics


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _status(session: aiohttp.ClientSession, port: int, path: str) -> int:
    async with session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status


async def test_readyz_follows_the_ready_callback_and_healthz_does_not() -> None:
    ready = False
    port = _free_port()
    runner = await serve_metrics(CollectorRegistry(), port, ready=lambda: ready)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            assert await _status(session, port, "/healthz") == 200
            assert await _status(session, port, "/readyz") == 503
            ready = True
            assert await _status(session, port, "/readyz") == 200
    finally:
        await runner.cleanup()


async def test_readyz_without_a_callback_is_always_ready() -> None:
    port = _free_port()
    runner = await serve_metrics(CollectorRegistry(), port)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            assert await _status(session, port, "/readyz") == 200
    finally:
        await runner.cleanup()
