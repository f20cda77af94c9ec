"""Cost accounting (issue 14 part 1): counts runner-seconds after each scale-set round,
attributes node-seconds every interval, keeps the per-team summary ConfigMap.

Requests: a round's accounting makes none (it uses the plan's counts). The interval task
(leader only) makes, per COST_INTERVAL: one list of RunnerNodePools (their prices), one list
of the pool-labelled nodes, one list of runner pods per served namespace (the runner
informers keep no pod spec, so no requests: docs/costs.md), and at most one ConfigMap apply
per SUMMARY_EVERY (plus one read when the task starts). None grows with rounds or runners
times anything; the lists' size grows with the nodes and runner pods.

Layer: services. I/O only through the gateways.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from runnerfleet import conventions as c
from runnerfleet.gateways.kubernetes import KubeError, KubeGateway
from runnerfleet.metrics import CostMetrics
from runnerfleet.models.node_pool import PoolPrices, RunnerNodePoolSpec
from runnerfleet.planning import costs
from runnerfleet.planning.runners import State
from runnerfleet.services.runtime import Runtime

log = logging.getLogger("runnerfleet.costs")
COST_INTERVAL_ENV = "RUNNERFLEET_COST_INTERVAL"
COST_INTERVAL = 60.0  # node-seconds attribution, seconds between two looks
SUMMARY_EVERY = 60.0  # the summary ConfigMap is written at most this often
SUMMARY_CONFIGMAP = "runnerfleet-costs"
SUMMARY_KEY = "summary.json"
RUNNER_PODS = f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY_VALUE},{c.LABEL_COMPONENT}={c.COMPONENT_RUNNER}"


def interval_from_env() -> float:
    """RUNNERFLEET_COST_INTERVAL (seconds, default 60; tests use 1); 0 turns the task off."""
    return float(os.environ.get(COST_INTERVAL_ENV, COST_INTERVAL))


# ---------------------------------------------------------------------------- per round
def record_round(
    metrics: CostMetrics,
    namespace: str,
    name: str,
    team: str | None,
    node_pool: str | None,
    counts: Mapping[State, int],
    now: float,
) -> None:
    """Add the runner-seconds since the scale set's previous round (no request)."""
    held = metrics.tallies.get((namespace, name))
    previous = costs.Tally(*held) if held is not None else None
    added, tally = costs.advance(previous, counts, now)
    metrics.tallies[(namespace, name)] = (tally.at, dict(tally.counts))
    team_label = team or ""
    for state, seconds in added.items():
        series = metrics.runner_seconds.labels(namespace, name, team_label, node_pool or "", state)
        series.inc(seconds)  # a zero too: the series exists from the first round
        if seconds:
            metrics.add_team(team_label or costs.UNALLOCATED, state, seconds)


# ---------------------------------------------------------------------------- the interval
async def run(kube: KubeGateway, metrics: CostMetrics, namespaces: list[str | None],
              home: str, every: float) -> None:  # fmt: skip
    """Until cancelled: attribute node-seconds every `every` seconds, and write the summary
    at most every SUMMARY_EVERY. Failures are logged and retried at the next interval (costs
    never hold up reconciliation)."""
    summary = await _read_summary(kube, home)
    last, written = time.time(), time.monotonic()
    while True:
        await asyncio.sleep(every)
        now = time.time()
        try:
            await account_nodes(kube, metrics, namespaces, min(now - last, costs.MAX_GAP))
        except KubeError as err:
            log.warning("cost accounting: %s; retrying in %.0f s", err, every)
        last = now
        if time.monotonic() - written >= min(SUMMARY_EVERY, every * 3):
            summary = await flush(kube, metrics, home, summary, now)
            written = time.monotonic()


async def account_nodes(
    kube: KubeGateway, metrics: CostMetrics, namespaces: list[str | None], seconds: float
) -> costs.PoolSeconds:
    """One look at the pools' nodes and the runner pods: `seconds` of node time attributed."""
    pools = await kube.list_ours(c.RUNNER_NODE_POOL_PLURAL)
    nodes = await kube.list_nodes(c.LABEL_POOL)  # the label exists: Karpenter and static
    pods: list[dict[str, Any]] = []
    for ns in namespaces:
        path = f"/api/v1/namespaces/{ns}/pods" if ns else "/api/v1/pods"
        pods += (await kube.raw_list(path, RUNNER_PODS)).get("items", [])
    prices = _prices(pools)
    result = costs.attribute(
        [n for node in nodes if (n := costs.pool_node(node)) is not None],
        [p for pod in pods if (p := costs.runner_pod(pod)) is not None],
        seconds, prices,
    )  # fmt: skip
    _export(metrics, result, prices)
    return result


def _prices(pools: list[dict[str, Any]]) -> dict[str, PoolPrices]:
    out = {}
    for pool in pools:
        try:
            spec = RunnerNodePoolSpec.model_validate(pool.get("spec") or {})
        except ValidationError:
            continue  # the pool reports its own bad spec
        if spec.prices is not None:
            out[pool["metadata"]["name"]] = spec.prices
    return out


def _export(
    metrics: CostMetrics, result: costs.PoolSeconds, prices: Mapping[str, PoolPrices]
) -> None:
    for pool, seconds in result.seconds.items():
        metrics.node_seconds.labels(pool).inc(seconds)
    for (pool, team, use), seconds in result.shares.items():
        metrics.node_seconds_attributed.labels(pool, team, use).inc(seconds)
        metrics.add_team(team, "nodeSeconds", seconds)
        if use == "busy":
            metrics.add_team(team, "nodeSecondsBusy", seconds)
    for (pool, team), money in result.cost.items():
        metrics.cost.labels(pool, team, prices[pool].currency).inc(money)
        metrics.add_team(team, "cost", money)


# ---------------------------------------------------------------------------- summary
async def _read_summary(kube: KubeGateway, namespace: str) -> costs.Summary:
    """The summary the previous leader left (empty if none or unreadable)."""
    try:
        data = await kube.get_config_map_data(namespace, SUMMARY_CONFIGMAP)
    except KubeError as err:
        log.warning("reading ConfigMap %s/%s: %s", namespace, SUMMARY_CONFIGMAP, err)
        return {}
    return parse_summary((data or {}).get(SUMMARY_KEY))


def parse_summary(text: str | None) -> costs.Summary:
    try:
        found = json.loads(text or "{}").get("days") or {}
    except (ValueError, AttributeError):
        return {}
    return found if isinstance(found, dict) else {}


def summary_manifest(namespace: str, summary: costs.Summary, now: float) -> dict[str, Any]:
    at = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = json.dumps({"updatedAt": at, "days": summary}, sort_keys=True, separators=(",", ":"))
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": SUMMARY_CONFIGMAP, "namespace": namespace,
                     "labels": {c.LABEL_MANAGED_BY: c.MANAGED_BY_VALUE}},
        "data": {SUMMARY_KEY: body},
    }  # fmt: skip


async def flush(
    kube: KubeGateway, metrics: CostMetrics, namespace: str, summary: costs.Summary, now: float
) -> costs.Summary:
    """Add what was counted since the last write to today's row and write the ConfigMap (one
    apply). On failure the amounts stay unflushed and go with the next write."""
    day = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d")
    # Taken before the write: rounds that count during it add to a fresh dict.
    taken, metrics.unflushed = metrics.unflushed, {}
    merged = costs.merge(summary, day, taken)
    try:
        await kube.apply(summary_manifest(namespace, merged, now))
    except KubeError as err:
        log.warning("writing ConfigMap %s/%s: %s", namespace, SUMMARY_CONFIGMAP, err)
        for team, row in taken.items():
            for key, amount in row.items():
                metrics.add_team(team, key, amount)
        return summary
    return merged


async def read_costs(kube: KubeGateway, namespace: str) -> costs.Summary:
    """For `runnerfleet status --costs`: the summary as last written (one GET)."""
    data = await kube.get_config_map_data(namespace, SUMMARY_CONFIGMAP)
    return parse_summary((data or {}).get(SUMMARY_KEY))


def start(runtime: Runtime, namespaces: list[str | None], home: str) -> asyncio.Task[None] | None:
    """The interval task (None when RUNNERFLEET_COST_INTERVAL is 0)."""
    every = interval_from_env()
    if every <= 0:
        return None
    return asyncio.create_task(run(runtime.kube, runtime.metrics.costs, namespaces, home, every))


async def cost_report(kube: KubeGateway, namespace: str, now: float) -> dict[str, Any]:
    """`runnerfleet status --costs`: per team, today and the last seven days (UTC), from the
    summary ConfigMap in the operator's namespace (one GET; never the operator's /metrics,
    which a CLI outside the cluster cannot reach without a port-forward)."""
    found = await kube.get_config_map_data(namespace, SUMMARY_CONFIGMAP)
    text = (found or {}).get(SUMMARY_KEY)
    summary = parse_summary(text)
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    week = [(today - dt.timedelta(days=d)).isoformat() for d in range(7)]
    updated = None
    with contextlib.suppress(ValueError, AttributeError):
        updated = json.loads(text or "{}").get("updatedAt")
    return {
        "namespace": namespace, "configMap": SUMMARY_CONFIGMAP, "updatedAt": updated,
        "today": today.isoformat(),
        "day": costs.report_rows(costs.rollup(summary, week[:1])),
        "week": costs.report_rows(costs.rollup(summary, week)),
    }  # fmt: skip
