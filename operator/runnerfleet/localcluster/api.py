"""A minimal synchronous client for the local apiserver, used only to start and probe it.

The operator itself talks to Kubernetes through `runnerfleet.gateways`; this tooling needs a
handful of calls (health, nodes, service accounts) before any event loop exists, so it uses
the standard library over mutual TLS with the admin certificate.

Layer: tooling. Network I/O to 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ApiUnavailableError(Exception):
    """The apiserver could not be reached (not listening yet, or gone)."""


@dataclass(frozen=True)
class Response:
    """Status and parsed JSON body (or raw text when the body is not JSON)."""

    status: int
    body: Any


class AdminApi:
    """Talks to one local apiserver as the admin (system:masters) user."""

    def __init__(self, port: int, ca: Path, cert: Path, key: Path, timeout: float = 5.0) -> None:
        self._port = port
        self._timeout = timeout
        self._ctx = ssl.create_default_context(cafile=str(ca))
        self._ctx.load_cert_chain(str(cert), str(key))

    def request(self, method: str, path: str, body: Any = None) -> Response:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self._port, context=self._ctx, timeout=self._timeout
        )
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as err:
            raise ApiUnavailableError(f"{method} {path}: {err}") from err
        finally:
            conn.close()
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw
        return Response(resp.status, parsed)

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Response:
        return self.request("POST", path, body)


def probe_https(port: int, path: str, timeout: float = 2.0) -> int | None:
    """Status of an unauthenticated GET on a component's own HTTPS port, or None if unreachable.

    Used for controller-manager and scheduler /healthz, served with self-signed certs.
    """
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def probe_http(port: int, path: str, timeout: float = 2.0) -> tuple[int, str] | None:
    """Status and body of a plain-HTTP GET on 127.0.0.1 (etcd's /health), or None."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
