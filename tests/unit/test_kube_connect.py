"""The apiserver client looks the environment up once, not on every request (pure: nothing
is contacted)."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from runnerfleet.gateways.kubernetes import _resolve_proxy_once


def _api(host: str) -> ApiClient:
    cfg = client.Configuration()
    cfg.host = host
    return ApiClient(configuration=cfg)


async def test_the_session_stops_reading_the_environment_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    api = _api("https://10.0.0.1:6443")
    connector = api.rest_client.pool_manager.connector
    _resolve_proxy_once(api, "https://10.0.0.1:6443")
    session = api.rest_client.pool_manager
    assert session.trust_env is False, "aiohttp would look up proxies and netrc per request"
    assert session.connector is connector, "the configured connector (TLS, pool size) is kept"
    assert api.rest_client.proxy == "http://proxy.corp:3128", "the proxy is still honoured"
    await api.close()


async def test_no_proxy_still_bypasses_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "10.0.0.1,.svc")
    api = _api("https://10.0.0.1:6443")
    _resolve_proxy_once(api, "https://10.0.0.1:6443")
    assert not api.rest_client.proxy
    await api.close()
