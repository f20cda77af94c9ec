"""Argo CD health checks (charts/runnerfleet/argocd/health-*.lua), run in Lua through lupa.

Each script runs the way Argo CD runs it: the live object is the global `obj` (JSON arrays as
1-based tables, nulls absent), the string/math/os/io libraries are gone (Argo CD does not open
them for health scripts), and the script returns `hs`. Every test runs under Lua 5.1 (Argo CD's
gopher-lua implements 5.1) and under lupa's default, newest Lua.

The hand-written objects copy the shapes the operator writes; the last tests feed the scripts
statuses made by the operator's own code (build_status, the TeamListener status fold, and the node
pool and team listener reconcilers against a fake gateway).
"""

from __future__ import annotations

import copy
import importlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import lupa  # type: ignore[import-untyped]
import pytest

from runnerfleet import conventions as c
from runnerfleet.gateways.kubernetes import InvalidError
from runnerfleet.models.runner_scale_set import Demand
from runnerfleet.planning.runners import (
    Limits,
    Memory,
    ObservedRegistration,
    ObservedRunner,
    plan,
)
from runnerfleet.planning.status import Problem, RoundOutcome, build_status, rfc3339
from runnerfleet.planning.team_listener import fold_status, status_wire
from runnerfleet.services import node_pool as pool_service
from runnerfleet.services import team_listener as listener_service

ARGOCD_DIR = Path(__file__).resolve().parents[2] / "charts" / "runnerfleet" / "argocd"
SCRIPTS = {
    "RunnerScaleSet": ARGOCD_DIR / "health-runnerscaleset.lua",
    "TeamListener": ARGOCD_DIR / "health-teamlistener.lua",
    "RunnerNodePool": ARGOCD_DIR / "health-runnernodepool.lua",
}
STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended"}
SINCE = "2025-06-01T10:00:00Z"
NOW = 1_760_000_000.0  # 2025-10-09T08:53:20Z

# What Argo CD leaves out of a health script's environment (it opens only base, table, package
# and a reduced os), plus lupa's own bridge. Strings lose their methods too (`s:find`).
SANDBOX = """
local string_meta = getmetatable("")
if string_meta ~= nil then string_meta.__index = nil end
string, math, io, os, debug, coroutine, utf8, bit32, jit = nil, nil, nil, nil, nil, nil, nil
load, loadstring, loadfile, dofile, require, package, python = nil, nil, nil, nil, nil, nil, nil
"""

Health = tuple[str, str]
Check = Callable[[dict[str, Any]], Health]


# ----------------------------------------------------------------------------------- the harness
def to_lua(runtime: Any, value: Any) -> Any:
    """A JSON-like Python value as Lua data: dicts and lists become tables (lists 1-based);
    None is left out, as a JSON null reaches Argo CD's Lua as a missing field."""
    if isinstance(value, dict):
        return runtime.table_from(
            {k: to_lua(runtime, v) for k, v in value.items() if v is not None}
        )
    if isinstance(value, list | tuple):
        return runtime.table_from([to_lua(runtime, v) for v in value if v is not None])
    return value


@pytest.fixture(params=["lua51", "default"])
def runtime_class(request: pytest.FixtureRequest) -> Any:
    if request.param == "default":
        return lupa.LuaRuntime
    return importlib.import_module(f"lupa.{request.param}").LuaRuntime


def run_health(runtime_class: Any, kind: str, obj: dict[str, Any]) -> Health:
    runtime = runtime_class(register_eval=False, register_builtins=False)
    runtime.execute(SANDBOX)
    runtime.globals()["obj"] = to_lua(runtime, copy.deepcopy(obj))
    hs = runtime.execute(SCRIPTS[kind].read_text())
    assert hs is not None, f"{kind} script returned nothing"
    status, message = hs["status"], hs["message"]
    assert status in STATUSES, (status, message)
    assert isinstance(message, str)
    assert message, "every health has a message"
    return status, message


@pytest.fixture
def health(runtime_class: Any) -> Check:
    """Runs the script matching obj["kind"]."""

    def check(obj: dict[str, Any]) -> Health:
        return run_health(runtime_class, obj["kind"], obj)

    return check


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the apiserver applies the operator's status patches."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ------------------------------------------------------------------- objects as the cluster has
KOPF_ANNOTATIONS = {
    f"{c.GROUP}/kopf-managed": "yes",
    f"{c.GROUP}/last-handled-configuration": '{"spec":{}}\n',
}


def cond(ctype: str, ok: bool, reason: str, message: str, generation: int = 2) -> dict[str, Any]:
    return {
        "type": ctype,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": SINCE,
    }


def meta(name: str, generation: int, namespace: str | None = "team-a") -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "uid": f"uid-{name}",
        "generation": generation,
        "resourceVersion": "4711",
        "creationTimestamp": "2025-06-01T09:59:00Z",
        "finalizers": [c.FINALIZER],
        "annotations": dict(KOPF_ANNOTATIONS),
    }
    if namespace is not None:
        out["namespace"] = namespace
    return out


def scale_set(
    status: dict[str, Any] | None = None, generation: int = 2, **spec: Any
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": c.API_VERSION,
        "kind": c.RUNNER_SCALE_SET_KIND,
        "metadata": {**meta("linux", generation), "labels": {c.LABEL_TEAM: "team-a"}},
        "spec": {
            "github": {"configUrl": "https://github.com/acme", "secretRef": {"name": "gh"}},
            "labels": ["self-hosted", "linux"],
            "minRunners": 1,
            "maxRunners": 10,
            **spec,
        },
    }
    if status is not None:
        obj["status"] = status
    return obj


RSS_OK_CONDITIONS = [
    cond("ConfigValid", True, "Valid", "spec and credentials are usable"),
    cond("GitHubReachable", True, "Reachable", "GitHub answered the last round"),
    cond("PodsAdmitted", True, "Admitted", "runner pods are accepted by the apiserver"),
    cond("NodePoolReady", True, "Resolved", "spec.nodePool is usable (or unset)"),
    cond("RunnersHealthy", True, "Healthy", "runners register and run"),
]


def scale_set_status(
    *problems: dict[str, Any], generation: int = 2, ready: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A reconciled status (3 desired: 1 idle, 2 busy) with `problems` replacing the True
    conditions of the same type; Ready follows the first problem unless given."""
    by_type = {p["type"]: p for p in problems}
    conditions = [copy.deepcopy(by_type.get(ok["type"], ok)) for ok in RSS_OK_CONDITIONS]
    if ready is None:
        first = next((p for p in problems if p["type"] != "RunnersHealthy"), None)
        ready = (
            cond("Ready", False, first["reason"], first["message"], generation)
            if first
            else cond("Ready", True, "Reconciled", "runners match the desired count", generation)
        )
    for one in conditions:
        one["observedGeneration"] = generation
    return {
        "observedGeneration": generation,
        "desired": 3,
        "pending": 0,
        "idle": 1,
        "busy": 2,
        "failed": 0,
        "consecutiveFailures": 0,
        "conditions": [ready, *conditions],
        "demand": {"assignedJobs": 2, "sequence": 41, "observedAt": SINCE, "listener": "team-a"},
        "kopf": {"dummy": SINCE},
    }


def team_listener(
    status: dict[str, Any] | None = None, generation: int = 1, **spec: Any
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": c.API_VERSION,
        "kind": c.TEAM_LISTENER_KIND,
        "metadata": meta("team-a", generation),
        "spec": {
            "team": "team-a",
            "github": {"configUrl": "https://github.com/acme", "secretRef": {"name": "gh"}},
            "repositories": {"names": ["app", "api"]},
            "pollInterval": "15s",
            **spec,
        },
    }
    if status is not None:
        obj["status"] = status
    return obj


POLL_OK = {"lastSuccessfulPoll": "2025-06-01T10:05:00Z", "queuedJobs": 4, "unmatchedJobs": 0,
           "rateLimitRemaining": 4990}  # fmt: skip


def listener_status(
    ready: dict[str, Any],
    polling: dict[str, Any],
    poll: dict[str, Any] | None = None,
    generation: int = 1,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "listenerReady": ready["status"] == "True",
        "observedGeneration": generation,
        "conditions": [ready, polling],
    }
    if poll is not None:
        out["poll"] = poll
    return out


LISTENER_READY = cond("Ready", True, "ListenerReady", "the listener pod is ready", 1)
POLLING = cond("Polling", True, "Polling", "last successful poll 2025-06-01T10:05:00Z", 1)


def node_pool(
    status: dict[str, Any] | None = None,
    generation: int = 1,
    spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": c.API_VERSION,
        "kind": c.RUNNER_NODE_POOL_KIND,
        "metadata": meta("ci", generation, namespace=None),
        "spec": {"static": {"nodeSelector": {"role": "ci"}}} if spec is None else spec,
    }
    if status is not None:
        obj["status"] = status
    return obj


def pool_status(ready: dict[str, Any], generation: int = 1, **fields: Any) -> dict[str, Any]:
    return {
        "mode": "Static",
        "nodes": 3,
        "scaleSets": ["team-a/linux", "team-b/gpu"],
        "observedGeneration": generation,
        "conditions": [ready],
        **fields,
    }


# ------------------------------------------------------------------------- every kind: waiting
@pytest.mark.parametrize(
    "make", [scale_set, team_listener, node_pool], ids=["rss", "listener", "pool"]
)
def test_no_status_yet_is_progressing(health: Check, make: Callable[..., dict[str, Any]]) -> None:
    status, message = health(make())
    assert status == "Progressing"
    assert "waiting for the operator" in message


def test_status_written_only_by_the_listener_and_kopf_is_still_waiting(health: Check) -> None:
    """The listener may write status.demand (and kopf status.kopf) before the operator's first
    round: there is no observedGeneration yet."""
    obj = scale_set({"demand": {"assignedJobs": 1, "sequence": 1, "observedAt": SINCE},
                     "kopf": {"dummy": SINCE}})  # fmt: skip
    assert health(obj) == (
        "Progressing",
        "waiting for the operator: it has not reported on this object yet",
    )


@pytest.mark.parametrize(
    "obj",
    [
        scale_set(scale_set_status(generation=2), generation=3),
        team_listener(listener_status(LISTENER_READY, POLLING, POLL_OK), generation=2),
        node_pool(pool_status(cond("Ready", True, "Reconciled", "ok", 1)), generation=2),
    ],
    ids=["rss", "listener", "pool"],
)
def test_status_for_an_older_generation_is_progressing(health: Check, obj: dict[str, Any]) -> None:
    status, message = health(obj)
    generation = obj["metadata"]["generation"]
    assert status == "Progressing"
    assert message == (
        f"waiting for the operator to observe generation {generation} "
        f"(status is for generation {generation - 1})"
    )


@pytest.mark.parametrize("kind", sorted(SCRIPTS))
@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"metadata": "not-a-table", "spec": 7, "status": "weird"},
        {"metadata": {}, "spec": {}, "status": {}},
        {"metadata": {"generation": 1}, "status": {"observedGeneration": 1}},
        {"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "conditions": "x"}},
        {"metadata": {"generation": 1},
         "status": {"observedGeneration": 1, "conditions": ["x", 3, {}, {"type": "Ready"}]}},
        {"metadata": {"generation": 1, "deletionTimestamp": SINCE},
         "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "False"}],
                    "poll": "x", "scaleSets": "x", "nodes": "x"}},
    ],
    ids=["empty", "wrong-types", "empty-parts", "no-conditions", "conditions-not-list",
         "junk-conditions", "sparse-everything"],
)  # fmt: skip
def test_scripts_never_fail_on_missing_or_odd_fields(
    runtime_class: Any, kind: str, obj: dict[str, Any]
) -> None:
    status, _ = run_health(runtime_class, kind, obj)
    assert status in ("Progressing", "Degraded")


# ------------------------------------------------------------------------------ RunnerScaleSet
def test_scale_set_ready_is_healthy_with_counts(health: Check) -> None:
    assert health(scale_set(scale_set_status())) == (
        "Healthy",
        "runners: 3 desired, 1 idle, 2 busy, 0 pending",
    )


def test_scale_set_suspended(health: Check) -> None:
    status = {**scale_set_status(), "desired": 0, "idle": 0, "busy": 1}
    assert health(scale_set(status, suspend=True)) == (
        "Suspended",
        "spec.suspend is true: no new runners are created; 1 busy runners finish their jobs",
    )
    assert health(scale_set(scale_set_status(), suspend=False))[0] == "Healthy"


def test_scale_set_in_operator_standby_is_suspended(health: Check) -> None:
    """Blue/green: the operator's global standby shows as Suspended, from the real builder."""
    from runnerfleet.planning.status import RoundOutcome, build_status

    status = build_status(RoundOutcome(plan=None, standby=True), {}, 2, 1_000_000.0)
    got = health(scale_set({**scale_set_status(), **status, "busy": 2}))
    assert got == (
        "Suspended",
        "the operator is in standby (blue/green): no new runners; 2 busy runners finish their jobs",
    )


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        (
            cond("ConfigValid", False, "SecretNotFound",
                 "Secret gh (spec.github.secretRef.name) not found"),
            "ConfigValid is False (SecretNotFound): Secret gh (spec.github.secretRef.name) "
            "not found",
        ),
        (
            cond("ConfigValid", False, "InvalidGitHubConfig",
                 "Secret gh must have key github_token, or all of github_app_id, "
                 "github_app_installation_id, github_app_private_key (missing: github_app_id)"),
            "ConfigValid is False (InvalidGitHubConfig): Secret gh must have key github_token",
        ),
        (
            cond("ConfigValid", False, "InvalidSpec",
                 "spec.labels: List should have at least 1 item"),
            "ConfigValid is False (InvalidSpec): spec.labels",
        ),
        (
            cond("NodePoolReady", False, "NodePoolNotFound",
                 "spec.nodePool: RunnerNodePool 'gpu' does not exist; no new runners are created "
                 "until it does (existing runners are kept)"),
            "NodePoolReady is False (NodePoolNotFound): spec.nodePool: RunnerNodePool 'gpu'",
        ),
        (
            cond("NodePoolReady", False, "NodePoolForbidden",
                 "spec.nodePool: RunnerNodePool 'gpu' is isolated to teams team-b; this scale "
                 "set's runnerfleet.dev/team label is 'team-a'"),
            "NodePoolReady is False (NodePoolForbidden)",
        ),
        (
            cond("NodePoolReady", False, "NodePoolDeleting",
                 "spec.nodePool: RunnerNodePool 'gpu' is being deleted; no new runners are "
                 "created on it (existing runners are kept)"),
            "NodePoolReady is False (NodePoolDeleting)",
        ),
        (
            cond("PodsAdmitted", False, "PodRejected",
                 'pods "linux-1a2bc3d4e" is forbidden: exceeded quota: compute'),
            'PodsAdmitted is False (PodRejected): pods "linux-1a2bc3d4e" is forbidden',
        ),
    ],
    ids=["secret-missing", "bad-credentials", "invalid-spec", "pool-missing", "pool-forbidden",
         "pool-deleting", "pod-rejected"],
)  # fmt: skip
def test_scale_set_configuration_errors_are_degraded(
    health: Check, problem: dict[str, Any], expected: str
) -> None:
    status, message = health(scale_set(scale_set_status(problem)))
    assert status == "Degraded"
    assert message.startswith(expected), message


def test_scale_set_failing_runners_are_degraded_even_though_ready(health: Check) -> None:
    """RunnersFailing is not a round problem: Ready stays True while runners keep failing."""
    failing = cond("RunnersHealthy", False, "RunnersFailing",
                   "3 runner failures in a row (last: OOMKilled); new runners are created "
                   "with backoff")  # fmt: skip
    status = scale_set_status(failing)
    assert status["conditions"][0]["status"] == "True"
    assert health(scale_set(status)) == (
        "Degraded",
        "RunnersHealthy is False (RunnersFailing): 3 runner failures in a row (last: OOMKilled); "
        "new runners are created with backoff",
    )


def test_scale_set_rate_limited_is_degraded_and_says_so(health: Check) -> None:
    limited = cond("GitHubReachable", False, "RateLimited",
                   "GitHub rate limit exhausted until 2025-06-01T11:00:00Z; no GitHub calls "
                   "until then, existing runners are kept")  # fmt: skip
    status, message = health(scale_set(scale_set_status(limited)))
    assert status == "Degraded"
    assert message.startswith("GitHub rate limit exhausted (GitHubReachable is False, RateLimited)")
    assert "existing runners are kept" in message


def test_scale_set_github_errors_are_degraded_and_say_so(health: Check) -> None:
    down = cond("GitHubReachable", False, "GitHubAuthError", "401 Bad credentials")
    assert health(scale_set(scale_set_status(down))) == (
        "Degraded",
        "GitHub is failing (GitHubReachable is False, GitHubAuthError): 401 Bad credentials",
    )


def test_scale_set_lists_every_false_condition(health: Check) -> None:
    pool = cond("NodePoolReady", False, "NodePoolNotFound", "pool gone")
    pods = cond("PodsAdmitted", False, "PodRejected", "quota")
    status, message = health(scale_set(scale_set_status(pods, pool)))
    assert status == "Degraded"
    assert message == (
        "NodePoolReady is False (NodePoolNotFound): pool gone; "
        "PodsAdmitted is False (PodRejected): quota"
    )


def test_scale_set_rolling_out_a_new_template_is_progressing_with_counts(health: Check) -> None:
    rolling = cond("Ready", False, "RollingOut", "the runner template changed")
    status = {**scale_set_status(ready=rolling), "updated": 2, "outdated": 3}
    assert health(scale_set(status)) == (
        "Progressing",
        "rolling out a new runner template: 2 updated, 3 outdated (idle ones are replaced, "
        "busy ones finish their job)",
    )


def test_scale_set_not_reconciled_yet_is_progressing(health: Check) -> None:
    unknown = cond("Ready", False, "Unknown", "not reconciled yet")
    assert health(scale_set(scale_set_status(ready=unknown))) == (
        "Progressing",
        "Ready is False (Unknown): not reconciled yet",
    )
    bare = scale_set({"observedGeneration": 2, "conditions": []})
    assert health(bare) == ("Progressing", "waiting for the operator: no Ready condition yet")


# -------------------------------------------------------------------------------- TeamListener
def test_listener_ready_and_polling_is_healthy(health: Check) -> None:
    obj = team_listener(listener_status(LISTENER_READY, POLLING, POLL_OK))
    assert health(obj) == (
        "Healthy",
        "the listener pod is ready; last successful poll 2025-06-01T10:05:00Z; 4 queued jobs",
    )
    unmatched = {**POLL_OK, "unmatchedJobs": 2}
    status, message = health(team_listener(listener_status(LISTENER_READY, POLLING, unmatched)))
    assert status == "Healthy"
    assert message.endswith("4 queued jobs (2 match no scale set's labels)")


def test_listener_suspended(health: Check) -> None:
    ready = cond("Ready", False, "Suspended",
                 "spec.suspend is true: the listener is scaled to 0", 1)  # fmt: skip
    polling = cond("Polling", False, "NoRecentPoll", "no successful poll recently", 1)
    obj = team_listener(listener_status(ready, polling, POLL_OK), suspend=True)
    assert health(obj) == ("Suspended", "spec.suspend is true: the listener is scaled to 0")


def test_listener_pod_not_ready_is_progressing(health: Check) -> None:
    ready = cond("Ready", False, "ListenerNotReady", "waiting for the listener pod to be ready", 1)
    polling = cond("Polling", False, "NoRecentPoll", "no successful poll recently", 1)
    assert health(team_listener(listener_status(ready, polling))) == (
        "Progressing",
        "Ready is False (ListenerNotReady): waiting for the listener pod to be ready",
    )


def test_listener_rejected_child_is_degraded(health: Check) -> None:
    ready = cond("Ready", False, "ChildRejected",
                 'Deployment.apps "team-a-listener" is invalid: spec.template.spec.containers'
                 '[0].resources.requests: Invalid value: "2": must be less than or equal to '
                 "cpu limit", 1)  # fmt: skip
    polling = cond("Polling", False, "NoRecentPoll", "no successful poll recently", 1)
    status, message = health(team_listener(listener_status(ready, polling)))
    assert status == "Degraded"
    assert message.startswith(
        "the apiserver rejected the listener's objects (ChildRejected): "
        'Deployment.apps "team-a-listener" is invalid'
    )


def test_listener_rate_limited_is_degraded(health: Check) -> None:
    polling = cond("Polling", False, "RateLimited",
                   "GitHub rate limit exhausted until 2025-06-01T11:00:00Z; backing off, "
                   "existing runners untouched", 1)  # fmt: skip
    poll = {**POLL_OK, "rateLimitRemaining": 0, "rateLimitedUntil": "2025-06-01T11:00:00Z"}
    assert health(team_listener(listener_status(LISTENER_READY, polling, poll))) == (
        "Degraded",
        "GitHub rate limit exhausted (Polling is False, RateLimited): GitHub rate limit "
        "exhausted until 2025-06-01T11:00:00Z; backing off, existing runners untouched",
    )


def test_listener_that_stopped_polling_is_degraded(health: Check) -> None:
    stale = cond("Polling", False, "NoRecentPoll", "no successful poll recently", 1)
    assert health(team_listener(listener_status(LISTENER_READY, stale, POLL_OK))) == (
        "Degraded",
        "the listener stopped polling GitHub (Polling is False, NoRecentPoll): "
        "last successful poll 2025-06-01T10:05:00Z",
    )


def test_listener_before_its_first_poll_is_progressing(health: Check) -> None:
    stale = cond("Polling", False, "NoRecentPoll", "no successful poll recently", 1)
    assert health(team_listener(listener_status(LISTENER_READY, stale))) == (
        "Progressing",
        "the listener pod is ready; waiting for its first successful GitHub poll",
    )


# ------------------------------------------------------------------------------ RunnerNodePool
def test_pool_ready_is_healthy_with_mode_and_nodes(health: Check) -> None:
    ready = cond("Ready", True, "Reconciled", "Static mode; 3 nodes in the pool", 1)
    assert health(node_pool(pool_status(ready))) == (
        "Healthy",
        "Static mode: 3 nodes in the pool; used by 2 scale sets",
    )
    karpenter = pool_status(ready, mode="Karpenter", nodes=0, nodePool="runnerfleet-ci",
                            scaleSets=[])  # fmt: skip
    assert health(node_pool(karpenter)) == (
        "Healthy",
        "Karpenter mode: 0 nodes in the pool (Karpenter NodePool runnerfleet-ci); "
        "used by 0 scale sets",
    )


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("NoMatchingNodes", "no node matches spec.static.nodeSelector {'role': 'ci'}"),
        ("NodeClassRefMissing", "spec.nodeClassRef is required when Karpenter is installed"),
        ("StaticSelectorMissing", "Karpenter is not installed, so spec.static.nodeSelector must "
                                  "name the nodes that form this pool"),
        ("NodesHeldByOtherPool", "nodes n1 match spec.static.nodeSelector but already carry "
                                 "another pool's runnerfleet.dev/pool label; they were left alone"),
        ("NodePoolRejected", 'NodePool.karpenter.sh "runnerfleet-ci" is invalid: spec.weight'),
        ("InvalidSpec", "spec.weight: Input should be less than or equal to 100"),
    ],
)  # fmt: skip
def test_pool_failures_are_degraded(health: Check, reason: str, message: str) -> None:
    status = pool_status(cond("Ready", False, reason, message, 1), nodes=0)
    assert health(node_pool(status)) == ("Degraded", f"{reason}: {message}")


def test_pool_deletion_blocked_is_degraded(health: Check) -> None:
    """Deleting bumps metadata.generation and the finalizer's status patch leaves
    status.observedGeneration behind: a blocked deletion must still say why."""
    message = ("RunnerNodePool ci is still used by RunnerScaleSets team-a/linux; it (and its "
               "nodes) stays until they no longer name it in spec.nodePool")  # fmt: skip
    obj = node_pool(pool_status(cond("Ready", False, "DeletionBlocked", message, 2)), generation=2)
    obj["metadata"]["deletionTimestamp"] = "2025-06-01T10:10:00Z"
    assert obj["status"]["observedGeneration"] == 1
    assert health(obj) == ("Degraded", f"DeletionBlocked: {message}")


def test_pool_being_deleted_otherwise_is_progressing(health: Check) -> None:
    ready = cond("Ready", True, "Reconciled", "Static mode; 3 nodes in the pool", 1)
    obj = node_pool(pool_status(ready))
    obj["metadata"]["deletionTimestamp"] = "2025-06-01T10:10:00Z"
    assert health(obj) == (
        "Progressing",
        "being deleted: the operator is releasing the pool's nodes",
    )


def test_pool_unknown_reason_is_progressing(health: Check) -> None:
    ready = {**cond("Ready", False, "SomethingNew", "later", 1), "status": "Unknown"}
    assert health(node_pool(pool_status(ready))) == (
        "Progressing",
        "Ready is Unknown (SomethingNew): later",
    )


# ------------------------------------------------ statuses made by the operator's own code
def _runner(name: str, registration_id: int, *, busy: bool) -> ObservedRunner:
    return ObservedRunner(
        name,
        NOW - 120,
        has_secret=True,
        has_jit=True,
        pod_phase="Running",
        registration=ObservedRegistration(id=registration_id, online=True, busy=busy),
    )


def _demand(jobs: int) -> Demand:
    return Demand.model_validate({"assignedJobs": jobs, "sequence": 7, "observedAt": SINCE})


RUNNERS = [_runner("linux-aaaa00001", 11, busy=False), _runner("linux-aaaa00002", 12, busy=True)]
LIMITS = Limits(min_runners=1, max_runners=5)


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (RoundOutcome(plan(RUNNERS, LIMITS, _demand(1), Memory(), NOW)),
         ("Healthy", "runners: 2 desired, 1 idle, 1 busy, 0 pending")),
        (RoundOutcome(None, [Problem("ConfigValid", "SecretNotFound",
                                     "Secret gh (spec.github.secretRef.name) not found")]),
         ("Degraded", "ConfigValid is False (SecretNotFound): Secret gh "
                      "(spec.github.secretRef.name) not found")),
        (RoundOutcome(plan(RUNNERS, LIMITS, _demand(3), Memory(), NOW),
                      [Problem("NodePoolReady", "NodePoolNotFound",
                               "spec.nodePool: RunnerNodePool 'gpu' does not exist")]),
         ("Degraded", "NodePoolReady is False (NodePoolNotFound): spec.nodePool: "
                      "RunnerNodePool 'gpu' does not exist")),
        (RoundOutcome(plan(RUNNERS, LIMITS, _demand(3), Memory(), NOW),
                      [Problem("PodsAdmitted", "PodRejected", "exceeded quota")]),
         ("Degraded", "PodsAdmitted is False (PodRejected): exceeded quota")),
        (RoundOutcome(plan([], LIMITS, None, Memory(consecutive_failures=4,
                                                      last_failure_at=NOW - 5), NOW)),
         ("Degraded", "RunnersHealthy is False (RunnersFailing): 4 runner failures in a row")),
        (RoundOutcome(None, [Problem("GitHubReachable", "RateLimited",
                                     f"GitHub rate limit exhausted until {rfc3339(NOW + 600)}; "
                                     "no GitHub calls until then, existing runners are kept")]),
         ("Degraded", "GitHub rate limit exhausted (GitHubReachable is False, RateLimited): "
                      "GitHub rate limit exhausted until 2025-10-09T09:03:20Z")),
        (RoundOutcome(None, [Problem("GitHubReachable", "GitHubUnavailableError", "502")]),
         ("Degraded", "GitHub is failing (GitHubReachable is False, GitHubUnavailableError): 502")),
        (RoundOutcome(None),
         ("Progressing", "Ready is False (Unknown): not reconciled yet")),
    ],
    ids=["healthy", "secret-missing", "pool-missing", "pod-rejected", "runners-failing",
         "rate-limited", "github-down", "nothing-planned"],
)  # fmt: skip
def test_scale_set_health_of_build_status(
    health: Check, outcome: RoundOutcome, expected: Health
) -> None:
    previous = scale_set_status(generation=1)  # last round's status, demand included
    patch = build_status(outcome, previous, 2, NOW)
    live = scale_set(merge_patch(previous, patch), generation=2)
    status, message = health(live)
    assert (status, message[: len(expected[1])]) == expected, message
    # The same status while the user's next edit is not yet observed.
    assert health(scale_set(merge_patch(previous, patch), generation=3))[0] == "Progressing"


@pytest.mark.parametrize(
    ("deployment", "poll", "suspended", "expected"),
    [
        ({"readyReplicas": 1}, {"lastSuccessfulPoll": rfc3339(NOW - 10), "queuedJobs": 2},
         False, ("Healthy", "the listener pod is ready; last successful poll "
                            "2025-10-09T08:53:10Z; 2 queued jobs")),
        (None, {}, False,
         ("Progressing", "Ready is False (ListenerNotReady): waiting for the listener pod")),
        ({"readyReplicas": 0}, {}, True,
         ("Suspended", "spec.suspend is true: the listener is scaled to 0")),
        ({"readyReplicas": 1}, {"lastSuccessfulPoll": rfc3339(NOW - 10),
                                "rateLimitedUntil": rfc3339(NOW + 300)},
         False, ("Degraded", "GitHub rate limit exhausted (Polling is False, RateLimited): "
                             "GitHub rate limit exhausted until 2025-10-09T08:58:20Z")),
        ({"readyReplicas": 1}, {"lastSuccessfulPoll": rfc3339(NOW - 600)}, False,
         ("Degraded", "the listener stopped polling GitHub (Polling is False, NoRecentPoll)")),
        ({"readyReplicas": 1}, {}, False,
         ("Progressing", "the listener pod is ready; waiting for its first successful GitHub")),
    ],
    ids=["healthy", "pod-not-ready", "suspended", "rate-limited", "stopped-polling",
         "first-poll-pending"],
)  # fmt: skip
def test_listener_health_of_the_listener_status_fold(
    health: Check,
    deployment: dict[str, Any] | None,
    poll: dict[str, Any],
    suspended: bool,
    expected: Health,
) -> None:
    previous: dict[str, Any] = {"poll": poll} if poll else {}  # the listener's own report
    patch = status_wire(fold_status(deployment, previous, 1, 15.0, suspended, NOW))
    live = team_listener(merge_patch(previous, patch), generation=1, suspend=suspended)
    status, message = health(live)
    assert (status, message[: len(expected[1])]) == expected, message


class FakeKube:
    """The few gateway calls the node pool and team listener reconcilers make, in memory."""

    def __init__(
        self,
        body: dict[str, Any],
        *,
        karpenter: bool = False,
        nodes: list[dict[str, Any]] | None = None,
        users: list[str] | None = None,
        reject: str | None = None,
        deployment: dict[str, Any] | None = None,
    ) -> None:
        self.body = copy.deepcopy(body)
        self.karpenter = karpenter
        self.nodes = nodes or []
        self.users = users or []
        self.reject = reject
        self.deployment = deployment

    def live(self) -> dict[str, Any]:
        return copy.deepcopy(self.body)

    async def get_node_pool(self, name: str) -> dict[str, Any]:
        return self.live()

    async def get_team_listener(self, namespace: str, name: str) -> dict[str, Any]:
        return self.live()

    async def list_scale_sets(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return [
            {"metadata": {"namespace": user.split("/")[0], "name": user.split("/")[1]},
             "spec": {"nodePool": self.body["metadata"]["name"]}}
            for user in self.users
        ]  # fmt: skip

    async def has_karpenter(self) -> bool:
        return self.karpenter

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        if self.reject:
            raise InvalidError(self.reject, 422)
        live = copy.deepcopy(manifest)  # server-side apply answers with the live object
        if manifest["kind"] == "Deployment" and self.deployment is not None:
            live["status"] = copy.deepcopy(self.deployment)
        return live

    async def list_nodes(self, selector: str | None = None) -> list[dict[str, Any]]:
        if selector is None:
            return copy.deepcopy(self.nodes)
        key, value = selector.split("=")
        return [n for n in self.nodes if n["metadata"]["labels"].get(key) == value]

    async def delete_deployment(self, namespace: str, name: str) -> None:
        return None  # no warm capacity in these pools

    async def patch_node(self, name: str, patch: dict[str, Any]) -> None:
        return None

    async def get_deployment_status(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.deployment

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.deployment is None:
            return None
        return {"metadata": {"name": name, "namespace": namespace}, "status": self.deployment}

    async def get_karpenter_nodepool(self, name: str) -> dict[str, Any] | None:
        return None

    async def patch_node_pool_status(self, name: str, status: dict[str, Any]) -> None:
        self.body["status"] = merge_patch(self.body.get("status"), status)

    async def patch_team_listener_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        self.body["status"] = merge_patch(self.body.get("status"), status)

    async def event(self, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        return None


def _node(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels, "resourceVersion": "1"},
            "spec": {"taints": []}}  # fmt: skip


KWOK_CLASS = {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"}
HELD = {c.LABEL_POOL: "other"}


@pytest.mark.parametrize(
    ("spec", "kube", "expected"),
    [
        ({"static": {"nodeSelector": {"role": "ci"}}},
         {"nodes": [_node("n1", role="ci"), _node("n2", role="ci"), _node("n3")]},
         ("Healthy", "Static mode: 2 nodes in the pool; used by 0 scale sets")),
        ({"static": {"nodeSelector": {"role": "ci"}}}, {"nodes": [_node("n3")]},
         ("Degraded", "NoMatchingNodes: no node matches spec.static.nodeSelector")),
        ({"static": {"nodeSelector": {"role": "ci"}}},
         {"nodes": [_node("n1", role="ci"), _node("n2", role="ci", **HELD)]},
         ("Degraded", "NodesHeldByOtherPool: nodes n2 match spec.static.nodeSelector")),
        ({}, {}, ("Degraded", "StaticSelectorMissing: Karpenter is not installed")),
        ({"nodeClassRef": KWOK_CLASS},
         {"karpenter": True, "nodes": [_node("k1", **{c.LABEL_POOL: "ci"})],
          "users": ["team-a/linux"]},
         ("Healthy", "Karpenter mode: 1 nodes in the pool (Karpenter NodePool runnerfleet-ci); "
                     "used by 1 scale sets")),
        ({}, {"karpenter": True},
         ("Degraded", "NodeClassRefMissing: spec.nodeClassRef is required")),
        ({"nodeClassRef": KWOK_CLASS},
         {"karpenter": True, "reject": 'NodePool.karpenter.sh "runnerfleet-ci" is invalid'},
         ("Degraded", 'NodePoolRejected: NodePool.karpenter.sh "runnerfleet-ci" is invalid')),
        ({"weight": 500, "nodeClassRef": KWOK_CLASS}, {"karpenter": True},
         ("Degraded", "InvalidSpec: spec.weight: Input should be less than or equal to 100")),
    ],
    ids=["static", "no-matching-nodes", "nodes-held", "no-selector", "karpenter",
         "no-node-class", "nodepool-rejected", "invalid-spec"],
)  # fmt: skip
async def test_pool_health_of_the_node_pool_reconciler(
    runtime_class: Any, spec: dict[str, Any], kube: dict[str, Any], expected: Health
) -> None:
    fake = FakeKube(node_pool(generation=3, spec=spec), **kube)
    await pool_service.reconcile_once(cast(Any, fake), "ci")
    assert fake.body["status"]["observedGeneration"] == 3
    status, message = run_health(runtime_class, c.RUNNER_NODE_POOL_KIND, fake.live())
    assert (status, message[: len(expected[1])]) == expected, message


async def test_pool_health_while_the_finalizer_holds_it(runtime_class: Any) -> None:
    fake = FakeKube(node_pool(generation=1), nodes=[_node("n1", role="ci")],
                    users=["team-a/linux"])  # fmt: skip
    await pool_service.reconcile_once(cast(Any, fake), "ci")
    fake.body["metadata"].update(deletionTimestamp="2025-06-01T10:10:00Z", generation=2)
    with pytest.raises(pool_service.PoolInUseError):
        await pool_service.finalize(cast(Any, fake), fake.live())
    assert fake.body["status"]["observedGeneration"] == 1  # the finalizer does not move it
    status, message = run_health(runtime_class, c.RUNNER_NODE_POOL_KIND, fake.live())
    assert status == "Degraded"
    assert message.startswith("DeletionBlocked: RunnerNodePool ci is still used by "
                              "RunnerScaleSets team-a/linux")  # fmt: skip


async def test_listener_health_of_the_team_listener_reconciler(runtime_class: Any) -> None:
    rejected = 'Deployment.apps "team-a-listener" is invalid: spec.template: bad'
    fake = FakeKube(team_listener(generation=4), reject=rejected, deployment=None)
    await listener_service.reconcile_once(cast(Any, fake), "team-a", "team-a", "img:1")
    status, message = run_health(runtime_class, c.TEAM_LISTENER_KIND, fake.live())
    assert (status, message) == (
        "Degraded",
        f"the apiserver rejected the listener's objects (ChildRejected): {rejected}",
    )
    fake.reject, fake.deployment = None, {"readyReplicas": 1}
    fake.body["status"]["poll"] = {"lastSuccessfulPoll": rfc3339(time.time()), "queuedJobs": 0}
    await listener_service.reconcile_once(cast(Any, fake), "team-a", "team-a", "img:1")
    assert run_health(runtime_class, c.TEAM_LISTENER_KIND, fake.live())[0] == "Healthy"
