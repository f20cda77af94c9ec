"""Queue -> running latency through the whole product, by how demand reaches the operator:
signed webhooks vs polling only (at the default 15 s interval). Runs `runnerfleet demo`'s
driver on one local cluster for each mode and writes bench/latency.json.

    python bench/latency.py [--jobs 100] [--poll-interval 15s]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from runnerfleet.localcluster import LocalCluster, NodeSpec
from runnerfleet.sim.demo import Demo

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--poll-interval", default="15s")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "latency.json")
    args = parser.parse_args()
    console = Console(stderr=True)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="rf-latency-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster")
        cluster.up([NodeSpec(count=4)])
        try:
            cluster.apply_crds(ROOT / "crds")
            # A steady stream (2 jobs/s) with and without a warm pool, and a burst of all
            # jobs at once after the listener has been idle (where the poll interval shows).
            modes = [(f"stream/{delivery}/min{warm}", delivery == "webhook", warm, 2.0, 0.0)
                     for warm in (0, 2) for delivery in ("webhook", "poll")]  # fmt: skip
            # The burst lands 7 s after a poll: mid-interval, as an unlucky real burst would.
            modes += [
                (f"burst/{d}/min0", d == "webhook", 0, 1000.0, 7.0) for d in ("webhook", "poll")
            ]
            for mode, webhooks, warm, rate, idle in modes:
                demo = Demo(
                    cluster.kubeconfig, ROOT / "examples" / "runnerscaleset.yaml",
                    ROOT / "examples" / "teamlistener.yaml", args.jobs, Path(tmp) / "logs",
                    console, webhooks=webhooks, poll_interval=args.poll_interval,
                    arrivals_per_second=rate, min_runners=warm, idle_before=idle,
                )  # fmt: skip
                result = asyncio.run(demo.run())
                rows[mode] = {
                    "queue_to_running_seconds": result.queue_to_running_seconds,
                    "jobs_completed": result.jobs_completed,
                    "jobs": result.jobs,
                    "github_requests": result.github_requests,
                }
                print(json.dumps({mode: rows[mode]}), flush=True)
        finally:
            cluster.down()
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "poll_interval": args.poll_interval,
        "results": rows,
        "burst_poll_over_webhook_p50": round(
            rows["burst/poll/min0"]["queue_to_running_seconds"]["p50"]
            / max(rows["burst/webhook/min0"]["queue_to_running_seconds"]["p50"], 1e-9), 1
        ),
    }  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
