"""Start, watch and stop the control plane's processes.

Each component runs in its own session (process group) with its output in a log file, so
`stop` can end it and anything it spawned, and a crash can be explained from its log.
A pid is only ever signalled after checking that /proc still shows our binary under it,
so a stale state file can never kill an unrelated process that reused the pid.

Layer: tooling. Process and file I/O.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

_INTERESTING = re.compile(
    r"address already in use|error|fatal|panic|failed|invalid|unknown flag|no such",
    re.IGNORECASE,
)
# klog prefix: "E1121 22:00:00.000000   1234 file.go:12] "
_KLOG_PREFIX = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ [^\]]+\] ")


@dataclass(frozen=True)
class Started:
    """A component process we started."""

    name: str
    pid: int
    binary: str
    log: str


def start(
    name: str, argv: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Started]:
    """Start `argv` detached in its own session, output appended to `log`; `env` is added to
    this process's environment."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, **env} if env else None,
            start_new_session=True,
        )
    return proc, Started(name=name, pid=proc.pid, binary=argv[0], log=str(log))


def is_ours(pid: int, binary: str) -> bool:
    """True if `pid` is alive (not a zombie) and runs `binary`."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state == "Z":
        return False
    # A script's argv is [interpreter, script, ...]: accept the binary in either place.
    head = [a.decode(errors="replace") for a in cmdline.split(b"\0")[:2]]
    return binary in head


def stop(pid: int, binary: str, grace: float = 10.0) -> None:
    """SIGTERM the process group of `pid`, then SIGKILL after `grace` seconds."""
    if not is_ours(pid, binary):
        _reap(pid)
        return
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pid)
        if not is_ours(pid, binary):
            return
        time.sleep(0.05)
    _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and is_ours(pid, binary):
        _reap(pid)
        time.sleep(0.05)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _reap(pid: int) -> None:
    """Collect the exit status if `pid` is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def explain_exit(log: Path) -> str:
    """The most telling line of a crashed component's log, without klog's prefix."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log was written"
    tail = lines[-60:]
    chosen = next((ln for ln in reversed(tail) if _INTERESTING.search(ln)), None)
    if chosen is None:
        chosen = tail[-1] if tail else "it printed nothing"
    chosen = _KLOG_PREFIX.sub("", chosen)
    return chosen if len(chosen) <= 300 else chosen[:297] + "..."


def command_line(pid: int) -> list[str]:
    """The argv `pid` runs with, as /proc shows it (to start the same command again)."""
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [a.decode() for a in raw.rstrip(b"\0").split(b"\0")]


def tail(log: Path, lines: int = 30) -> str:
    """The last `lines` lines of a component's log (for an error message)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "no log was written"
    return "\n".join(text.splitlines()[-lines:]) or "it printed nothing"


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text` (used to find orphans)."""
    needle = text.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if needle in cmdline and state != "Z":
            found.append(int(entry.name))
    return found
