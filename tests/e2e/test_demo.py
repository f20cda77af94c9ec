"""`runnerfleet demo --json`, as a user runs it: its own cluster, exit code 0. The default runs
on GitHub's runner scale-set protocol; `--rest` keeps the REST path (webhooks + polling)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.support.processes import orphans, run_cli

ROOT = Path(__file__).resolve().parents[2]


def _with_terminal_stderr(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`runnerfleet ARGS...` as `runnerfleet demo --json | tail -1 | jq .` runs it in a
    terminal: stdout a pipe, stderr a terminal (a pty, drained as a terminal would be), so
    the live view is on."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runnerfleet.cli", *args],
        stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    os.close(slave)
    seen: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not data:
                return
            seen.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
        reader.join(10)
        os.close(master)
    err = b"".join(seen).decode(errors="replace")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _demo(state: Path, *args: str, terminal: bool = False) -> dict[str, Any]:
    argv = (
        "demo", "--json", "--state-dir", str(state),
        "--example", str(ROOT / "examples" / "runnerscaleset.yaml"),
        "--listener-example", str(ROOT / "examples" / "teamlistener.yaml"),
        *args,
    )  # fmt: skip
    done = _with_terminal_stderr(*argv, timeout=300) if terminal else run_cli(*argv, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # `| tail -1 | jq .` works: stdout is the JSON object alone, on one line of its own.
    assert done.stdout.count("\n") == 1, done.stdout[-500:]
    assert done.stdout.endswith("}\n"), done.stdout[-500:]
    summary: dict[str, Any] = json.loads(done.stdout)
    if terminal:  # the live view was there, on stderr
        assert "runnerfleet demo: RunnerScaleSet" in done.stderr, done.stderr[-1000:]
    assert orphans(state) == []  # the demo's own cluster is down again
    return summary


def _nothing_left(summary: dict[str, Any], jobs: int) -> None:
    assert summary["jobs_completed"] == jobs
    assert summary["jobs_failed"] == 0
    assert summary["orphan_registrations"] == 0
    assert summary["leftover_pods"] == 0
    assert summary["leftover_secrets"] == 0
    assert summary["leftover_github_scale_sets"] == 0
    latency = summary["queue_to_running_seconds"]
    assert 0 < latency["p50"] <= latency["p95"]


def test_demo_completes_every_job_on_the_scale_set_protocol(tmp_path: Path) -> None:
    summary = _demo(tmp_path / "demo", "--jobs", "50")
    _nothing_left(summary, 50)
    assert summary["protocol"] == "scaleSet"
    assert summary["demand_source"].startswith("TeamListener: GitHub scale-set session")
    actions = summary["actions_service"]
    assert actions["sessions"] == 1, "the listener held the scale set's session"
    messages = actions["job_messages"]
    assert messages["JobAssigned"] >= 50
    assert messages["JobStarted"] >= 50
    assert messages["JobCompleted"] >= 50
    assert summary["actions_requests_per_job"] > 0
    # Only token and registration calls touch the REST limit: none per job.
    assert summary["rest_counted_per_job"] < 0.1


def test_demo_rest_path_with_webhooks(tmp_path: Path) -> None:
    summary = _demo(tmp_path / "demo", "--jobs", "20", "--rest", terminal=True)
    _nothing_left(summary, 20)
    assert summary["protocol"] == "rest"
    assert summary["demand_source"].startswith("TeamListener: webhooks")
    assert summary["actions_service"]["scale_sets"] == 0  # nothing went through the protocol
    assert summary["actions_service"]["job_messages"]["JobAssigned"] == 0
    assert summary["rest_counted_per_job"] > 0  # JIT registrations and polls are REST calls
