"""`runnerfleet demo --jobs 50 --json`, as a user runs it: its own cluster, exit code 0."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.processes import orphans, run_cli

ROOT = Path(__file__).resolve().parents[2]


def test_demo_completes_every_job_and_leaves_nothing(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    done = run_cli(
        "demo", "--jobs", "50", "--json", "--state-dir", str(state),
        "--example", str(ROOT / "examples" / "runnerscaleset.yaml"),
        "--listener-example", str(ROOT / "examples" / "teamlistener.yaml"),
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["jobs_completed"] == 50
    assert summary["jobs_failed"] == 0
    assert summary["orphan_registrations"] == 0
    assert summary["leftover_pods"] == 0
    assert summary["leftover_secrets"] == 0
    assert (
        0 < summary["queue_to_running_seconds"]["p50"] <= summary["queue_to_running_seconds"]["p95"]
    )
    assert summary["demand_source"].startswith("TeamListener: webhooks")
    assert orphans(state) == []  # the demo's own cluster is down again
