"""Scale sets on the scale-set protocol spend nothing they need not.

- Idle, they cost the apiserver no status writes: once settled (a runner idle, nothing queued,
  no listener), the operator patches no RunnerScaleSet status for 40 s (a minute in
  `make test-slow`). A write while
  nothing happens is a status field that changes on its own; the assertion names each write's
  changed fields and writer.
- A runner that ran its job is not DELETEd from the Actions service afterwards (GitHub removed
  the ephemeral registration with the job: the DELETE would be answered 404), and no
  registration is left behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from kubernetes_asyncio import client, watch

from runnerfleet import conventions as c
from tests.support.factories import make_scale_set, make_team_listener
from tests.support.fleet import Fleet
from tests.support.kube import wait_for

SETS = ["idle-a", "idle-b", "idle-c"]
# Seconds of observation: 40 s holds at least one idle resync (30 s ± 20 %) of every scale
# set, 60 s (`make test-slow`) two.
WINDOWS = [40.0, pytest.param(60.0, marks=pytest.mark.slow)]


def _protocol_set(f: Fleet, name: str, **spec: Any) -> dict[str, Any]:
    github = {"configUrl": f.config_url, "secretRef": {"name": "github-app"},
              "protocol": "scaleSet"}  # fmt: skip
    labels = ["self-hosted", "linux", name]
    spec = {"min_runners": 1, "max_runners": 3, **spec}
    return make_scale_set(
        name, config_url=f.config_url, team="team-a", labels=labels, github=github, **spec
    )


def _settled(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    ready = any(
        cond["type"] == "Ready" and cond["status"] == "True"
        for cond in status.get("conditions", [])
    )
    return ready and status.get("idle") == 1 and status.get("pending") == 0


def _reader(f: Fleet, name: str) -> Callable[[], Awaitable[dict[str, Any]]]:
    return lambda: f.scale_set(name)


def _changed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The status keys that differ, with their old and new values."""
    keys = before.keys() | after.keys()
    return {k: (before.get(k), after.get(k)) for k in sorted(keys) if before.get(k) != after.get(k)}


def _status_writer(obj: dict[str, Any]) -> str:
    entries = [m for m in obj["metadata"].get("managedFields") or [] if m.get("subresource")]
    latest: dict[str, Any] = max(entries, key=lambda m: m.get("time", ""), default={})
    return f"{latest.get('manager')} {latest.get('operation')} {latest.get('time')}"


async def _status_writes(f: Fleet, within: float) -> list[str]:
    """Every change of a scale set's status seen by a watch during `within` seconds."""
    api = client.CustomObjectsApi(f.kube)
    listed = await api.list_namespaced_custom_object(
        c.GROUP, c.VERSION, f.namespace, c.RUNNER_SCALE_SET_PLURAL
    )
    last = {o["metadata"]["name"]: o.get("status") or {} for o in listed["items"]}
    writes: list[str] = []
    deadline = time.monotonic() + within
    stream = watch.Watch()
    try:
        while (left := deadline - time.monotonic()) > 0:
            async for event in stream.stream(
                api.list_namespaced_custom_object, c.GROUP, c.VERSION, f.namespace,
                c.RUNNER_SCALE_SET_PLURAL, resource_version=listed["metadata"]["resourceVersion"],
                timeout_seconds=max(1, int(left)),
            ):  # fmt: skip
                obj = event["object"]
                name = obj["metadata"]["name"]
                status = obj.get("status") or {}
                if status != last.get(name, {}):
                    writes.append(
                        f"{name} by {_status_writer(obj)}: {_changed(last.get(name, {}), status)}"
                    )
                last[name] = status
                listed["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"]
                if time.monotonic() >= deadline:
                    break
    finally:
        stream.stop()
    return writes


@pytest.mark.parametrize("window", WINDOWS)
async def test_idle_protocol_scale_sets_are_not_rewritten(
    running_fleet: Fleet, window: float
) -> None:
    f = running_fleet
    for name in SETS:
        await f.apply_scale_set(_protocol_set(f, name))
    for name in SETS:
        await f.expect_runners(name, idle=1, within=60)
    for name in SETS:
        # Settled in the operator's view (not only GitHub's): its catch-up is not idle churn.
        await wait_for(_reader(f, name), _settled, what=f"{name}: status idle 1, Ready", within=60)
    writes = await _status_writes(f, window)
    print("\n".join(writes))
    assert writes == [], f"{len(writes)} status writes while idle: {writes}"


def _session_of(f: Fleet, name: str) -> list[str]:
    """Owners of the sessions on this RunnerScaleSet's GitHub scale set."""
    wanted = c.github_scale_set_name(name, f.namespace)
    actions = f.github.actions
    ids = {i for i, s in actions.scale_sets.items() if s.name == wanted}
    return [s.owner_name for s in actions.sessions.values() if s.scale_set_id in ids]


async def test_runners_that_ran_their_job_are_not_deleted_again(running_fleet: Fleet) -> None:
    f = running_fleet
    actions = f.github.actions
    actions.options = replace(actions.options, long_poll_timeout=2.0)  # short heartbeats
    name = "jobs-a"
    await f.apply_scale_set(_protocol_set(f, name, min_runners=0, max_runners=4))
    await f.apply_team_listener(make_team_listener(
        "team-a", team="team-a", config_url=f.config_url, pollInterval="1s",
        scaleSetSelector={"matchLabels": {c.LABEL_TEAM: "team-a"}},
    ))  # fmt: skip
    await wait_for(
        lambda: asyncio.sleep(0, _session_of(f, name)), bool, what="the listener's session",
        within=30,
    )  # fmt: skip
    jobs = [f.github.enqueue_job("acme/app", ["self-hosted", "linux", name], 2.0) for _ in range(4)]
    await wait_for(
        lambda: asyncio.sleep(0, [j.status for j in jobs]),
        lambda s: s == ["completed"] * 4, what="the 4 jobs to complete", within=60,
    )  # fmt: skip
    # Pods and Secrets of finished runners gone. A spare runner (a job assigned and done
    # between two reports) would wait scaleDownDelay (30 s) before it goes: hence 60 s.
    await f.expect_runners(name, idle=0, within=60)
    deletes = {status: n for (method, route, status), n in actions.requests.items()
               if method == "DELETE" and "/agents/" in route}  # fmt: skip
    print(f"agent DELETEs by status: {deletes}")
    assert deletes.get(404, 0) == 0, f"finished runners deleted again: {deletes}"
    assert f.registrations(name) == [], "no registration left behind"
