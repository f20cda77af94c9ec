"""CLI failures that need no cluster: each gives one line with the cause and the fix."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.processes import error_lines, run_cli


def test_missing_go_and_binaries_names_the_fix(tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = {"PATH": "/usr/bin:/bin", "RUNNERFLEET_BIN_DIR": str(empty)}
    assert not any(Path(d, "go").exists() for d in env["PATH"].split(os.pathsep))
    up = run_cli("cluster", "up", "--state-dir", str(tmp_path / "s"), env=env)
    assert up.returncode != 0
    lines = error_lines(up.stderr)
    assert len(lines) == 1, up.stderr
    assert "Go toolchain is not on PATH" in lines[0]
    assert "make cluster-binaries" in lines[0]


def test_bad_taint_names_the_input(tmp_path: Path) -> None:
    up = run_cli("cluster", "up", "--node-taint", "gpu=yes", "--state-dir", str(tmp_path / "s"))
    assert up.returncode != 0
    assert error_lines(up.stderr) == [
        "runnerfleet: error: taint 'gpu=yes' is not of the form key=value:Effect or key:Effect"
    ]
    assert not (tmp_path / "s").exists()


def test_down_without_cluster_is_a_no_op(tmp_path: Path) -> None:
    down = run_cli("cluster", "down", "--state-dir", str(tmp_path / "none"))
    assert down.returncode == 0
    assert "no cluster in" in down.stdout


def test_bad_log_format_exits_2_naming_the_variable() -> None:
    for command in (["listen", "--namespace", "ns", "--name", "team-a"], ["operator"]):
        run = run_cli(*command, env={"RUNNERFLEET_LOG_FORMAT": "yaml"}, timeout=60)
        assert run.returncode == 2, run.stderr
        assert error_lines(run.stderr) == [
            "runnerfleet: error: RUNNERFLEET_LOG_FORMAT must be one of text/json, not 'yaml'"
        ]
