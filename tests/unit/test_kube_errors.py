"""The Kubernetes gateway's error mapping: what is permanent (a condition) and what is an
outage (retried)."""

from __future__ import annotations

import json

from kubernetes_asyncio.client.exceptions import ApiException

from runnerfleet.gateways.kubernetes import (
    ConflictError,
    ForbiddenError,
    InvalidError,
    KubeUnavailableError,
    map_error,
)


def _api(status: int, reason: str = "", message: str = "") -> ApiException:
    err = ApiException(status=status, reason=reason)
    err.body = json.dumps({"kind": "Status", "reason": reason, "message": message})
    return err


def test_an_object_the_apiserver_cannot_decode_is_refused_not_an_outage() -> None:
    """A listener `resources` quantity like `cpu: lots` is answered 400 (not 422)."""
    message = "quantities must match the regular expression"
    err = map_error(_api(400, "BadRequest", message), "apply Deployment x")
    assert isinstance(err, InvalidError)
    assert message in str(err)
    # kube-apiserver 1.36 answers a server-side apply it cannot convert with a 500:
    converted = ("failed to convert new object (ns/x; apps/v1, Kind=Deployment) to proper "
                 "version: unable to convert unstructured object to apps/v1, Kind=Deployment: "
                 f"{message}")  # fmt: skip
    assert isinstance(map_error(_api(500, "InternalError", converted), "apply"), InvalidError)
    assert isinstance(map_error(_api(422, "Invalid", "spec.x: bad"), "apply"), InvalidError)


def test_outages_rbac_and_conflicts_keep_their_classes() -> None:
    assert isinstance(map_error(_api(503, "ServiceUnavailable"), "get"), KubeUnavailableError)
    assert isinstance(map_error(_api(500, "InternalError"), "get"), KubeUnavailableError)
    forbidden = _api(403, "Forbidden", 'User "x" cannot create pods')
    assert isinstance(map_error(forbidden, "create"), ForbiddenError)
    assert isinstance(map_error(_api(409, "Conflict"), "update"), ConflictError)
