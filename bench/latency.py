"""Queue -> running latency through the whole product, by how demand reaches the operator:
GitHub's runner scale-set protocol (the listener's long-poll session), signed webhooks, and
polling only (at the default 15 s interval), all in one run on one local cluster.

For each delivery mode: a steady stream (2 jobs/s) and a burst (every job at once, 7 s after
the listener became ready: mid poll interval), each warm (minRunners 2) and from zero
(minRunners 0). The modes run one after the other through `runnerfleet demo`'s driver, the
three deliveries side by side within each (pattern, warm) group so that noise on a shared
machine falls on all three alike; `--repeat N` runs the whole set N times. Ratios are taken
against polling, measured in the same run. Writes bench/latency.json.

    python bench/latency.py [--jobs 100] [--poll-interval 15s] [--repeat 1]

Layer: tooling (benchmark); starts a local control plane, the operator and the fake GitHub.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from runnerfleet.localcluster import LocalCluster, NodeSpec
from runnerfleet.sim.demo import Demo, DemoResult

ROOT = Path(__file__).resolve().parents[1]
DELIVERIES = ("scaleSet", "webhook", "poll")
BASELINE = "poll"  # ratios are against polling, measured in the same run
STREAM_RATE = 2.0  # jobs per second
BURST_RATE = 1000.0  # every job at once
BURST_IDLE = 7.0  # the burst lands 7 s after the listener is ready: mid poll interval


@dataclass(frozen=True)
class Mode:
    pattern: str  # "stream" or "burst"
    delivery: str  # one of DELIVERIES
    warm: int  # minRunners

    @property
    def key(self) -> str:
        return f"{self.pattern}/{self.delivery}/min{self.warm}"

    def group(self, delivery: str) -> str:
        return f"{self.pattern}/{delivery}/min{self.warm}"


MODES = [
    Mode(pattern, delivery, warm)
    for pattern in ("stream", "burst")
    for warm in (2, 0)
    for delivery in DELIVERIES
]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--poll-interval", default="15s")
    parser.add_argument("--repeat", type=int, default=1, help="Run every mode this many times.")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "latency.json")
    args = parser.parse_args()
    console = Console(stderr=True)
    runs: list[dict[str, dict[str, Any]]] = []
    load_before = os.getloadavg()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rf-latency-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster")
        cluster.up([NodeSpec(count=4)])
        try:
            cluster.apply_crds(ROOT / "crds")
            for _ in range(args.repeat):
                runs.append(_one_pass(cluster, Path(tmp), console, args))
        finally:
            cluster.down()
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": _commit(),
        "machine": _machine(load_before),
        "settings": _settings(args),
        "wall_seconds": round(time.monotonic() - started, 1),
        "results": _aggregate(runs),
        "ratios_vs_poll": _ratios(runs),
        "runs": runs,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _one_pass(
    cluster: LocalCluster, tmp: Path, console: Console, args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        burst = mode.pattern == "burst"
        demo = Demo(
            cluster.kubeconfig, ROOT / "examples" / "runnerscaleset.yaml",
            ROOT / "examples" / "teamlistener.yaml", args.jobs, tmp / "logs", console,
            delivery=mode.delivery, poll_interval=args.poll_interval,
            arrivals_per_second=BURST_RATE if burst else STREAM_RATE,
            min_runners=mode.warm, idle_before=BURST_IDLE if burst else 0.0,
        )  # fmt: skip
        rows[mode.key] = _row(asyncio.run(demo.run()))
        print(json.dumps({mode.key: rows[mode.key]}), flush=True)
    return rows


def _row(result: DemoResult) -> dict[str, Any]:
    return {
        "queue_to_running_seconds": result.queue_to_running_seconds,
        "jobs_completed": result.jobs_completed,
        "jobs": result.jobs,
        "ok": result.ok,
        "leftovers": {  # what the teardown still found after 30 s (ok needs all zero)
            "registrations": result.orphan_registrations,
            "pods": result.leftover_pods,
            "secrets": result.leftover_secrets,
            "github_scale_sets": result.leftover_github_scale_sets,
        },
        "rest_counted_per_job": result.rest_counted_per_job,
        "actions_requests_per_job": result.actions_requests_per_job,
        "rest_requests_counted": result.rest_requests_counted,
        "github_requests": result.github_requests,
        "job_messages": result.actions_service.get("job_messages", {}),
        "reassigned": result.actions_service.get("reassigned", 0),
        "listener_ready_seconds": result.listener_ready_seconds,
        "elapsed_seconds": result.elapsed_seconds,
    }


def _aggregate(runs: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per mode: the median over runs of p50/p95 and per-job costs, with every run's value
    (so the spread between runs can be read)."""
    out: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        rows = [run[mode.key] for run in runs]
        p50s = [r["queue_to_running_seconds"]["p50"] for r in rows]
        p95s = [r["queue_to_running_seconds"]["p95"] for r in rows]
        out[mode.key] = {
            "p50": round(statistics.median(p50s), 3),
            "p95": round(statistics.median(p95s), 3),
            "p50_runs": p50s,
            "p95_runs": p95s,
            "rest_counted_per_job": statistics.median(r["rest_counted_per_job"] for r in rows),
            "actions_requests_per_job": statistics.median(
                r["actions_requests_per_job"] for r in rows
            ),
            "all_ok": all(r["ok"] for r in rows),
        }
    return out


def _ratios(runs: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each mode's p50/p95 over polling's in the same run and group (pattern, warm); the
    median over runs and every run's ratio."""
    out: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        if mode.delivery == BASELINE:
            continue
        base = mode.group(BASELINE)
        ratio: dict[str, Any] = {}
        for q in ("p50", "p95"):
            each = [
                round(run[mode.key]["queue_to_running_seconds"][q]
                      / max(run[base]["queue_to_running_seconds"][q], 1e-3), 3)
                for run in runs
            ]  # fmt: skip
            ratio[q] = round(statistics.median(each), 3)
            ratio[f"{q}_runs"] = each
        out[mode.key] = ratio
    return out


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "jobs_per_mode": args.jobs,
        "repeat": args.repeat,
        "poll_interval": args.poll_interval,
        "stream_jobs_per_second": STREAM_RATE,
        "burst_after_idle_seconds": BURST_IDLE,
        "job_seconds": list(Demo.job_seconds),
        "warm": "minRunners 2",
        "from_zero": "minRunners 0",
        "max_runners": "examples/runnerscaleset.yaml (20)",
        "baseline": BASELINE,
        "actions_service": "fake defaults (long-poll 50 s, github.com flow: assigned directly)",
        "measure": "job started_at - created_at in the fake GitHub (queued -> runner assigned)",
    }


def _machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "note": "2 cores shared with other work (e2e tests ran alongside): timings are noisy",
    }


def _commit() -> str:
    def git(*cmd: str) -> str:
        done = subprocess.run(
            ["git", *cmd],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip()

    dirty = (
        " (+ uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    )
    return git("rev-parse", "--short", "HEAD") + dirty


if __name__ == "__main__":
    sys.exit(main())
