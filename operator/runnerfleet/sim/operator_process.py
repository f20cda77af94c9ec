"""Run `runnerfleet operator` as a child process (for the demo, benchmarks and tests), and read
its resource use from /proc.

Layer: tooling.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runnerfleet.localcluster.ports import free_ports

# How a `runnerfleet` command is started: given its arguments and the environment variables the
# caller sets, the argv and the whole environment to exec. The default, `launch_here`: this
# checkout's code under this interpreter. tests/image passes one that runs the built image.
Launch = Callable[[list[str], dict[str, str]], tuple[list[str], dict[str, str]]]


def launch_here(args: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """`runnerfleet ARGS` as this interpreter's module, in this process's environment."""
    return [sys.executable, "-m", "runnerfleet.cli", *args], {**os.environ, **env}


@dataclass
class OperatorProcess:
    """The operator, watching one namespace, its output appended to `log_path`."""

    kubeconfig: Path
    namespace: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    metrics_port: int = field(default_factory=lambda: free_ports(1)[0])
    args: list[str] = field(default_factory=list)  # extra `runnerfleet operator` options
    env: dict[str, str] = field(default_factory=dict)
    launch: Launch = launch_here

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv, env = self.launch(
            ["operator", "--kubeconfig", str(self.kubeconfig), "--namespace", self.namespace,
             *self.args],
            {"RUNNERFLEET_METRICS_PORT": str(self.metrics_port), **self.env},
        )  # fmt: skip
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as when a node dies."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def peak_rss_mib(self) -> float:
        """Peak resident memory (VmHWM) of the running process, in MiB."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> float:
        """User + system CPU time of the running process so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
