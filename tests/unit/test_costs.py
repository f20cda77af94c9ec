"""Cost accounting, pure parts (planning/costs.py) and the per-round recording
(services/costs.record_round) on a metrics object: runner-seconds, node-seconds attribution,
prices and the rolling summary."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest

from runnerfleet import conventions as c
from runnerfleet.metrics import OperatorMetrics
from runnerfleet.models.node_pool import PoolPrices, Prices, RunnerNodePoolSpec
from runnerfleet.planning import costs
from runnerfleet.planning.runners import State
from runnerfleet.services.costs import parse_summary, record_round, summary_manifest

pytestmark = pytest.mark.unit


def counts(pending: int = 0, idle: int = 0, busy: int = 0, **other: int) -> dict[State, int]:
    out = {s: 0 for s in State}
    out.update({State.PENDING: pending, State.IDLE: idle, State.BUSY: busy})
    out.update({State(k.capitalize()): v for k, v in other.items()})
    return out


# ---------------------------------------------------------------------------- runner-seconds
def test_first_round_starts_the_clock_and_adds_nothing() -> None:
    added, tally = costs.advance(None, counts(idle=3), now=100.0)
    assert added == {"pending": 0.0, "idle": 0.0, "busy": 0.0}
    assert tally == costs.Tally(100.0, {"pending": 0, "idle": 3, "busy": 0})


def test_each_round_adds_what_the_previous_round_saw_times_the_gap() -> None:
    _, tally = costs.advance(None, counts(pending=2, idle=1), now=100.0)
    added, tally = costs.advance(tally, counts(idle=2, busy=1), now=105.0)
    assert added == {"pending": 10.0, "idle": 5.0, "busy": 0.0}
    added, _ = costs.advance(tally, counts(), now=107.0)
    assert added == {"pending": 0.0, "idle": 4.0, "busy": 2.0}


def test_ended_and_podless_states_cost_nothing() -> None:
    _, tally = costs.advance(None, counts(registering=2, starting=1, finished=3, failed=1,
                                          kept=4), now=0.0)  # fmt: skip
    added, _ = costs.advance(tally, counts(), now=10.0)
    assert sum(added.values()) == 0.0


def test_a_long_gap_counts_as_max_gap_and_a_backwards_clock_as_nothing() -> None:
    start = costs.Tally(0.0, {"pending": 0, "idle": 1, "busy": 0})
    added, _ = costs.advance(start, counts(), now=3600.0)  # lost the lead for an hour
    assert added["idle"] == costs.MAX_GAP
    added, _ = costs.advance(costs.Tally(50.0, {"idle": 1}), counts(), now=40.0)
    assert added["idle"] == 0.0


@given(st.lists(st.tuples(st.floats(0.0, 30.0), st.integers(0, 5)), min_size=1, max_size=30))
def test_runner_seconds_are_the_step_integral_of_the_counts(steps: list[tuple[float, int]]) -> None:
    """Counts held constant between rounds: the sum equals the integral of the step function."""
    tally, now, total, expected, held = None, 0.0, 0.0, 0.0, 0
    for gap, idle in steps:
        now += gap
        expected += held * gap if tally is not None else 0.0
        added, tally = costs.advance(tally, counts(idle=idle), now)
        total += added["idle"]
        held = idle
    assert total == pytest.approx(expected)


def test_record_round_exports_counters_per_team_pool_and_state() -> None:
    metrics = OperatorMetrics.create()
    record_round(metrics.costs, "ns", "ci", "team-a", "pool-1", counts(idle=2), 0.0)
    record_round(metrics.costs, "ns", "ci", "team-a", "pool-1", counts(busy=2), 10.0)
    record_round(metrics.costs, "ns", "ci", "team-a", "pool-1", counts(), 13.0)
    values = metrics.costs.runner_seconds.values
    assert values[("ns", "ci", "team-a", "pool-1", "idle")] == 20.0
    assert values[("ns", "ci", "team-a", "pool-1", "busy")] == 6.0
    assert metrics.costs.unflushed == {"team-a": {"idle": 20.0, "busy": 6.0}}
    text = generate_latest(metrics.registry).decode()
    assert ('runnerfleet_runner_seconds_total{namespace="ns",node_pool="pool-1",scale_set="ci",'
            'state="idle",team="team-a"} 20.0') in text  # fmt: skip
    # A deleted scale set's series and tally go (bounded memory), the team totals stay.
    metrics.forget_scale_set("ns", "ci")
    assert not metrics.costs.runner_seconds.values
    assert not metrics.costs.tallies
    assert metrics.costs.unflushed["team-a"]["idle"] == 20.0


# ---------------------------------------------------------------------------- quantities
@pytest.mark.parametrize(("text", "value"), [
    ("500m", 0.5), ("2", 2.0), ("1.5", 1.5), ("2Gi", 2 * 2**30), ("1G", 1e9), ("", 0.0),
    ("nonsense", 0.0), ("128974848", 128974848.0),
])  # fmt: skip
def test_quantities(text: str, value: float) -> None:
    assert costs.quantity(text) == value


def test_pod_requests_sum_containers_and_take_a_larger_init_container() -> None:
    pod = {"spec": {
        "containers": [{"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                       {"resources": {"requests": {"cpu": "250m"}}}, {}],
        "initContainers": [{"resources": {"requests": {"cpu": "2", "nvidia.com/gpu": "1"}}}],
    }}  # fmt: skip
    assert costs.pod_requests(pod) == costs.Resources(2.0, 2**30, 1.0)


# ---------------------------------------------------------------------------- node-seconds
NODE = costs.Node("n1", "pool", costs.Resources(4.0, 8 * costs.GIB), "on-demand")


def pod(team: str, cpu: float, gib: float, node: str = "n1", busy: bool = False) -> costs.RunnerPod:
    return costs.RunnerPod(team, node, costs.Resources(cpu, gib * costs.GIB), busy)


def test_node_shares_follow_requests_and_leave_the_rest_unallocated() -> None:
    shares = costs.node_shares(NODE, [pod("a", 1, 2, busy=True), pod("b", 2, 2)])
    assert shares[("a", "busy")] == pytest.approx(0.25)  # 1/4 CPU, 2/8 memory
    assert shares[("b", "other")] == pytest.approx((0.5 + 0.25) / 2)
    assert shares[(costs.UNALLOCATED, costs.UNALLOCATED)] == pytest.approx(1 - 0.25 - 0.375)
    assert sum(shares.values()) == pytest.approx(1.0)


def test_overcommitted_requests_are_scaled_to_the_node() -> None:
    shares = costs.node_shares(NODE, [pod("a", 4, 8), pod("b", 4, 8)])
    assert shares == {("a", "other"): 0.5, ("b", "other"): 0.5,
                      (costs.UNALLOCATED, costs.UNALLOCATED): 0.0}  # fmt: skip


def test_a_pod_without_a_team_label_is_unallocated() -> None:
    shares = costs.node_shares(NODE, [pod("", 2, 4)])
    assert shares[(costs.UNALLOCATED, "other")] == pytest.approx(0.5)


resources = st.builds(costs.Resources, st.floats(0, 64), st.floats(0, 2**40), st.floats(0, 8))


@given(
    st.lists(st.builds(costs.Node, st.sampled_from(["n1", "n2", "n3"]),
                       st.sampled_from(["p", "q"]), resources, st.sampled_from(["spot",
                                                                                "on-demand"])),
             max_size=4, unique_by=lambda n: n.name),
    st.lists(st.builds(costs.RunnerPod, st.sampled_from(["a", "b", ""]),
                       st.sampled_from(["n1", "n2", "n3", "gone"]), resources, st.booleans()),
             max_size=12),
    st.floats(0.1, 120),
)  # fmt: skip
def test_attribution_sums_to_each_pools_node_seconds(
    nodes: list[costs.Node], pods: list[costs.RunnerPod], seconds: float
) -> None:
    result = costs.attribute(nodes, pods, seconds)
    for pool, total in result.seconds.items():
        assert total == pytest.approx(seconds * sum(1 for n in nodes if n.pool == pool))
        shared = sum(v for (p, _, _), v in result.shares.items() if p == pool)
        assert shared == pytest.approx(total)
    assert all(v >= 0 for v in result.shares.values())


def test_pool_node_and_runner_pod_from_objects() -> None:
    node = {
        "metadata": {
            "name": "n1",
            "labels": {c.LABEL_POOL: "gpu", "karpenter.sh/capacity-type": "spot"},
        },
        "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}},
    }
    assert costs.pool_node(node) == costs.Node("n1", "gpu", costs.Resources(8, 32 * costs.GIB, 1),
                                               "spot")  # fmt: skip
    assert costs.pool_node({"metadata": {"name": "other"}}) is None
    running = {"metadata": {"labels": {c.LABEL_TEAM: "a"},
                            "annotations": {c.ANNOTATION_BUSY_SINCE: "2026-01-01T00:00:00Z"}},
               "spec": {"nodeName": "n1", "containers": [{"resources": {"requests": {
                   "cpu": "1"}}}]}, "status": {"phase": "Running"}}  # fmt: skip
    assert costs.runner_pod(running) == costs.RunnerPod("a", "n1", costs.Resources(1.0), True)
    done = {**running, "status": {"phase": "Succeeded"}}
    assert costs.runner_pod(done) is None
    unbound = {**running, "spec": {}}
    assert costs.runner_pod(unbound) is None


# ---------------------------------------------------------------------------- prices
def test_prices_turn_shares_into_money_spot_falls_back_to_on_demand() -> None:
    prices = PoolPrices(on_demand=Prices(cpu_hour=0.04, memory_gib_hour=0.005),
                        spot=Prices(cpu_hour=0.01))  # fmt: skip
    spot = costs.Node("n2", "pool", NODE.allocatable, "spot")
    assert costs.node_price(NODE, prices) == pytest.approx(4 * 0.04 + 8 * 0.005)
    assert costs.node_price(spot, prices) == pytest.approx(4 * 0.01)
    assert costs.node_price(spot, PoolPrices(on_demand=Prices(cpu_hour=1))) == 4.0
    assert costs.node_price(NODE, None) is None
    result = costs.attribute([NODE], [pod("a", 2, 4)], 3600.0, {"pool": prices})
    assert result.cost[("pool", "a")] == pytest.approx(0.5 * (0.16 + 0.04))
    assert sum(result.cost.values()) == pytest.approx(0.16 + 0.04)


def test_prices_are_the_last_field_of_the_pool_spec_in_camel_case() -> None:
    spec = RunnerNodePoolSpec.model_validate(
        {"prices": {"onDemand": {"cpuHour": 0.04, "memoryGiBHour": 0.005, "gpuHour": 2.5},
                    "currency": "EUR"}})  # fmt: skip
    assert spec.prices is not None
    assert spec.prices.on_demand is not None
    assert spec.prices.on_demand.memory_gib_hour == 0.005
    assert list(RunnerNodePoolSpec.model_fields)[-1] == "prices"


# ---------------------------------------------------------------------------- summary
def test_summary_merges_per_day_and_keeps_a_week_and_a_day() -> None:
    summary: costs.Summary = {}
    for day in range(1, 12):
        summary = costs.merge(summary, f"2026-12-{day:02d}", {"a": {"busy": 10.0}})
    summary = costs.merge(summary, "2026-12-11", {"a": {"busy": 5.0, "cost": 0.5}, "b": {}})
    assert sorted(summary)[0] == "2026-12-04"
    assert len(summary) == costs.SUMMARY_DAYS
    assert summary["2026-12-11"]["a"] == {"busy": 15.0, "cost": 0.5}
    week = costs.rollup(summary, [f"2026-12-{d:02d}" for d in range(5, 12)])
    assert week["a"]["busy"] == 7 * 10.0 + 5.0


def test_summary_round_trips_through_its_configmap() -> None:
    summary = {"2026-12-02": {"a": {"idle": 1.5}}}
    manifest = summary_manifest("rf-system", summary, 0.0)
    assert manifest["metadata"]["name"] == "runnerfleet-costs"
    assert parse_summary(manifest["data"]["summary.json"]) == summary
    assert parse_summary("not json") == {}
    assert parse_summary(None) == {}


def test_report_rows_in_hours_with_idle_shares_and_unallocated_last() -> None:
    rows = costs.report_rows({
        costs.UNALLOCATED: {"nodeSeconds": 7200.0},
        "b": {"busy": 3600.0, "idle": 3600.0, "nodeSeconds": 3600.0, "nodeSecondsBusy": 900.0,
              "cost": 1.25},
        "a": {"pending": 1800.0},
    })  # fmt: skip
    assert [r["team"] for r in rows] == ["a", "b", costs.UNALLOCATED]
    b = rows[1]
    assert b["runnerHours"] == {"pending": 0.0, "idle": 1.0, "busy": 1.0}
    assert b["idleShare"] == 0.5
    assert b["nodeHours"] == 1.0
    assert b["nodeIdleShare"] == 0.75
    assert b["cost"] == 1.25
    assert rows[0]["nodeIdleShare"] is None
    assert rows[0]["cost"] is None
    assert rows[2]["idleShare"] is None


def test_status_costs_renders_every_team() -> None:
    from rich.console import Console

    from runnerfleet.statusview import render_costs

    rows = costs.report_rows({"team-a": {"busy": 3600.0, "cost": 2.5}})
    report = {"namespace": "rf", "configMap": "runnerfleet-costs", "updatedAt": None,
              "today": "2026-12-02", "day": rows, "week": rows}  # fmt: skip
    console = Console(width=160, record=True)
    console.print(render_costs(report))
    text = console.export_text()
    assert "Last 7 days" in text
    assert "team-a" in text
    assert "2.50" in text
