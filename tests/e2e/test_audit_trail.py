"""The audit trail end to end: scaling and replacing runners leave a few Normal Events with
counts (not one per runner), and the operator and listener log one JSON object per line with
RUNNERFLEET_LOG_FORMAT=json, with no HTTP request line at INFO (issue 13, item 4)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from runnerfleet import logs
from runnerfleet.localcluster import LocalCluster
from tests.support.chaos import all_completed, protocol_team
from tests.support.factories import make_scale_set
from tests.support.fleet import Fleet, fleet
from tests.support.kube import wait_for

SET = "linux"


async def _events(f: Fleet, name: str) -> list[Any]:
    """Our Events about the scale set, oldest first."""
    found = await client.CoreV1Api(f.kube).list_namespaced_event(f.namespace)
    ours = [
        e for e in found.items
        if e.involved_object.name == name and e.source and e.source.component == "runnerfleet"
    ]  # fmt: skip
    return sorted(ours, key=lambda e: (e.first_timestamp, e.metadata.name))


async def _wait_event(f: Fleet, reason: str, text: str = "") -> list[Any]:
    return await wait_for(
        lambda: _events(f, SET),
        lambda events: any(e.reason == reason and text in e.message for e in events),
        what=f"a {reason} Event {text!r}",
        within=30,
    )


async def test_scaling_and_replacing_runners_leave_counted_normal_events(
    running_fleet: Fleet,
) -> None:
    f = running_fleet
    await f.apply_scale_set(
        make_scale_set(SET, config_url=f.config_url, max_runners=10, scaleDownDelay="0s")
    )
    await f.set_demand(SET, 6, sequence=1)
    await f.expect_runners(SET, idle=6, within=40)
    events = await _wait_event(f, "ScaledUp")
    [up] = [e for e in events if e.reason == "ScaledUp"]  # six runners, one Event
    assert up.type == "Normal"
    assert up.message.startswith("creating 6 runners (desired 6, busy 0, idle 0")

    victim = (await f.pods(SET))[0].metadata.name
    await client.CoreV1Api(f.kube).delete_namespaced_pod(
        victim, f.namespace, grace_period_seconds=0
    )
    events = await _wait_event(f, "RunnerReplaced", victim)
    [replaced] = [e for e in events if e.reason == "RunnerReplaced"]
    assert replaced.type == "Normal"
    # Deleted (seen while the pod was going) or PodLost (seen gone): a race, both true.
    said = replaced.message.removeprefix(f"runner {victim} replaced: ")
    assert said.split(":")[0] in {"Deleted", "PodLost"}, replaced.message
    await f.expect_runners(SET, idle=6, within=40)

    await f.set_demand(SET, 0, sequence=2)
    await f.expect_runners(SET, idle=0, within=40)
    events = await _wait_event(f, "ScaledDown")
    [down] = [e for e in events if e.reason == "ScaledDown"]
    assert down.message.startswith("removing 6 runners (desired 0")
    # The whole story in three Events, none per runner created or removed (the per-round
    # bound on runner-naming Events is tests/unit/test_audit.py's).
    by_reason = [e.reason for e in events]
    assert sorted(by_reason) == ["RunnerReplaced", "ScaledDown", "ScaledUp"], by_reason


@pytest.fixture
async def json_fleet(
    local_cluster: LocalCluster,
    crds: list[str],
    kube: ApiClient,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Fleet]:
    """A fleet whose operator logs JSON (the operator passes the format on to listener pods);
    its teardown scans every log for issued secrets, as every fleet's does."""
    monkeypatch.setenv(logs.ENV_FORMAT, "json")
    async with fleet(local_cluster, kube, namespace, tmp_path) as f:
        yield f


def _json_lines(text: str, where: str) -> list[dict[str, Any]]:
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            lines.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"{where} line {number} is not JSON: {line[:200]!r}") from None
    return lines


async def test_operator_and_listener_log_json_with_context_and_no_request_lines(
    json_fleet: Fleet,
) -> None:
    f = json_fleet
    name = "team-a-linux"
    labels = ["self-hosted", "linux", "team-a"]
    await protocol_team(f, "team-a", name, labels, min_runners=1, max_runners=6)
    jobs = [f.github.enqueue_job("acme/app", labels, 2.0) for _ in range(4)]
    await all_completed(jobs, within=60)
    await f.expect_runners(name, idle=1, within=30)
    listener = await f.listener_process()
    deployment = await client.AppsV1Api(f.kube).read_namespaced_deployment(
        "team-a-listener", f.namespace
    )
    env = {e.name: e.value for e in deployment.spec.template.spec.containers[0].env}
    assert env[logs.ENV_FORMAT] == "json"

    operator = _json_lines(f.operator.logs(), "operator log")
    listener_lines = _json_lines(listener.log_path.read_text(), "listener log")
    print(f"log lines for 4 jobs: operator {len(operator)}, listener {len(listener_lines)}")
    for line in operator + listener_lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
    assert any(line.get("scale_set") == f"{f.namespace}/{name}" for line in listener_lines)
    # No line per HTTP request or per watch event at INFO: with 4 jobs, the lines are the
    # start-up and the children applied, whatever the number of requests made.
    requests = [
        line for line in operator + listener_lines
        if line["logger"].split(".")[0] in {n.split(".")[0] for n in logs.REQUEST_LOGGERS}
    ]  # fmt: skip
    assert requests == [], requests[:3]
    assert not any("succeeded." in str(line["message"]) and "wake" in str(line["message"])
                   for line in operator)  # fmt: skip
    assert len(operator) < 40, [line["message"] for line in operator]
