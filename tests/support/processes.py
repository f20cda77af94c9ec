"""Helpers to run the `runnerfleet` CLI as a real subprocess and look for orphans it left."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from runnerfleet.localcluster.processes import processes_mentioning


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """`runnerfleet ARGS...` in a child process (the installed console script's module)."""
    return subprocess.run(
        [sys.executable, "-m", "runnerfleet.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def orphans(state_dir: Path) -> list[str]:
    """Command lines of live processes still referring to `state_dir`."""
    out = []
    for pid in processes_mentioning(str(state_dir)):
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return out


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip()]
