"""Prometheus metric families of the listener and the operator (`runnerfleet_` prefix).

Labels stay bounded: namespace, scale set, team, endpoint, status code. Never a job id or a
runner name. Each process builds its families on its own registry (tests run several), and
serves them with `serve_metrics`.

The operator's per-scale-set families keep each series as plain numbers in one dict of the
family (`ScaleSetGauge`, `ScaleSetCounter`, `ScaleSetHistogram`), not as prometheus_client
children: a child is an object with its own lock and one locked value per sample (a histogram
child: 17), ~11 KiB per scale set over the six families, ~11 MiB at 1,000 scale sets. They are
updated and scraped on the operator's event loop only, so they need no locks; they export the
same names and labels, without the `_created` series.

Layer: bottom (like conventions). Only `serve_metrics` does I/O (an HTTP listener).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

QUEUE_WAIT_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
EXECUTION_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 21600)


@dataclass
class ListenerMetrics:
    registry: CollectorRegistry
    queued_jobs: Gauge
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
                              "Queued or running jobs matched to a scale set", ss, registry=r),
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


def _key(
    names: Sequence[str], values: tuple[object, ...], named: dict[str, object]
) -> tuple[str, ...]:
    """A series' label values, given in order or by name (as prometheus_client's labels())."""
    if named:
        values = tuple(named[n] for n in names)
    if len(values) != len(names) or (named and len(named) != len(names)):
        raise ValueError(f"expected labels {list(names)}, got {values or named}")
    return tuple(str(v) for v in values)


class _Value:
    """One series of a plain-number family: what `labels()` returns (made per call, kept by
    nobody)."""

    __slots__ = ("_key", "_store")

    def __init__(self, store: dict[tuple[str, ...], float], key: tuple[str, ...]) -> None:
        self._store, self._key = store, key

    def set(self, value: float) -> None:
        self._store[self._key] = float(value)

    def inc(self, amount: float = 1.0) -> None:
        self._store[self._key] = self._store.get(self._key, 0.0) + amount

    def dec(self, amount: float = 1.0) -> None:
        self.inc(-amount)


class ScaleSetGauge(Gauge):
    """A labelled gauge whose series are floats in one dict (see the module docstring)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry) -> None:  # fmt: skip
        super().__init__(name, documentation, labelnames, registry=registry)
        self._values: dict[tuple[str, ...], float] = {}

    def labels(self, *values: object, **named: object) -> _Value:  # type: ignore[override]
        return _Value(self._values, _key(self._labelnames, values, named))

    def _multi_samples(self) -> Iterable[Sample]:
        for key, value in list(self._values.items()):
            yield Sample("", dict(zip(self._labelnames, key, strict=True)), value, None, None)


class ScaleSetCounter(Counter):
    """A labelled counter whose series are floats in one dict (see the module docstring)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry) -> None:  # fmt: skip
        super().__init__(name, documentation, labelnames, registry=registry)
        self._values: dict[tuple[str, ...], float] = {}

    def labels(self, *values: object, **named: object) -> _Value:  # type: ignore[override]
        return _Value(self._values, _key(self._labelnames, values, named))

    def _multi_samples(self) -> Iterable[Sample]:
        for key, value in list(self._values.items()):
            labels = dict(zip(self._labelnames, key, strict=True))
            yield Sample("_total", labels, value, None, None)


class _Observations:
    """One series of a ScaleSetHistogram: what `labels()` returns."""

    __slots__ = ("_family", "_key")

    def __init__(self, family: ScaleSetHistogram, key: tuple[str, ...]) -> None:
        self._family, self._key = family, key

    def observe(self, amount: float) -> None:
        self._family.record(self._key, amount)


class ScaleSetHistogram(Histogram):
    """A labelled histogram whose series are arrays of doubles in one dict: each the count
    in every bucket (not cumulative), then the sum (see the module docstring)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry) -> None:  # fmt: skip
        super().__init__(name, documentation, labelnames, registry=registry)
        self._series: dict[tuple[str, ...], array[float]] = {}
        self._le = [str(floatToGoString(b)) for b in self._upper_bounds]  # type: ignore[no-untyped-call]

    def labels(self, *values: object, **named: object) -> _Observations:  # type: ignore[override]
        return _Observations(self, _key(self._labelnames, values, named))

    def record(self, key: tuple[str, ...], amount: float) -> None:
        bounds = self._upper_bounds
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = array("d", bytes(8 * (len(bounds) + 1)))
        series[min(bisect_left(bounds, amount), len(bounds) - 1)] += 1  # as prometheus_client
        series[-1] += amount

    def _multi_samples(self) -> Iterable[Sample]:
        for key, series in list(self._series.items()):
            labels = dict(zip(self._labelnames, key, strict=True))
            total = 0.0
            for le, count in zip(self._le, series, strict=False):
                total += count
                yield Sample("_bucket", {**labels, "le": le}, total, None)
            yield Sample("_count", labels, total, None, None)
            yield Sample("_sum", labels, series[-1], None, None)


@dataclass
class OperatorMetrics:
    registry: CollectorRegistry
    runners: Gauge
    desired: Gauge
    min_runners: Gauge
    max_runners: Gauge
    runner_failures: Counter
    reconcile_seconds: Histogram
    # Saturation of the one process: rounds waiting for one of the shared round slots, and
    # how long. A wait that grows under load says the operator, not GitHub, is the bottleneck.
    round_slot_wait_seconds: Histogram
    rounds_running: Gauge

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
        )  # fmt: skip


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
