"""The operator's per-scale-set metric families (plain numbers, not prometheus_client children)
export exactly what prometheus_client's own Gauge, Counter and Histogram export for the same
updates, minus the `_created` series; and they are smaller."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from runnerfleet.metrics import (
    CostMetrics,
    OperatorMetrics,
    ScaleSetCounter,
    ScaleSetGauge,
    ScaleSetHistogram,
)

SS = ["namespace", "scale_set"]
STATES = ["pending", "idle", "busy", "failed"]


@pytest.fixture
def no_created() -> Iterator[None]:
    """prometheus_client's families without `_created`, to compare with ours."""
    import prometheus_client.metrics as pm

    saved = pm._use_created
    pm._use_created = False
    yield
    pm._use_created = saved


def _reference() -> OperatorMetrics:
    """The families as they were: prometheus_client's own classes."""
    r = CollectorRegistry()
    return OperatorMetrics(
        registry=r,
        runners=Gauge("runnerfleet_runners", "Runners by state", [*SS, "state"], registry=r),
        desired=Gauge("runnerfleet_desired_runners", "Runners wanted", SS, registry=r),
        min_runners=Gauge("runnerfleet_min_runners", "spec.minRunners", SS, registry=r),
        max_runners=Gauge("runnerfleet_max_runners", "spec.maxRunners", SS, registry=r),
        runner_failures=Counter(
            "runnerfleet_runner_failures", "Runner failures", [*SS, "reason"], registry=r
        ),
        reconcile_seconds=Histogram(
            "runnerfleet_reconcile_seconds", "Duration of one reconcile round", SS, registry=r
        ),
        round_slot_wait_seconds=Histogram(
            "runnerfleet_round_slot_wait_seconds",
            "Time a scale set's round waited for a free round slot",
            registry=r,
        ),
        rounds_running=Gauge(
            "runnerfleet_rounds_running", "Rounds holding a round slot now", registry=r
        ),
        costs=CostMetrics.create(r),  # plain-number families from the start (issue 14)
    )


def _drive(m: OperatorMetrics, sets: int) -> None:
    for i in range(sets):
        key = (f"team-{i // 10:03d}", f"set-{i % 10:02d}")
        m.reconcile_seconds.labels(*key).observe(0.003 * i)
        m.reconcile_seconds.labels(namespace=key[0], scale_set=key[1]).observe(42.0)
        m.min_runners.labels(*key).set(1)
        m.max_runners.labels(*key).set(5)
        m.desired.labels(*key).set(i % 5)
        for n, state in enumerate(STATES):
            m.runners.labels(*key, state).set(n)
        if i % 3 == 0:
            m.runner_failures.labels(*key, "RegistrationTimeout").inc()
            m.runner_failures.labels(*key, "RegistrationTimeout").inc(2)
        m.round_slot_wait_seconds.observe(0.01)
        m.rounds_running.inc()
        m.rounds_running.dec()


def test_exposition_is_prometheus_clients(no_created: None) -> None:
    ours, reference = OperatorMetrics.create(), _reference()
    _drive(ours, 25)
    _drive(reference, 25)
    got = sorted(generate_latest(ours.registry).decode().splitlines())
    want = sorted(generate_latest(reference.registry).decode().splitlines())
    assert got == want
    assert 'runnerfleet_runner_failures_total{namespace="team-000",' in "\n".join(got)
    sample = ours.registry.get_sample_value(
        "runnerfleet_reconcile_seconds_count", {"namespace": "team-000", "scale_set": "set-01"}
    )
    assert sample == 2.0


def test_labels_must_match_the_label_names() -> None:
    gauge = ScaleSetGauge("x_gauge", "x", SS, registry=CollectorRegistry())
    with pytest.raises(ValueError, match="expected labels"):
        gauge.labels("only-namespace")
    with pytest.raises(ValueError, match="expected labels"):
        gauge.labels(namespace="a", scale_set="b", extra="c")


def test_a_scale_set_costs_a_fraction_of_a_prometheus_client_child() -> None:
    def traced(make: type[OperatorMetrics] | None) -> int:
        tracemalloc.start()
        try:
            m = OperatorMetrics.create() if make else _reference()
            before = tracemalloc.get_traced_memory()[0]
            _drive(m, 200)
            return tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()

    ours, reference = traced(OperatorMetrics), traced(None)
    assert ours * 3 < reference, (ours, reference)


def test_a_deleted_scale_set_leaves_no_series(no_created: None) -> None:
    """forget_scale_set (called when a scale set's finalizer ran) drops every series of that
    set, in every per-scale-set family, and nothing else."""
    ours = OperatorMetrics.create()
    _drive(ours, 12)
    gone = ours.forget_scale_set("team-000", "set-03")
    assert gone == 4 + 1 + 1 + 1 + 1 + 1  # runners by 4 states, desired, min, max, failures, hist
    assert all(
        isinstance(f, ScaleSetGauge | ScaleSetCounter | ScaleSetHistogram)
        for f in (ours.runners, ours.desired, ours.runner_failures, ours.reconcile_seconds)
    ), "the per-scale-set families are ours (prometheus_client's would keep the series)"
    text = generate_latest(ours.registry).decode()
    assert 'scale_set="set-03"' not in text
    assert 'namespace="team-000",scale_set="set-04"' in text
    assert ours.forget_scale_set("team-000", "set-03") == 0, "idempotent"
