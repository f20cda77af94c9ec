"""The fleet report behind `runnerfleet status`: a pure fold over the objects in a cluster.

Layer: planning. Pure: takes plain dicts (as the apiserver sends them) and `now`.
"""

from __future__ import annotations

from typing import Any

from runnerfleet import conventions as c
from runnerfleet.models.base import epoch

STATES = ("pending", "idle", "busy", "failed")


def _ready(obj: dict[str, Any]) -> tuple[bool | None, str]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            ok = cond.get("status") == "True"
            return ok, "" if ok else f"{cond.get('reason', '')}: {cond.get('message', '')}"
    return None, "not reconciled yet"


def _standby(obj: dict[str, Any]) -> bool:
    return any(
        cond.get("type") == "Standby" and cond.get("status") == "True"
        for cond in (obj.get("status") or {}).get("conditions") or []
    )


def build_report(
    scale_sets: list[dict[str, Any]],
    listeners: list[dict[str, Any]],
    pools: list[dict[str, Any]],
    failure_events: list[dict[str, Any]],
    now: float,
    failures_since: float = 3600.0,
) -> dict[str, Any]:
    """Teams, scale sets (runners by state, demand), node pools and recent runner failures.

    Queued and running jobs are apart: a team's come from its listener's report
    (status.poll), a scale set's from the split of its demand (status.demand); demand is
    both together, what the scale set scales on."""
    sets = []
    for rss in sorted(
        scale_sets, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])
    ):
        meta, spec, status = rss["metadata"], rss.get("spec") or {}, rss.get("status") or {}
        demand = status.get("demand") or {}
        ready, why = _ready(rss)
        sets.append({
            "namespace": meta["namespace"], "name": meta["name"],
            "team": (meta.get("labels") or {}).get(c.LABEL_TEAM),
            "nodePool": spec.get("nodePool"),
            "min": spec.get("minRunners", 0), "max": spec.get("maxRunners", 0),
            "demand": demand.get("assignedJobs", 0),
            # None: the listener's report predates the split (issue 13).
            "queued": demand.get("queuedJobs"), "running": demand.get("runningJobs"),
            "desired": status.get("desired", 0),
            **{state: int(status.get(state, 0)) for state in STATES},
            "ready": ready, "problem": why,
            "suspended": bool(spec.get("suspend")), "standby": _standby(rss),
            "lastFailureReason": status.get("lastFailureReason"),
            # Runners on the current template and on older ones (None: an older operator).
            "updated": status.get("updated"), "outdated": status.get("outdated"),
        })  # fmt: skip
    teams = []
    for tl in sorted(listeners, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        meta, spec, status = tl["metadata"], tl.get("spec") or {}, tl.get("status") or {}
        poll = status.get("poll") or {}
        ready, why = _ready(tl)
        team = spec.get("team")
        mine = [s for s in sets if s["namespace"] == meta["namespace"] and s["team"] == team]
        teams.append({
            "team": team, "namespace": meta["namespace"], "listener": meta["name"],
            "ready": ready, "problem": why,
            "queued": int(poll.get("queuedJobs", 0)),
            "running": int(poll.get("runningJobs", 0)),
            "unmatched": int(poll.get("unmatchedJobs", 0)),
            "lastPoll": poll.get("lastSuccessfulPoll"),
            "rateLimitRemaining": poll.get("rateLimitRemaining"),
            "scaleSets": [s["name"] for s in mine],
            "runners": {state: sum(s[state] for s in mine) for state in STATES},
        })  # fmt: skip
    node_pools = []
    for pool in sorted(pools, key=lambda o: o["metadata"]["name"]):
        ready, why = _ready(pool)
        status = pool.get("status") or {}
        node_pools.append({
            "name": pool["metadata"]["name"], "mode": status.get("mode"),
            "teams": (pool.get("spec") or {}).get("teams") or [],
            "nodes": status.get("nodes", 0), "scaleSets": status.get("scaleSets") or [],
            "ready": ready, "problem": why,
        })  # fmt: skip
    failures = []
    for ev in failure_events:
        when = epoch(ev.get("lastTimestamp") or ev.get("eventTime") or ev.get("firstTimestamp"))
        if when is None or now - when > failures_since:
            continue
        obj = ev.get("involvedObject") or {}
        failures.append({"namespace": obj.get("namespace"), "scaleSet": obj.get("name"),
                         "message": ev.get("message", ""), "at": when})  # fmt: skip
    failures.sort(key=lambda f: -float(f["at"]))
    totals = {state: sum(s[state] for s in sets) for state in STATES}
    totals["queued"] = sum(t["queued"] for t in teams)
    totals["running"] = sum(t["running"] for t in teams)
    totals["demand"] = sum(int(s["demand"]) for s in sets)
    return {"teams": teams, "scaleSets": sets, "nodePools": node_pools,
            "recentFailures": failures[:20], "totals": totals}  # fmt: skip
