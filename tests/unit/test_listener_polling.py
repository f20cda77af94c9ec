"""The listener's pure poll schedule (planning/polling.py) and job-table merge
(planning/job_table.py): budget where the jobs are; a poll reconciles, it does not replace."""

from __future__ import annotations

from runnerfleet.planning.job_table import JobTable, TrackedJob
from runnerfleet.planning.polling import (
    PollPolicy,
    RepoState,
    SpendWindow,
    cold_quota,
    plan_poll,
    repositories_due,
)

POLICY = PollPolicy(idle_visits_per_hour=1800, idle_counted_per_hour=600, reserve=1000)


def _idle(last: float, pushed: float | None = None) -> RepoState:
    return RepoState(last_polled=last, active=False, pushed_at=pushed)


# ---------------------------------------------------------------- schedule
def test_first_read_of_a_large_org_is_paced_by_the_secondary_limit() -> None:
    repos = {f"acme/r{i:04}": None for i in range(2000)}
    states: dict[str, RepoState] = {}
    now, polls = 0.0, 0
    while len(states) < 2000 or any(s.last_polled is None for s in states.values()):
        plan = plan_poll(repos, states, now=now, poll_interval=15, policy=POLICY)
        assert plan.cold == ()  # never-read repositories are all hot
        assert 2 * len(plan.hot) <= 800 * 15 / 60  # run listings within the poll's share
        for r in plan.hot:
            states[r] = _idle(last=now)
        now, polls = now + 15, polls + 1
    assert polls == 20  # 100 repositories a poll: five minutes, none read twice meanwhile
    slow = plan_poll(repos, {}, now=0.0, poll_interval=600, policy=POLICY)
    assert len(slow.hot) == 400  # a minute's share at most, however long the interval


def test_hot_repositories_beyond_the_cap_take_turns_longest_unread_first() -> None:
    repos = {f"acme/r{i}": None for i in range(5)}
    states = {f"acme/r{i}": RepoState(last_polled=float(10 - i), active=True, runs=1)
              for i in range(5)}  # fmt: skip
    policy = PollPolicy(reads_per_minute=24, idle_visits_per_hour=0)  # 6 listings per 15 s
    plan = plan_poll(repos, states, now=20.0, poll_interval=15, policy=policy)
    assert plan.hot == ("acme/r4", "acme/r3", "acme/r2")
    many_runs = {**states, "acme/r4": RepoState(last_polled=0.0, active=True, runs=50)}
    plan = plan_poll(repos, many_runs, now=20.0, poll_interval=15, policy=policy)
    assert plan.hot == ("acme/r4",)  # its 50 job listings fill the poll (always one repository)


def test_idle_org_reads_a_bounded_trickle_longest_unread_first() -> None:
    repos = {f"acme/r{i:04}": None for i in range(2000)}
    states = {r: _idle(last=float(i)) for i, r in enumerate(sorted(repos))}
    plan = plan_poll(repos, states, now=5000.0, poll_interval=15, policy=POLICY)
    assert plan.hot == ()
    assert plan.cold == ("acme/r0000", "acme/r0001", "acme/r0002", "acme/r0003",
                         "acme/r0004", "acme/r0005", "acme/r0006", "acme/r0007")  # fmt: skip
    # 1800 visits/hour at one poll every 15 s: ceil(7.5) per poll, whatever the org's size.
    assert cold_quota(15, POLICY, None, 0) == 8


def test_every_idle_repository_is_read_within_a_bounded_sweep() -> None:
    repos = {f"acme/r{i:04}": None for i in range(2000)}
    states = {r: _idle(last=0.0) for r in repos}
    now, polls, read = 1.0, 0, set[str]()
    while len(read) < len(repos):
        plan = plan_poll(repos, states, now=now, poll_interval=15, policy=POLICY)
        for r in plan.cold:
            states[r] = _idle(last=now)
            read.add(r)
        now, polls = now + 15, polls + 1
    assert polls == 250  # 2000 / 8: about 62 minutes at 15 s; no repository starves


def test_hot_repositories_are_read_every_poll() -> None:
    repos = {"acme/busy": None, "acme/hooked": None, "acme/pushed": 200.0, "acme/idle": 50.0}
    states = {
        "acme/busy": RepoState(last_polled=90.0, active=True),
        "acme/hooked": RepoState(last_polled=90.0, last_webhook=95.0),
        "acme/pushed": _idle(last=90.0, pushed=100.0),
        "acme/idle": _idle(last=90.0, pushed=50.0),
    }
    policy = PollPolicy(idle_visits_per_hour=0, reserve=0)  # no cold reads at all
    plan = plan_poll(repos, states, now=100.0, poll_interval=15, policy=policy)
    assert sorted(plan.hot) == ["acme/busy", "acme/hooked", "acme/pushed"]
    later = plan_poll(repos, states, now=100.0 + 601, poll_interval=15, policy=policy)
    assert "acme/hooked" not in later.hot  # a webhook keeps a repository hot for 10 minutes


def test_live_webhooks_turn_busy_repository_reads_into_a_slow_reconcile() -> None:
    repos = {"acme/busy": None, "acme/new": None}
    states = {"acme/busy": RepoState(last_polled=100.0, active=True, last_webhook=390.0)}
    live = plan_poll(repos, states, now=399.0, poll_interval=15, policy=POLICY,
                     webhooks_live=True)  # fmt: skip
    assert live.hot == ("acme/new",)  # never read: read now; busy: webhooks bring its news
    later = plan_poll(repos, states, now=400.0, poll_interval=15, policy=POLICY,
                      webhooks_live=True)  # fmt: skip
    assert later.hot == ("acme/new", "acme/busy")  # reconciled every 5 minutes
    polling = plan_poll(repos, states, now=399.0, poll_interval=15, policy=POLICY)
    assert "acme/busy" in polling.hot  # without webhooks: every poll


def test_a_small_idle_org_is_still_read_every_poll() -> None:
    repos = {"acme/app": None}
    plan = plan_poll(repos, {"acme/app": _idle(last=0.0)}, now=1.0, poll_interval=1,
                     policy=POLICY)  # fmt: skip
    assert plan.cold == ("acme/app",)


def test_cold_reads_stop_when_the_budget_is_low_or_spent() -> None:
    assert cold_quota(15, POLICY, remaining=999, idle_counted=0) == 0
    assert cold_quota(15, POLICY, remaining=1000, idle_counted=599) == 8
    assert cold_quota(15, POLICY, remaining=None, idle_counted=600) == 0
    assert cold_quota(1, POLICY, remaining=None, idle_counted=0) == 1  # never zero by rounding


def test_spend_window_forgets_after_an_hour_and_is_bounded() -> None:
    window = SpendWindow(max_entries=3)
    window.add(0.0, 5)
    window.add(10.0, 0)  # nothing spent: nothing stored
    window.add(20.0, 7)
    assert window.total(3599.0) == 12
    assert window.total(3610.0) == 7
    for t in range(5):
        window.add(3620.0 + t, 1)
    assert len(window.entries) == 3


def test_repository_list_is_reread_at_most_every_refresh_interval() -> None:
    assert repositories_due(None, 0.0, 15, POLICY)
    assert not repositories_due(100.0, 159.0, 15, POLICY)
    assert repositories_due(100.0, 160.0, 15, POLICY)
    assert not repositories_due(100.0, 250.0, 300, POLICY)  # never more often than the poll


# ---------------------------------------------------------------- merge
def _job(job_id: int, status: str = "queued", seen: float = 0.0, repo: str = "acme/app",
         hook: bool = False) -> TrackedJob:  # fmt: skip
    return TrackedJob(job_id, repo, job_id, ("linux",), status, seen_at=seen, from_webhook=hook)


def test_poll_drops_jobs_it_no_longer_lists_only_in_the_repositories_it_read() -> None:
    table = JobTable()
    table.reconcile({"acme/app": [_job(1), _job(2)], "acme/api": [_job(3, repo="acme/api")]}, 0.0)
    gone = table.reconcile({"acme/app": [_job(2, seen=10.0)]}, 10.0)
    assert [j.id for j in gone] == [1]
    assert sorted(table.jobs) == [2, 3]  # acme/api was not read: its job stays


def test_a_webhook_job_queued_after_the_poll_began_survives_that_poll() -> None:
    table = JobTable()
    table.webhook(_job(7, seen=12.0, hook=True))  # delivered while the poll (begun at 10) ran
    assert table.reconcile({"acme/app": []}, 10.0) == []
    assert 7 in table.jobs
    assert [j.id for j in table.reconcile({"acme/app": []}, 20.0)] == [7]  # the next poll judges


def test_webhook_grace_covers_lists_that_lag_deliveries() -> None:
    table = JobTable(webhook_grace=30.0)
    table.webhook(_job(7, seen=5.0, hook=True))
    assert table.reconcile({"acme/app": []}, 20.0) == []
    assert [j.id for j in table.reconcile({"acme/app": []}, 36.0)] == [7]


def test_a_job_completed_by_webhook_is_not_resurrected_by_an_older_poll() -> None:
    table = JobTable()
    table.reconcile({"acme/app": [_job(1)]}, 0.0)
    assert table.webhook(_job(1, "completed", seen=12.0, hook=True)) is not None
    table.reconcile({"acme/app": [_job(1, "queued", seen=10.0)]}, 10.0)  # began before
    table.webhook(_job(1, "in_progress", seen=13.0, hook=True))  # a late delivery
    assert table.jobs == {}


def test_status_never_moves_backwards() -> None:
    table = JobTable()
    table.webhook(_job(1, "in_progress", seen=12.0, hook=True))
    table.reconcile({"acme/app": [_job(1, "queued", seen=10.0)]}, 10.0)
    assert table.jobs[1].status == "in_progress"
    table.webhook(_job(1, "queued", seen=14.0, hook=True))  # out-of-order delivery
    assert table.jobs[1].status == "in_progress"


def test_counted_jobs_and_forgotten_repositories() -> None:
    table = JobTable()
    table.reconcile({"acme/app": [_job(1), _job(2, "in_progress"), _job(3, "completed")]}, 0.0)
    assert sorted(j.id for j in table.counted()) == [1, 2]
    assert 3 in table.completed
    assert [j.id for j in table.retain_repos({"acme/other"})] == [1, 2]


def test_tombstones_are_bounded() -> None:
    table = JobTable(tombstones_max=2)
    for i in range(5):
        table.webhook(_job(i, "completed", hook=True))
    assert list(table.completed) == [3, 4]
