"""Prometheus metric families of the listener and the operator (`runnerfleet_` prefix).

Labels stay bounded: namespace, scale set, team, endpoint, status code. Never a job id or a
runner name. Each process builds its families on its own registry (tests run several), and
serves them with `serve_metrics`.

The operator's per-scale-set families keep each series as plain numbers in one dict of the
family (`ScaleSetGauge`, `ScaleSetCounter`, `ScaleSetHistogram`), not as prometheus_client
children: a child is an object with its own lock and one locked value per sample (a histogram
child: 17), ~11 KiB per scale set over the six families, ~11 MiB at 1,000 scale sets. They are
custom collectors (prometheus_client's public `Collector` and `*MetricFamily` API, no private
attributes), updated and scraped on the operator's event loop only, so they need no locks;
they export the same names and labels, without the `_created` series.

Layer: bottom (like conventions). Only `serve_metrics` does I/O (an HTTP listener).
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

QUEUE_WAIT_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
EXECUTION_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 21600)


@dataclass
class ListenerMetrics:
    registry: CollectorRegistry
    queued_jobs: Gauge  # deprecated: queued plus running (use queue_depth and running_jobs)
    queue_depth: Gauge
    running_jobs: Gauge
    demand: Gauge
    unmatched_jobs: Gauge
    github_requests: Counter
    rate_limit_remaining: Gauge
    polls: Counter
    webhook_deliveries: Counter
    queue_wait: Histogram
    jobs_started: Counter
    jobs_completed: Counter
    scale_set: Gauge  # scale-set protocol statistics, by `stat`
    sessions: Gauge  # scale-set protocol sessions, by state
    job_execution: Histogram  # runner assigned -> job finished (scale-set protocol)

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> ListenerMetrics:
        r = registry or CollectorRegistry()
        ss = ["namespace", "scale_set"]
        return cls(
            registry=r,
            queued_jobs=Gauge("runnerfleet_listener_queued_jobs",
                              "DEPRECATED (queued plus running jobs, despite the name): use "
                              "runnerfleet_listener_queue_depth and "
                              "runnerfleet_listener_running_jobs", ss, registry=r),
            queue_depth=Gauge("runnerfleet_listener_queue_depth",
                              "Jobs of a scale set waiting for a runner (queued, not running)",
                              ss, registry=r),
            running_jobs=Gauge("runnerfleet_listener_running_jobs",
                               "Jobs of a scale set in progress on a runner", ss, registry=r),
            demand=Gauge("runnerfleet_listener_demand",
                         "Demand last written for a scale set", ss, registry=r),
            unmatched_jobs=Gauge("runnerfleet_listener_unmatched_jobs",
                                 "Jobs whose labels no scale set covers", ["team"], registry=r),
            github_requests=Counter("runnerfleet_github_requests",
                                    "GitHub API requests", ["endpoint", "status"], registry=r),
            rate_limit_remaining=Gauge("runnerfleet_github_rate_limit_remaining",
                                       "GitHub rate limit remaining", ["team"], registry=r),
            polls=Counter("runnerfleet_listener_polls", "Queue polls", ["result"], registry=r),
            webhook_deliveries=Counter("runnerfleet_webhook_deliveries",
                                       "Webhook deliveries", ["event", "result"], registry=r),
            queue_wait=Histogram("runnerfleet_job_queue_wait_seconds",
                                 "Time from job queued to runner assigned", ss,
                                 buckets=QUEUE_WAIT_BUCKETS, registry=r),
            jobs_started=Counter("runnerfleet_jobs_started", "Jobs seen starting", ss, registry=r),
            jobs_completed=Counter("runnerfleet_jobs_completed", "Jobs seen completing", ss,
                                   registry=r),
            scale_set=Gauge("runnerfleet_scale_set_statistic",
                            "GitHub's statistics of a scale set (scale-set protocol): "
                            "available/acquired/assigned/running jobs, registered/busy/idle "
                            "runners", [*ss, "stat"], registry=r),
            job_execution=Histogram("runnerfleet_job_execution_seconds",
                                    "Time from runner assigned to job finished", ss,
                                    buckets=EXECUTION_BUCKETS, registry=r),
            sessions=Gauge("runnerfleet_listener_sessions",
                           "Scale-set message sessions of this listener by state "
                           "(listening, conflict, connecting)", ["state"], registry=r),
        )  # fmt: skip


class _Value:
    """One series of a ScaleSetGauge or ScaleSetCounter: what `labels()` returns (made per
    call, kept by nobody)."""

    __slots__ = ("_key", "_store")

    def __init__(self, store: dict[tuple[str, ...], float], key: tuple[str, ...]) -> None:
        self._store, self._key = store, key

    def set(self, value: float) -> None:
        self._store[self._key] = float(value)

    def inc(self, amount: float = 1.0) -> None:
        self._store[self._key] = self._store.get(self._key, 0.0) + amount

    def dec(self, amount: float = 1.0) -> None:
        self.inc(-amount)


class _Family(Collector):
    """A labelled family whose series are plain numbers held here, exported through
    prometheus_client's public custom-collector API (`collect()` yielding metric families)."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation = name, documentation
        self.labelnames = tuple(labelnames)
        registry.register(self)

    def key(self, values: tuple[object, ...], named: dict[str, object]) -> tuple[str, ...]:
        """A series' label values, given in order or by name (as prometheus_client's labels())."""
        if named:
            if len(values) or set(named) != set(self.labelnames):
                raise ValueError(f"expected labels {list(self.labelnames)}, got {named}")
            values = tuple(named[n] for n in self.labelnames)
        if len(values) != len(self.labelnames):
            raise ValueError(f"expected labels {list(self.labelnames)}, got {list(values)}")
        return tuple(str(v) for v in values)

    def family(self) -> Metric:
        raise NotImplementedError

    def series_keys(self) -> dict[tuple[str, ...], object]:
        """The series held, by label values (the dict the subclass keeps them in)."""
        raise NotImplementedError

    def forget(self, *prefix: str) -> int:
        """Drop every series whose first label values are `prefix`; return how many."""
        held = self.series_keys()
        gone = [key for key in held if key[: len(prefix)] == prefix]
        for key in gone:
            del held[key]
        return len(gone)

    def describe(self) -> Iterable[Metric]:
        return [self.family()]  # the name, so the registry refuses a duplicate


class _Numbers(_Family):
    """A labelled family whose series are floats in one dict (see the module docstring)."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.values: dict[tuple[str, ...], float] = {}
        super().__init__(name, documentation, labelnames, registry)

    def labels(self, *values: object, **named: object) -> _Value:
        return _Value(self.values, self.key(values, named))

    def series_keys(self) -> dict[tuple[str, ...], object]:
        return self.values  # type: ignore[return-value]  # the same dict, values not read

    def family(self) -> GaugeMetricFamily | CounterMetricFamily:
        raise NotImplementedError

    def collect(self) -> Iterable[Metric]:
        family = self.family()
        for key, value in list(self.values.items()):
            family.add_metric(list(key), value)
        yield family


class ScaleSetGauge(_Numbers):
    def family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)


class ScaleSetCounter(_Numbers):
    def family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)


class _Observations:
    """One series of a ScaleSetHistogram: what `labels()` returns."""

    __slots__ = ("_family", "_key")

    def __init__(self, family: ScaleSetHistogram, key: tuple[str, ...]) -> None:
        self._family, self._key = family, key

    def observe(self, amount: float) -> None:
        self._family.record(self._key, amount)


class ScaleSetHistogram(_Family):
    """A labelled histogram whose series are arrays of doubles in one dict: the count in
    every bucket (not cumulative), then the sum (see the module docstring)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        self.bounds = bounds if bounds[-1] == math.inf else [*bounds, math.inf]
        self.le = [str(floatToGoString(b)) for b in self.bounds]  # type: ignore[no-untyped-call]
        self.series: dict[tuple[str, ...], array[float]] = {}
        super().__init__(name, documentation, labelnames, registry)

    def labels(self, *values: object, **named: object) -> _Observations:
        return _Observations(self, self.key(values, named))

    def series_keys(self) -> dict[tuple[str, ...], object]:
        return self.series  # type: ignore[return-value]  # the same dict, values not read

    def record(self, key: tuple[str, ...], amount: float) -> None:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = array("d", bytes(8 * (len(self.bounds) + 1)))
        # The first bucket whose bound is >= amount, as prometheus_client's Histogram.
        series[min(bisect_left(self.bounds, amount), len(self.bounds) - 1)] += 1
        series[-1] += amount

    def family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterable[Metric]:
        family = self.family()
        for key, series in list(self.series.items()):
            cumulative, buckets = 0.0, []
            for le, count in zip(self.le, series, strict=False):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(list(key), buckets, sum_value=series[-1])
        yield family


@dataclass
class OperatorMetrics:
    registry: CollectorRegistry
    # Per scale set: prometheus_client's own classes or our plain-number families.
    runners: Gauge | ScaleSetGauge
    desired: Gauge | ScaleSetGauge
    min_runners: Gauge | ScaleSetGauge
    max_runners: Gauge | ScaleSetGauge
    runner_failures: Counter | ScaleSetCounter
    reconcile_seconds: Histogram | ScaleSetHistogram
    # Saturation of the one process: rounds waiting for one of the shared round slots, and
    # how long. A wait that grows under load says the operator, not GitHub, is the bottleneck.
    round_slot_wait_seconds: Histogram
    rounds_running: Gauge
    costs: CostMetrics  # issue 14 part 1

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> OperatorMetrics:
        r = registry or CollectorRegistry()
        ss = ["namespace", "scale_set"]
        return cls(
            registry=r,
            runners=ScaleSetGauge("runnerfleet_runners", "Runners by state",
                                  [*ss, "state"], registry=r),
            desired=ScaleSetGauge("runnerfleet_desired_runners", "Runners wanted", ss,
                                  registry=r),
            min_runners=ScaleSetGauge("runnerfleet_min_runners", "spec.minRunners", ss,
                                      registry=r),
            max_runners=ScaleSetGauge("runnerfleet_max_runners", "spec.maxRunners", ss,
                                      registry=r),
            runner_failures=ScaleSetCounter("runnerfleet_runner_failures", "Runner failures",
                                            [*ss, "reason"], registry=r),
            reconcile_seconds=ScaleSetHistogram("runnerfleet_reconcile_seconds",
                                                "Duration of one reconcile round", ss,
                                                registry=r),
            round_slot_wait_seconds=Histogram(
                "runnerfleet_round_slot_wait_seconds",
                "Time a scale set's round waited for a free round slot", registry=r),
            rounds_running=Gauge("runnerfleet_rounds_running",
                                 "Rounds holding a round slot now", registry=r),
            costs=CostMetrics.create(r),
        )  # fmt: skip

    def forget_scale_set(self, namespace: str, name: str) -> int:
        """Drop a deleted scale set's series (else they would be exported until the process
        ends, and a fleet that churns scale sets would grow without bound). Returns how many
        series went. (prometheus_client's own classes, which tests compare against, are left.)"""
        families = (self.runners, self.desired, self.min_runners, self.max_runners,
                    self.runner_failures, self.reconcile_seconds,
                    self.costs.runner_seconds)  # fmt: skip
        self.costs.tallies.pop((namespace, name), None)
        return sum(f.forget(namespace, name) for f in families if isinstance(f, _Family))


# ---------------------------------------------------------------- issue 14 part 1: costs
@dataclass
class CostMetrics:
    """Cost counters (docs/costs.md), and the accounting state that goes with them.

    Process-local like every counter: a new leader starts from zero (Prometheus' increase()
    and rate() treat that as a reset) and its first round per scale set only starts the
    clock, so a failover loses at most one round and counts nothing twice. The team totals
    `runnerfleet status --costs` shows live in a ConfigMap the leader updates (services/costs.py).
    """

    runner_seconds: ScaleSetCounter  # namespace, scale_set, team, node_pool, state
    node_seconds: ScaleSetCounter  # node_pool
    node_seconds_attributed: ScaleSetCounter  # node_pool, team, use
    cost: ScaleSetCounter  # node_pool, team, currency
    # Last accounted round per (namespace, scale set): (when, runners per cost state).
    tallies: dict[tuple[str, str], tuple[float, dict[str, int]]] = field(default_factory=dict)
    # Per team: amounts counted since the summary ConfigMap was last written.
    unflushed: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def create(cls, r: CollectorRegistry) -> CostMetrics:
        return cls(
            runner_seconds=ScaleSetCounter(
                "runnerfleet_runner_seconds",
                "Runner-seconds by state (pending, idle, busy): runners in the state times the "
                "time they were in it", ["namespace", "scale_set", "team", "node_pool", "state"],
                registry=r),
            node_seconds=ScaleSetCounter(
                "runnerfleet_node_seconds", "Seconds of the pool's nodes (each node counts)",
                ["node_pool"], registry=r),
            node_seconds_attributed=ScaleSetCounter(
                "runnerfleet_node_seconds_attributed",
                "A pool's node-seconds split by the runner pods' requests: per team and use "
                "(busy: a runner running a job; other: idle or starting runners; team and use "
                "'unallocated': requested by no runner). Sums to runnerfleet_node_seconds",
                ["node_pool", "team", "use"], registry=r),
            cost=ScaleSetCounter(
                "runnerfleet_cost", "The attributed node-seconds priced by the pool's "
                "spec.prices", ["node_pool", "team", "currency"], registry=r),
        )  # fmt: skip

    def add_team(self, team: str, key: str, amount: float) -> None:
        row = self.unflushed.setdefault(team, {})
        row[key] = row.get(key, 0.0) + amount


async def serve_metrics(
    registry: CollectorRegistry, port: int, ready: Callable[[], bool] | None = None
) -> web.AppRunner:
    """Serve `/metrics` (Prometheus text format), `/healthz` (the process is alive) and
    `/readyz` (200 once `ready()`, 503 before; always 200 without it) on `port`; the caller
    cleans up."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        if ready is None or ready():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="warming up\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104 (the pod's own port)
    return runner
