"""The Grafana dashboard queries only metrics the operator and the listener really export.

Every PromQL expression of `charts/runnerfleet/dashboards/runnerfleet.json` (panel targets and
templating queries) is checked against the exposition of `ListenerMetrics` and `OperatorMetrics`:
metric names, label names in `by (...)` clauses, `{label="..."}` matchers, `label_values(...)`
and `{{label}}` legends. The dashboard must also cover most exported families, so a new metric
without a panel is noticed. The last test scrapes `/metrics` from the real `serve_metrics`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from runnerfleet.metrics import (
    ListenerMetrics,
    OperatorMetrics,
    ScaleSetCounter,
    ScaleSetGauge,
    ScaleSetHistogram,
    serve_metrics,
)

DASHBOARD = Path(__file__).resolve().parents[2] / "charts/runnerfleet/dashboards/runnerfleet.json"
MIN_FAMILY_COVERAGE = 0.8

METRIC_NAME = re.compile(r"\brunnerfleet_[a-z_]+")
SELECTOR = re.compile(r"\b(runnerfleet_[a-z_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*\"")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
LABEL_VALUES = re.compile(r"label_values\(\s*(runnerfleet_[a-z_]+)[^,]*,\s*([a-zA-Z_]\w*)\s*\)")
LEGEND_LABEL = re.compile(r"\{\{\s*([a-zA-Z_]\w*)\s*\}\}")

# Plausible label values, so the touched samples look like production ones.
SAMPLE_LABEL_VALUES = {
    "namespace": "team-a",
    "scale_set": "linux-x64",
    "team": "team-a",
    "state": "idle",
    "reason": "ImagePullBackOff",
    "endpoint": "list_jobs",
    "status": "200",
    "result": "ok",
    "event": "workflow_job",
}


# --- the dashboard -------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    where: str
    expr: str
    legend: str | None = None


@functools.cache
def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _walk_panels(panel.get("panels", []))  # rows (collapsed ones nest panels)


def _queries() -> list[Query]:
    dashboard = _dashboard()
    found = []
    for panel in _walk_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            where = f"panel {panel['title']!r} target {target['refId']}"
            found.append(Query(where, target["expr"], target.get("legendFormat")))
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]
        expr = query["query"] if isinstance(query, dict) else query
        found.append(Query(f"variable ${var['name']}", expr))
    return found


def _used_names() -> set[str]:
    return {name for q in _queries() for name in METRIC_NAME.findall(q.expr)}


# --- what the processes export -------------------------------------------------------------


@dataclass
class Exposition:
    families: set[str] = field(default_factory=set)  # real families (no `_created` artefacts)
    family_of: dict[str, str] = field(default_factory=dict)  # sample name -> family
    labels_of: dict[str, set[str]] = field(default_factory=dict)  # sample name -> label names


def _parse(text: str) -> Exposition:
    parsed = list(text_string_to_metric_families(text))
    typed = {family.name: family.type for family in parsed}
    exposition = Exposition()
    for family in parsed:
        base = family.name.removesuffix("_created")
        if base != family.name and typed.get(base) in {"counter", "histogram", "summary"}:
            owner = base  # prometheus_client's creation timestamps, not a metric of ours
        else:
            owner = family.name
            exposition.families.add(family.name)
        for sample in family.samples:
            exposition.family_of[sample.name] = owner
            exposition.labels_of.setdefault(sample.name, set()).update(sample.labels)
    return exposition


def _members(group: Any) -> Iterator[Any]:
    """The fields of a metrics dataclass, nested groups (OperatorMetrics.costs) flattened."""
    for f in dataclasses.fields(group):
        member = getattr(group, f.name)
        if dataclasses.is_dataclass(member) and not isinstance(member, type):
            yield from _members(member)
        else:
            yield member


def _touch(metrics: ListenerMetrics | OperatorMetrics) -> CollectorRegistry:
    """Give every labelled family of `metrics` one child, so it shows up with samples."""
    for metric in _members(metrics):
        if isinstance(metric, ScaleSetGauge | ScaleSetCounter | ScaleSetHistogram):
            values = {name: SAMPLE_LABEL_VALUES.get(name, "x") for name in metric.labelnames}
            if isinstance(metric, ScaleSetCounter):
                metric.labels(**values).inc()
            elif isinstance(metric, ScaleSetGauge):
                metric.labels(**values).set(3)
            else:
                metric.labels(**values).observe(4.2)
            continue
        if not isinstance(metric, Counter | Gauge | Histogram):
            continue
        names = metric._labelnames
        values = {name: SAMPLE_LABEL_VALUES.get(name, "x") for name in names}
        if isinstance(metric, Counter):
            (metric.labels(**values) if names else metric).inc()
        elif isinstance(metric, Gauge):
            (metric.labels(**values) if names else metric).set(3)
        else:
            (metric.labels(**values) if names else metric).observe(4.2)
    return metrics.registry


def _registries() -> list[CollectorRegistry]:
    return [_touch(ListenerMetrics.create()), _touch(OperatorMetrics.create())]


@functools.cache
def _exported() -> Exposition:
    return _parse("".join(generate_latest(r).decode() for r in _registries()))


# --- tests ---------------------------------------------------------------------------------


def test_dashboard_is_a_grafana_dashboard_with_the_variables() -> None:
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] == "runnerfleet"
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "scale_set"):
        assert variables[name]["type"] == "query"
        assert "label_values(runnerfleet_" in variables[name]["definition"]
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    panels = list(_walk_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_every_query_names_a_runnerfleet_metric() -> None:
    for query in _queries():
        assert METRIC_NAME.search(query.expr), f"{query.where}: no runnerfleet metric in it"


def test_every_metric_the_dashboard_uses_is_exported() -> None:
    exported = _exported()
    missing = sorted(_used_names() - exported.family_of.keys())
    assert not missing, f"dashboard queries metrics nobody exports: {missing}"


def test_dashboard_covers_the_exported_families() -> None:
    exported = _exported()
    used = {exported.family_of[name] for name in _used_names() if name in exported.family_of}
    unused = sorted(exported.families - used)
    coverage = len(used & exported.families) / len(exported.families)
    assert coverage >= MIN_FAMILY_COVERAGE, f"families without a panel: {unused}"


@pytest.mark.parametrize("query", _queries(), ids=lambda q: q.where)
def test_labels_in_the_query_exist_on_its_metrics(query: Query) -> None:
    labels_of = _exported().labels_of
    names = set(METRIC_NAME.findall(query.expr))
    assert names <= labels_of.keys(), f"{query.where}: not exported: {names - labels_of.keys()}"
    for name, matchers in SELECTOR.findall(query.expr):
        for label in MATCHER.findall(matchers):
            assert label in labels_of[name], f"{query.where}: {name} has no label {label!r}"
    grouped = {
        label.strip()
        for clause in GROUPING.findall(query.expr)
        for label in clause.split(",")
        if label.strip()
    }
    for name in names:
        absent = grouped - labels_of[name]
        assert not absent, f"{query.where}: {name} has no label(s) {sorted(absent)} to group by"
    for name, label in LABEL_VALUES.findall(query.expr):
        assert label in labels_of[name], f"{query.where}: label_values of missing label {label!r}"
    if query.legend:
        shown = set(LEGEND_LABEL.findall(query.legend))
        kept = grouped or set.intersection(*(labels_of[name] for name in names))
        assert shown <= kept, f"{query.where}: legend shows labels the query drops: {shown - kept}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_names_match_a_real_metrics_scrape() -> None:
    """Scrape `/metrics` of the real HTTP server, as Prometheus would, for both processes."""
    text = ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for registry in _registries():
            port = _free_port()
            runner = await serve_metrics(registry, port)
            try:
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    assert response.status == 200
                    assert response.content_type == "text/plain"
                    text += await response.text()
            finally:
                await runner.cleanup()
    scraped = _parse(text)
    missing = sorted(_used_names() - scraped.family_of.keys())
    assert not missing, f"dashboard queries metrics /metrics does not serve: {missing}"
    assert scraped.families == _exported().families
