"""Memory profile of `runnerfleet operator`: runs the operator in this process, as
`python -m runnerfleet.cli` would, and writes where its memory goes.

    FLEET_OPERATOR_WRAPPER=bench/memprofile.py MEMPROFILE_DIR=/tmp/mp MEMPROFILE_FRAMES=10 \\
        python bench/fleet.py --protocol scaleSet --demand direct ...
    kill -USR1 <operator pid>      # a full report now

Every `MEMPROFILE_INTERVAL` seconds (default 10) it appends one line to `<dir>/<pid>.rss`
(seconds since start, VmRSS and VmHWM in MiB). On SIGUSR1 and `MEMPROFILE_AFTER` seconds
after start (if set) it writes `<dir>/<pid>-<seconds>.txt`: RSS,
gc-tracked objects by type, asyncio tasks by coroutine, and with tracemalloc on
(`MEMPROFILE_FRAMES` > 0) the traced total and the top allocation sites by line, by
traceback, by package and by the innermost runnerfleet frame. `MEMPROFILE_FREEZE_AFTER`
(seconds) calls gc.freeze() then (or SIGUSR2), to compare RSS with and without it;
`MEMPROFILE_TRIM_EVERY` (seconds) calls glibc's malloc_trim(0) that often and logs the RSS
it left.

Layer: tooling (a benchmark helper, outside the package). I/O: the report files; the
operator's own I/O (Kubernetes, GitHub) through runnerfleet.cli.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import signal
import sys
import threading
import time
import tracemalloc
from collections import Counter
from functools import lru_cache
from pathlib import Path

STARTED = time.monotonic()
OUT = Path(os.environ.get("MEMPROFILE_DIR", "memprofile"))
FRAMES = int(os.environ.get("MEMPROFILE_FRAMES", "0"))
INTERVAL = float(os.environ.get("MEMPROFILE_INTERVAL", "10"))
AFTER = float(os.environ.get("MEMPROFILE_AFTER", "0"))
FREEZE_AFTER = float(os.environ.get("MEMPROFILE_FREEZE_AFTER", "0"))
TRIM_EVERY = float(os.environ.get("MEMPROFILE_TRIM_EVERY", "0"))
TOP = 40


def status_mib() -> tuple[float, float]:
    """VmRSS and VmHWM of this process, MiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


@lru_cache(maxsize=4096)  # called per trace (millions): a Path per call took minutes
def package_of(filename: str) -> str:
    """`kopf`, `runnerfleet/services/x.py`, `<stdlib>/asyncio`... for grouping."""
    parts = Path(filename).parts
    if "runnerfleet" in parts:
        return "/".join(parts[parts.index("runnerfleet") :])
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    if "python3.11" in parts:
        i = parts.index("python3.11")
        return "<stdlib>/" + (parts[i + 1] if len(parts) > i + 1 else "?")
    return filename


def objects_report() -> list[str]:
    """gc-tracked objects by type and asyncio tasks by coroutine."""
    objs = gc.get_objects()
    by_type = Counter(type(o).__qualname__ for o in objs)
    tasks = Counter(
        getattr(t.get_coro(), "__qualname__", "?") for t in objs if isinstance(t, asyncio.Task)
    )
    lines = [f"gc-tracked objects: {len(objs)}", "", "by type:"]
    lines += [f"{n:>10} {name}" for name, n in by_type.most_common(TOP)]
    lines += ["", f"asyncio tasks: {sum(tasks.values())}"]
    lines += [f"{n:>10} {name}" for name, n in tasks.most_common(TOP)]
    return lines


def tracemalloc_report() -> list[str]:
    """Top allocation sites: by line, by traceback, by package, by runnerfleet frame."""
    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    total = sum(s.size for s in snap.statistics("filename"))
    own = tracemalloc.get_tracemalloc_memory() / 2**20
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    lines = [f"traced: {total / 2**20:.1f} MiB, peak {peak:.1f} (tracemalloc's own: {own:.1f} MiB)",
             "", "by line:"]  # fmt: skip
    for stat in snap.statistics("lineno")[:TOP]:
        lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:>8} {stat.traceback[0]}")
    by_package: Counter[str] = Counter()
    by_ours: Counter[str] = Counter()
    # The raw traces, (domain, size, ((filename, lineno), ...) innermost first, ...): the
    # Trace/Traceback/Frame wrappers cost microseconds each, minutes over millions of blocks.
    for _domain, size, frames, *_ in snap.traces._traces:
        by_package[package_of(frames[0][0])] += size
        ours = next((f for f in frames if "/runnerfleet/" in f[0]), None)
        by_ours[f"{package_of(ours[0])}:{ours[1]}" if ours else "(none)"] += size
    lines += ["", "by package (innermost frame):"]
    lines += [f"{n / 2**20:8.2f} MiB {k}" for k, n in by_package.most_common(TOP)]
    lines += ["", "by innermost runnerfleet frame:"]
    lines += [f"{n / 2**20:8.2f} MiB {k}" for k, n in by_ours.most_common(TOP)]
    lines += ["", "by traceback:"]
    for stat in snap.statistics("traceback")[:15]:
        lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:>8}")
        lines += [f"      {f.filename}:{f.lineno}" for f in list(stat.traceback)[-FRAMES:]]
    return lines


def report(reason: str) -> None:
    seconds = int(time.monotonic() - STARTED)
    rss, hwm = status_mib()
    lines = [f"{reason} at {seconds}s: VmRSS {rss:.1f} MiB, VmHWM {hwm:.1f} MiB", ""]
    lines += objects_report()
    if tracemalloc.is_tracing():
        lines += ["", *tracemalloc_report()]
    (OUT / f"{os.getpid()}-{seconds}.txt").write_text("\n".join(lines) + "\n")


def watch() -> None:
    """The sampling thread: RSS lines; asks the main thread for the timed report and freeze.

    It never touches Python objects itself: gc.get_objects() from another thread can hand
    out a tuple the main thread is still building (seen: SystemError in _PyTuple_Resize
    during an import). Reports and gc.freeze() run in the main thread's signal handlers,
    between bytecodes."""
    after_done = freeze_done = False
    rss_file = OUT / f"{os.getpid()}.rss"
    trimmed_at = 0.0
    while True:
        time.sleep(INTERVAL)
        elapsed = time.monotonic() - STARTED
        rss, hwm = status_mib()
        line = f"{elapsed:.0f} {rss:.1f} {hwm:.1f}"
        if TRIM_EVERY and elapsed - trimmed_at >= TRIM_EVERY:
            # glibc's malloc_trim(0): free pages inside the heaps go back to the kernel (a
            # C call, safe from this thread); the line shows RSS before and after it.
            took = time.perf_counter()
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            took = time.perf_counter() - took
            trimmed_at = elapsed
            line += f" trimmed-to {status_mib()[0]:.1f} in {took * 1000:.1f}ms"
        with rss_file.open("a") as out:
            out.write(line + "\n")
        if FREEZE_AFTER and not freeze_done and elapsed >= FREEZE_AFTER:
            os.kill(os.getpid(), signal.SIGUSR2)
            freeze_done = True
        if AFTER and not after_done and elapsed >= AFTER:
            os.kill(os.getpid(), signal.SIGUSR1)
            after_done = True


def freeze() -> None:
    gc.collect()
    gc.freeze()
    (OUT / f"{os.getpid()}.frozen").write_text(f"{gc.get_freeze_count()} objects\n")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    if FRAMES > 0:
        tracemalloc.start(FRAMES)
    signal.signal(signal.SIGUSR1, lambda *_: report("SIGUSR1"))
    signal.signal(signal.SIGUSR2, lambda *_: freeze())
    threading.Thread(target=watch, daemon=True, name="memprofile").start()
    from runnerfleet.cli import main as cli_main

    sys.argv = ["runnerfleet", *sys.argv[1:]]
    cli_main()


if __name__ == "__main__":
    main()
