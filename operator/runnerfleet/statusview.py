"""`runnerfleet status`: the fleet report as rich tables, JSON, or a live-refreshing view.

Layer: adapters (beside handlers): reads through services, renders to the terminal.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from runnerfleet.gateways.kubernetes import KubeError, KubeGateway, connect
from runnerfleet.services.costs import cost_report
from runnerfleet.services.report import fleet_report


def _ok(ready: bool | None) -> Text:
    if ready is None:
        return Text("…", style="yellow")
    return Text("✔", style="green") if ready else Text("✘", style="bold red")


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def render(report: dict[str, Any]) -> Group:
    """The report as tables: teams, scale sets, node pools, recent failures."""
    totals = report["totals"]
    header = Text(
        f"queued {totals['queued']}  running {totals['running']}  demand {totals['demand']}  "
        f"runners: "
        f"{totals['busy']} busy, {totals['idle']} idle, {totals['pending']} pending, "
        f"{totals['failed']} failed",
        style="bold",
    )
    teams = Table(title="Teams", title_justify="left", expand=True)
    for col in ("team", "namespace", "ready", "queued", "running", "busy", "idle", "pending",
                "last poll", "rate limit", "problem"):  # fmt: skip
        teams.add_column(col)
    for t in report["teams"]:
        r = t["runners"]
        teams.add_row(t["team"], t["namespace"], _ok(t["ready"]), str(t["queued"]),
                      str(t["running"]), str(r["busy"]), str(r["idle"]), str(r["pending"]),
                      t["lastPoll"] or "-",
                      str(t["rateLimitRemaining"] if t["rateLimitRemaining"] is not None else "-"),
                      t["problem"])  # fmt: skip
    sets = Table(title="Scale sets", title_justify="left", expand=True)
    for col in ("namespace/name", "team", "pool", "ready", "queued", "running", "demand",
                "desired", "busy", "idle", "pending", "failed", "min/max", "note"):  # fmt: skip
        sets.add_column(col)
    for s in report["scaleSets"]:
        note = "standby" if s["standby"] else "suspended" if s["suspended"] else s["problem"]
        if s["problem"].startswith("RollingOut:"):  # counts say more than Ready's message
            note = f"rolling out: {s['outdated']} outdated, {_count(s['updated'])} updated"
        if not note and s["lastFailureReason"]:
            note = f"last failure: {s['lastFailureReason']}"
        sets.add_row(f"{s['namespace']}/{s['name']}", s["team"] or "-", s["nodePool"] or "-",
                     _ok(s["ready"]), _count(s["queued"]), _count(s["running"]),
                     str(s["demand"]), str(s["desired"]), str(s["busy"]), str(s["idle"]),
                     str(s["pending"]), str(s["failed"]),
                     f"{s['min']}/{s['max']}", note)  # fmt: skip
    parts: list[Any] = [header, teams, sets]
    if report["nodePools"]:
        pools = Table(title="Node pools", title_justify="left", expand=True)
        for col in ("name", "mode", "teams", "nodes", "ready", "used by", "problem"):
            pools.add_column(col)
        for p in report["nodePools"]:
            pools.add_row(p["name"], p["mode"] or "-", ", ".join(p["teams"]) or "shared",
                          str(p["nodes"]), _ok(p["ready"]), str(len(p["scaleSets"])),
                          p["problem"])  # fmt: skip
        parts.append(pools)
    if report["recentFailures"]:
        fails = Table(title="Recent runner failures (1 h)", title_justify="left", expand=True)
        for col in ("when", "scale set", "message"):
            fails.add_column(col)
        for f in report["recentFailures"]:
            when = dt.datetime.fromtimestamp(f["at"], dt.UTC).strftime("%H:%M:%S")
            fails.add_row(when, f"{f['namespace']}/{f['scaleSet']}", f["message"])
        parts.append(fails)
    return Group(*parts)


async def run_status(
    kubeconfig: str | None, namespace: str | None, as_json: bool, watch: bool, interval: float
) -> int:
    console = Console()
    if not console.is_terminal:  # piped: don't squeeze names into 80 columns
        console = Console(width=200)
    err = Console(stderr=True)
    api = await connect(kubeconfig)
    kube = KubeGateway(api)
    try:
        if as_json and not watch:
            print(json.dumps(await fleet_report(kube, namespace), indent=2))
            return 0
        if not watch:
            console.print(render(await fleet_report(kube, namespace)))
            return 0
        with Live(console=console, auto_refresh=False) as live:
            while True:
                report = await fleet_report(kube, namespace)
                if as_json:
                    print(json.dumps(report), flush=True)
                else:
                    live.update(render(report), refresh=True)
                await asyncio.sleep(interval)
    except KubeError as error:
        err.print(f"runnerfleet: error: {error}", markup=False)
        return 1
    finally:
        await api.close()


# ---------------------------------------------------------------- issue 14 part 1: costs
def _hours(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def render_costs(report: dict[str, Any]) -> Group:
    """`--costs`: a table per period (today, last 7 days, UTC), a row per team."""
    parts: list[Any] = [
        Text(
            f"costs from ConfigMap {report['namespace']}/{report['configMap']}"
            f" (updated {report['updatedAt'] or 'never'})",
            style="bold",
        )
    ]
    for key, title in (("day", f"Today ({report['today']})"), ("week", "Last 7 days")):
        table = Table(title=title, title_justify="left", expand=True)
        for col in ("team", "busy h", "idle h", "pending h", "idle share", "node h",
                    "node idle share", "cost"):  # fmt: skip
            table.add_column(col)
        for row in report[key]:
            hours = row["runnerHours"]
            cost = row["cost"]
            table.add_row(row["team"], _hours(hours["busy"]), _hours(hours["idle"]),
                          _hours(hours["pending"]), _share(row["idleShare"]),
                          _hours(row["nodeHours"]), _share(row["nodeIdleShare"]),
                          "-" if cost is None else f"{cost:.2f}")  # fmt: skip
        parts.append(table)
    return Group(*parts)


async def run_costs(kubeconfig: str | None, operator_namespace: str, as_json: bool) -> int:
    """Print the per-team cost summary (one ConfigMap read)."""
    err = Console(stderr=True)
    api = await connect(kubeconfig)
    try:
        report = await cost_report(KubeGateway(api), operator_namespace, time.time())
    except KubeError as error:
        err.print(f"runnerfleet: error: {error}", markup=False)
        return 1
    finally:
        await api.close()
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        console = Console()
        if not console.is_terminal:
            console = Console(width=200)
        console.print(render_costs(report))
    return 0
