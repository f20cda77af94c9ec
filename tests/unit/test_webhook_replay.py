"""WebhookReplay (sim/webhook_replay.py): copies, delays, and the out-of-order count."""

from __future__ import annotations

import random

from runnerfleet.sim.webhook_replay import WebhookReplay

# Seeded schedules, not secrets.
# ruff: noqa: S311


def test_every_delivery_gets_its_copies_within_the_spread() -> None:
    replay = WebhookReplay(random.Random(1), copies=3, spread=2.0)
    delays = replay.delays("d1", 7, "queued", now=100.0)
    assert len(delays) == 3
    assert all(0.0 <= d <= 2.0 for d in delays)
    assert [c.delivery for c in replay.sent] == ["d1"] * 3
    assert replay.replayed() == 2
    assert replay.max_delay() == 2.0


def test_held_copies_wait_the_hold_on_top() -> None:
    replay = WebhookReplay(random.Random(2), copies=4, spread=1.0, hold_share=1.0, hold=10.0)
    assert all(10.0 <= d <= 11.0 for d in replay.delays("d", 1, "queued", now=0.0))
    assert replay.max_delay() == 11.0


def test_out_of_order_counts_jobs_whose_later_news_went_first() -> None:
    replay = WebhookReplay(random.Random(3), copies=1, spread=0.0)
    replay.delays("a", 1, "queued", now=0.0)
    replay.delays("b", 1, "completed", now=5.0)  # in order
    replay.delays("c", 2, "completed", now=1.0)
    replay.delays("d", 2, "queued", now=2.0)  # completed went out first
    replay.delays("e", 3, "in_progress", now=1.0)
    replay.delays("f", 3, "queued", now=3.0)  # in_progress before queued
    assert replay.out_of_order() == 2


def test_a_seed_replays_the_same_schedule() -> None:
    one = WebhookReplay(random.Random(9), hold_share=0.3, hold=5.0)
    two = WebhookReplay(random.Random(9), hold_share=0.3, hold=5.0)
    for n in range(20):
        assert one.delays(str(n), n, "queued", 0.0) == two.delays(str(n), n, "queued", 0.0)
