"""`runnerfleet cluster up|status|down` as a user runs it, including its failure modes."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runnerfleet.localcluster import BinaryPaths
from tests.support.processes import error_lines, orphans, run_cli


@pytest.fixture
def binaries() -> BinaryPaths:
    return BinaryPaths.locate()


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    yield path
    run_cli("cluster", "down", "--state-dir", str(path))


def test_up_five_nodes_within_20s_then_down_leaves_nothing(
    state_dir: Path, binaries: BinaryPaths
) -> None:
    started = time.monotonic()
    up = run_cli("cluster", "up", "--nodes", "5", "--state-dir", str(state_dir))
    elapsed = time.monotonic() - started
    assert up.returncode == 0, up.stderr
    assert elapsed <= 20.0, f"cluster up took {elapsed:.1f}s"
    kubeconfig = next(
        ln.split(": ", 1)[1] for ln in up.stdout.splitlines() if ln.startswith("kubeconfig: ")
    )

    nodes = subprocess.run(
        [str(binaries["kubectl"]), "--kubeconfig", kubeconfig, "get", "nodes", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    items = json.loads(nodes.stdout)["items"]
    ready = [
        n["metadata"]["name"]
        for n in items
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    ]
    assert len(items) == 5
    assert len(ready) == 5, ready

    status = run_cli("cluster", "status", "--json", "--state-dir", str(state_dir))
    assert status.returncode == 0, status.stdout
    report = json.loads(status.stdout)
    assert set(report["components"]) == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    }
    assert all(c["alive"] for c in report["components"].values())
    assert orphans(state_dir), "the running cluster's processes should be visible"

    down = run_cli("cluster", "down", "--state-dir", str(state_dir))
    assert down.returncode == 0, down.stderr
    assert not state_dir.exists()
    assert orphans(state_dir) == []
    gone = run_cli("cluster", "status", "--state-dir", str(state_dir))
    assert gone.returncode == 3


def test_up_with_karpenter_starts_empty_with_its_crds_and_node_class(state_dir: Path) -> None:
    binaries = BinaryPaths.locate(karpenter=True)
    up = run_cli("cluster", "up", "--karpenter", "--state-dir", str(state_dir))
    assert up.returncode == 0, up.stderr
    assert "Karpenter" in up.stdout
    kubeconfig = str(state_dir / "kubeconfig")

    def kubectl(*args: str) -> dict[str, object]:
        done = subprocess.run(
            [str(binaries["kubectl"]), "--kubeconfig", kubeconfig, *args, "-o", "json"],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        result: dict[str, object] = json.loads(done.stdout)
        return result

    assert kubectl("get", "nodes")["items"] == []
    assert kubectl("get", "kwoknodeclasses", "default")["kind"] == "KWOKNodeClass"
    assert kubectl("get", "nodepools")["items"] == []  # the karpenter.sh/v1 API is served
    report = json.loads(
        run_cli("cluster", "status", "--json", "--state-dir", str(state_dir)).stdout
    )
    assert report["components"]["karpenter"]["alive"]
    assert run_cli("cluster", "down", "--state-dir", str(state_dir)).returncode == 0
    assert orphans(state_dir) == []


def test_taken_port_gives_one_clear_line_and_no_orphans(state_dir: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        up = run_cli("cluster", "up", "--apiserver-port", str(port), "--state-dir", str(state_dir))
    assert up.returncode != 0
    lines = error_lines(up.stderr)
    assert len(lines) == 1, up.stderr
    assert f"port {port}" in lines[0]
    assert "already in use" in lines[0]
    assert "--apiserver-port" in lines[0]
    assert orphans(state_dir) == []


def test_crashing_binary_is_named_with_its_cause_and_nothing_is_left_running(
    tmp_path: Path, state_dir: Path, binaries: BinaryPaths
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, path in binaries.paths.items():
        (bin_dir / name).symlink_to(path)
    (bin_dir / "kube-apiserver").unlink()
    crasher = bin_dir / "kube-apiserver"
    crasher.write_text("#!/bin/sh\necho 'Error: unknown flag: --frobnicate' >&2\nexit 3\n")
    crasher.chmod(0o755)

    up = run_cli("cluster", "up", "--state-dir", str(state_dir), "--bin-dir", str(bin_dir))
    assert up.returncode != 0
    lines = error_lines(up.stderr)
    assert len(lines) == 1, up.stderr
    assert "kube-apiserver exited with status 3" in lines[0]
    assert "unknown flag: --frobnicate" in lines[0]
    assert "make cluster-binaries" in lines[0]
    # etcd had started before the apiserver crashed: it must have been stopped.
    assert orphans(state_dir) == []


def test_second_up_in_same_state_dir_is_refused(state_dir: Path) -> None:
    first = run_cli("cluster", "up", "--nodes", "0", "--state-dir", str(state_dir))
    assert first.returncode == 0, first.stderr
    second = run_cli("cluster", "up", "--nodes", "0", "--state-dir", str(state_dir))
    assert second.returncode != 0
    assert "already running" in second.stderr
    assert "cluster down" in second.stderr
    assert run_cli("cluster", "status", "--state-dir", str(state_dir)).returncode == 0
