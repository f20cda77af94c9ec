"""The chart's queue alerts (issue 13) fire on jobs waiting for a runner, never on running
ones: they query the queue-depth gauge the listener exports, with thresholds from values."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import generate_latest

from runnerfleet.metrics import ListenerMetrics

CHART = Path(__file__).resolve().parents[2] / "charts" / "runnerfleet"
METRIC = re.compile(r"\brunnerfleet_[a-z_]+")


def _alerts() -> dict[str, dict[str, str]]:
    """alert name -> its rule, read from the template (the `{{ }}` parts left as text)."""
    text = (CHART / "templates" / "prometheusrule.yaml").read_text()
    rules: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n\s+- alert: ", text)[1:]:
        name, _, rest = block.partition("\n")
        rules[name.strip()] = {
            key: value.strip()
            for key, value in re.findall(r"^\s+(expr|for): (.*)$", rest, re.MULTILINE)
        }
    return rules


def test_queue_alerts_watch_waiting_jobs_only() -> None:
    alerts = _alerts()
    for name in ("RunnerfleetQueueDepthHigh", "RunnerfleetQueueStuck"):
        expr = alerts[name]["expr"]
        assert "runnerfleet_listener_queue_depth" in expr, name
        assert "runnerfleet_listener_running_jobs" not in expr, name
        assert "runnerfleet_listener_queued_jobs" not in expr, name  # deprecated: both
        assert "runnerfleet_listener_demand" not in expr, name  # queued plus running too


def test_alert_metrics_exist_and_thresholds_have_defaults() -> None:
    listener = ListenerMetrics.create()
    listener.queue_depth.labels("ns", "s").set(1)
    exported = generate_latest(listener.registry).decode()
    for name in ("RunnerfleetQueueDepthHigh", "RunnerfleetQueueStuck"):
        for metric in METRIC.findall(_alerts()[name]["expr"]):
            base = metric.removesuffix("_total")
            assert base in exported or metric == "runnerfleet_jobs_started_total", metric
    values = yaml.safe_load((CHART / "values.yaml").read_text())["metrics"]["prometheusRule"]
    assert values["queueDepthMax"] > 0
    assert re.fullmatch(r"\d+[smh]", values["queueStuckFor"])
