"""One registration token for the whole fleet: the operator fetches the installation's runner
registration token once and hands it to the team's listener through the listener's Secret; the
listener trades it for its own Actions-service admin token instead of fetching another (each
fetch is a REST request counted against the installation's hourly limit)."""

from __future__ import annotations

import asyncio
import base64

from kubernetes_asyncio import client

from runnerfleet import conventions as c
from tests.e2e.test_scale_set_protocol import (
    TEAM_A,
    _fast,
    _github_scale_set,
    _listening,
    _protocol_set,
    _team_listener,
)
from tests.support.fleet import Fleet
from tests.support.kube import wait_for


def _registration_tokens(f: Fleet) -> int:
    """Registration-token requests GitHub counted against the rate limit (any scope)."""
    return sum(n for e, n in f.github.counted_by_endpoint.items() if "registration-token" in e)


def _admin_tokens(f: Fleet) -> int:
    """Admin tokens handed out (successful runner-registration exchanges)."""
    return sum(
        n for (method, route, status), n in f.github.actions.requests.items()
        if method == "POST" and route.endswith("runner-registration") and status == 200
    )  # fmt: skip


async def test_operator_and_listener_share_one_registration_token(running_fleet: Fleet) -> None:
    f = running_fleet
    _fast(f.github)
    before = _registration_tokens(f)
    await f.apply_scale_set(_protocol_set(f, min_runners=0, max_runners=3))
    registered = await _github_scale_set(f)
    await _team_listener(f)
    await _listening(f, registered.id)  # the listener holds an admin token and a session

    core = client.CoreV1Api(f.kube)
    name = c.listener_registration_secret_name("team-a")
    secret = await core.read_namespaced_secret(name, f.namespace)
    assert secret.metadata.owner_references[0].kind == c.TEAM_LISTENER_KIND
    assert c.ANNOTATION_REGISTRATION_EXPIRES in secret.metadata.annotations
    shared = base64.b64decode(secret.data[c.SECRET_KEY_REGISTRATION_TOKEN]).decode()
    assert shared in f.github.actions.registration_tokens, "a token GitHub issued"

    job = f.github.enqueue_job("acme/app", TEAM_A, 1.0)
    await wait_for(
        lambda: asyncio.sleep(0, job.status), lambda s: s == "completed",
        what="the job to complete", within=60,
    )  # fmt: skip
    tokens, admins = _registration_tokens(f) - before, _admin_tokens(f)
    print(f"registration-token requests counted: {tokens}; admin tokens issued: {admins}")
    assert admins >= 2, "the operator and the listener each hold an admin token"
    assert tokens == 1, "one registration token for the operator and the listener together"
    listener = await f.listener_process()
    log = listener.log_path.read_text()
    assert "fetching one from GitHub" not in log, "the listener never fell back"
    assert shared not in log
