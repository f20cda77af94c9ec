"""Cost accounting (issue 14 part 1): runner-seconds by state, node-seconds attributed to
teams, prices, and the rolling per-team summary `runnerfleet status --costs` reads.

Everything here is arithmetic on what a round already has: a scale set's plan counts, the
nodes of the pools and the runner pods on them. docs/costs.md explains the choices.

Runner-seconds are a left Riemann sum: each round adds the counts the *previous* round saw,
times the time since that round (a state held from the moment a round saw it until the next
round looked again). A gap longer than MAX_GAP (a process that stopped leading and leads
again, a stalled loop) counts as MAX_GAP: a stale count must not be stretched over minutes.

Layer: planning. Pure: no client, clock or environment (times are arguments).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runnerfleet import conventions as c
from runnerfleet.models.node_pool import PoolPrices, Prices
from runnerfleet.planning.runners import State

# The plan states that cost something, by their metric label. REGISTERING and STARTING have
# no pod yet; FINISHED, FAILED and KEPT pods have ended (their containers run no more).
COST_STATES: Mapping[State, str] = {
    State.PENDING: "pending",
    State.IDLE: "idle",
    State.BUSY: "busy",
}
RUNNER_STATES = tuple(COST_STATES.values())
MAX_GAP = 120.0  # longer than any resync (30 s ± 20 %), shorter than a failover's pause
UNALLOCATED = "unallocated"  # the team label of node-seconds no runner pod requested
USES = ("busy", "other", UNALLOCATED)  # node-seconds: busy runners, other runners, nobody
SUMMARY_DAYS = 8  # days the rolling summary keeps (a week, plus today)


# ---------------------------------------------------------------------------- runner-seconds
@dataclass(frozen=True)
class Tally:
    """What one scale set's last accounted round saw: when, and its runners per state."""

    at: float
    counts: Mapping[str, int]


def cost_counts(counts: Mapping[State, int]) -> dict[str, int]:
    """A plan's counts, as the cost states (pending, idle, busy)."""
    return {label: int(counts.get(state, 0)) for state, label in COST_STATES.items()}


def advance(
    previous: Tally | None, counts: Mapping[State, int], now: float
) -> tuple[dict[str, float], Tally]:
    """The runner-seconds to add per state since `previous`, and the tally to keep.

    No previous tally (a fresh process, a new scale set): nothing is added; the first round
    only starts the clock, so a restart loses at most the one round's interval and never
    counts a runner twice. A clock that went backwards adds nothing."""
    tally = Tally(now, cost_counts(counts))
    if previous is None:
        return dict.fromkeys(RUNNER_STATES, 0.0), tally
    gap = min(max(0.0, now - previous.at), MAX_GAP)
    return {s: previous.counts.get(s, 0) * gap for s in RUNNER_STATES}, tally


# ---------------------------------------------------------------------------- quantities
_QUANTITY = re.compile(r"^([0-9.]+)(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")
_SUFFIX = {
    "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")
GIB = float(2**30)


def quantity(value: object) -> float:
    """A Kubernetes quantity ("500m", "2Gi", "1.5") as a number; unparsable: 0 (a bad value
    never breaks accounting; the apiserver admits only valid ones)."""
    match = _QUANTITY.match(str(value).strip())
    if match is None:
        return 0.0
    try:
        number = float(match.group(1))
    except ValueError:
        return 0.0
    return number * _SUFFIX.get(match.group(2) or "", 1.0)


@dataclass(frozen=True)
class Resources:
    """CPU cores, memory bytes and GPUs."""

    cpu: float = 0.0
    memory: float = 0.0
    gpu: float = 0.0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory, self.gpu + other.gpu)

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Resources:
        gpu = sum(quantity(values[k]) for k in GPU_RESOURCES if k in values)
        return cls(quantity(values.get("cpu", 0)), quantity(values.get("memory", 0)), gpu)


def pod_requests(pod: Mapping[str, Any]) -> Resources:
    """What a pod requests: the sum of its containers, or its largest init container if
    that is more (the scheduler's rule), per resource."""
    spec = pod.get("spec") or {}

    def each(key: str) -> list[Resources]:
        return [Resources.of((x.get("resources") or {}).get("requests") or {})
                for x in spec.get(key) or []]  # fmt: skip

    total = sum(each("containers"), Resources())
    inits = each("initContainers")
    return Resources(
        max([total.cpu, *(r.cpu for r in inits)]),
        max([total.memory, *(r.memory for r in inits)]),
        max([total.gpu, *(r.gpu for r in inits)]),
    )


# ---------------------------------------------------------------------------- node-seconds
@dataclass(frozen=True)
class RunnerPod:
    """A runner pod as attribution needs it."""

    team: str
    node: str
    requests: Resources
    busy: bool


def runner_pod(pod: Mapping[str, Any]) -> RunnerPod | None:
    """The pod if it occupies a node now (bound, not ended); else None."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    phase = (pod.get("status") or {}).get("phase", "Pending")
    node = spec.get("nodeName")
    if not node or phase in ("Succeeded", "Failed"):
        return None
    labels, notes = meta.get("labels") or {}, meta.get("annotations") or {}
    busy = c.ANNOTATION_BUSY_SINCE in notes and c.ANNOTATION_JOB_DONE_AT not in notes
    return RunnerPod(labels.get(c.LABEL_TEAM) or "", node, pod_requests(pod), busy)


@dataclass(frozen=True)
class Node:
    """A pool node: its name, pool, what it can give, and how it is bought."""

    name: str
    pool: str
    allocatable: Resources
    capacity_type: str  # "spot", "on-demand" (the default) or "reserved"


def pool_node(node: Mapping[str, Any]) -> Node | None:
    """A node carrying the pool label (Karpenter's and static pools' nodes both do)."""
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    pool = labels.get(c.LABEL_POOL)
    if not pool:
        return None
    alloc = (node.get("status") or {}).get("allocatable") or {}
    kind = labels.get("karpenter.sh/capacity-type") or "on-demand"
    return Node(meta.get("name", ""), pool, Resources.of(alloc), kind)


def _fraction(used: float, of: float) -> float | None:
    """Used / of, at most 1 (a pod never takes more than the whole node); None without `of`."""
    return min(used / of, 1.0) if of > 0 else None


def node_shares(node: Node, pods: Iterable[RunnerPod]) -> dict[tuple[str, str], float]:
    """The node's time split among (team, use), summing to exactly 1.

    A pod's share is the mean of its CPU and memory request fractions (GPU too if the node
    has any): a CPU-heavy and a memory-heavy runner both cost their part of the machine.
    Requests beyond the node (overcommit) are scaled down so the shares never exceed 1; the
    rest is (UNALLOCATED, UNALLOCATED): capacity no runner asked for. Use is "busy" for a
    runner running a job, else "other" (idle or starting)."""
    shares: dict[tuple[str, str], float] = {}
    for pod in pods:
        parts = [
            f for f in (
                _fraction(pod.requests.cpu, node.allocatable.cpu),
                _fraction(pod.requests.memory, node.allocatable.memory),
                _fraction(pod.requests.gpu, node.allocatable.gpu),
            ) if f is not None
        ]  # fmt: skip
        share = sum(parts) / len(parts) if parts else 0.0
        key = (pod.team or UNALLOCATED, "busy" if pod.busy else "other")
        shares[key] = shares.get(key, 0.0) + share
    used = sum(shares.values())
    if used > 1.0:
        shares = {k: v / used for k, v in shares.items()}
        used = 1.0
    shares[(UNALLOCATED, UNALLOCATED)] = max(0.0, 1.0 - used)
    return shares


@dataclass
class PoolSeconds:
    """Node-seconds per pool, and their split by (team, use); money if the pool is priced."""

    seconds: dict[str, float] = field(default_factory=dict)  # by pool
    shares: dict[tuple[str, str, str], float] = field(default_factory=dict)  # pool, team, use
    cost: dict[tuple[str, str], float] = field(default_factory=dict)  # pool, team


def attribute(
    nodes: Iterable[Node],
    pods: Iterable[RunnerPod],
    seconds: float,
    prices: Mapping[str, PoolPrices] | None = None,
) -> PoolSeconds:
    """`seconds` of every pool node, attributed to teams by their pods' requests: for each
    pool, the shares sum to the pool's node-seconds (the unallocated part included)."""
    on: dict[str, list[RunnerPod]] = {}
    for pod in pods:
        on.setdefault(pod.node, []).append(pod)
    out = PoolSeconds()
    for node in nodes:
        out.seconds[node.pool] = out.seconds.get(node.pool, 0.0) + seconds
        hourly = node_price(node, (prices or {}).get(node.pool))
        for (team, use), share in node_shares(node, on.get(node.name, [])).items():
            key = (node.pool, team, use)
            out.shares[key] = out.shares.get(key, 0.0) + share * seconds
            if hourly is not None:
                money = hourly * share * seconds / 3600.0
                out.cost[(node.pool, team)] = out.cost.get((node.pool, team), 0.0) + money
    return out


def node_price(node: Node, prices: PoolPrices | None) -> float | None:
    """What the node costs per hour under the pool's prices (None: not priced). Spot nodes
    use `spot` when given, else `onDemand`; reserved ones `onDemand`."""
    if prices is None:
        return None
    table: Prices | None = prices.spot if node.capacity_type == "spot" else None
    table = table or prices.on_demand
    if table is None:
        return None
    a = node.allocatable
    return a.cpu * table.cpu_hour + a.memory / GIB * table.memory_gib_hour + a.gpu * table.gpu_hour


# ---------------------------------------------------------------------------- summary
# pending, idle, busy (runner-seconds), nodeSeconds, nodeSecondsBusy, cost
TeamDay = dict[str, float]
Summary = dict[str, dict[str, TeamDay]]  # day (YYYY-MM-DD, UTC) -> team -> numbers


def merge(summary: Summary, day: str, deltas: Mapping[str, Mapping[str, float]]) -> Summary:
    """The summary with `deltas` (team -> number -> amount) added to `day`, keeping only the
    SUMMARY_DAYS most recent days (bounded, whatever the uptime). Does not modify `summary`."""
    out = {d: {t: dict(v) for t, v in teams.items()} for d, teams in summary.items()}
    today = out.setdefault(day, {})
    for team, numbers in deltas.items():
        row = today.setdefault(team, {})
        for key, amount in numbers.items():
            if amount and math.isfinite(amount):
                row[key] = row.get(key, 0.0) + amount
    for old in sorted(out)[:-SUMMARY_DAYS]:
        del out[old]
    return out


def rollup(summary: Summary, days: Iterable[str]) -> dict[str, TeamDay]:
    """Per team, the numbers of `days` added up (today, or the last seven days)."""
    out: dict[str, TeamDay] = {}
    for day in days:
        for team, numbers in (summary.get(day) or {}).items():
            row = out.setdefault(team, {})
            for key, amount in numbers.items():
                row[key] = row.get(key, 0.0) + float(amount)
    return out


def report_rows(totals: Mapping[str, TeamDay]) -> list[dict[str, Any]]:
    """One row per team (the unallocated node share last): runner-hours by state, the idle
    share of runner time, node-hours and money, for `runnerfleet status --costs`."""
    rows = []
    for team in sorted(totals, key=lambda t: (t == UNALLOCATED, t)):
        row = totals[team]
        runner = {s: row.get(s, 0.0) / 3600.0 for s in RUNNER_STATES}
        spent = sum(runner.values())
        node = row.get("nodeSeconds", 0.0)
        rows.append({
            "team": team,
            "runnerHours": runner,
            "idleShare": runner["idle"] / spent if spent else None,
            "nodeHours": node / 3600.0,
            # Idle waste: the part of its node time no busy runner of the team used.
            "nodeIdleShare": 1.0 - row.get("nodeSecondsBusy", 0.0) / node if node else None,
            "cost": row.get("cost"),
        })  # fmt: skip
    return rows
