"""Crash explanations pick the telling line of a component's log (pure over a file)."""

from __future__ import annotations

from pathlib import Path

from runnerfleet.localcluster.processes import explain_exit


def test_explain_exit_prefers_the_error_line_and_strips_klog_prefix(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_text(
        "I1121 22:00:00.000001    42 server.go:10] starting\n"
        "E1121 22:00:00.000002    42 run.go:72] failed to listen on 127.0.0.1:6443: "
        "listen tcp 127.0.0.1:6443: bind: address already in use\n"
        "I1121 22:00:00.000003    42 server.go:99] shutting down\n"
    )
    assert explain_exit(log) == (
        "failed to listen on 127.0.0.1:6443: "
        "listen tcp 127.0.0.1:6443: bind: address already in use"
    )


def test_explain_exit_without_log_or_errors(tmp_path: Path) -> None:
    assert explain_exit(tmp_path / "absent.log") == "no log was written"
    quiet = tmp_path / "q.log"
    quiet.write_text("hello\nbye\n")
    assert explain_exit(quiet) == "bye"
