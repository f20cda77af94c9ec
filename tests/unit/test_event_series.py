"""Event series (gateway helper, no I/O): repeats fold into one object, as client-go does."""

from __future__ import annotations

import pytest

from runnerfleet.gateways.event_series import (
    COMBINED,
    FLUSH_SECONDS,
    SIMILAR_AFTER,
    WINDOW_SECONDS,
    EventSeries,
)

pytestmark = pytest.mark.unit
OBJ = "ns/RunnerScaleSet/linux/uid-1"


def _post(series: EventSeries, message: str, now: float, reason: str = "ScaledUp") -> str:
    """Decide, and pretend the write succeeded; the action taken."""
    decision = series.decide(OBJ, "Normal", reason, message, now)
    if decision.action == "create":
        series.wrote(decision, f"linux.{len(series.series)}")
    return decision.action


def test_first_occurrence_creates_and_a_repeat_patches_the_count_at_most_every_flush() -> None:
    s = EventSeries()
    assert _post(s, "creating 3 runners", 0.0) == "create"
    assert _post(s, "creating 3 runners", 1.0) == "skip"  # counted, written later
    decision = s.decide(OBJ, "Normal", "ScaledUp", "creating 3 runners", FLUSH_SECONDS + 1)
    assert (decision.action, decision.count, decision.name) == ("patch", 3, "linux.1")


def test_a_repeat_after_the_window_is_a_new_event() -> None:
    s = EventSeries()
    assert _post(s, "m", 0.0) == "create"
    assert _post(s, "m", WINDOW_SECONDS + 1) == "create"


def test_many_different_messages_for_one_reason_are_combined_into_one_event() -> None:
    s = EventSeries()
    actions = [_post(s, f"creating {i} runners", float(i)) for i in range(SIMILAR_AFTER + 20)]
    assert actions[:SIMILAR_AFTER] == ["create"] * SIMILAR_AFTER
    assert actions[SIMILAR_AFTER] == "create"  # the combined one
    # The rest only raise the combined event's count: 20 seconds, no flush yet.
    assert set(actions[SIMILAR_AFTER + 1 :]) == {"skip"}
    later = s.decide(OBJ, "Normal", "ScaledUp", "creating 99 runners", 100.0)
    assert later.action == "patch"
    assert later.message == COMBINED + "creating 99 runners"
    assert later.count == 21


def test_other_reasons_and_objects_are_separate_series() -> None:
    s = EventSeries()
    assert _post(s, "m", 0.0) == "create"
    assert _post(s, "m", 0.0, reason="ScaledDown") == "create"
    assert s.decide("ns/RunnerScaleSet/other/u", "Normal", "ScaledUp", "m", 0.0).action == "create"


def test_a_failed_write_forgets_the_series() -> None:
    s = EventSeries()
    decision = s.decide(OBJ, "Warning", "RunnerFailed", "runner x: Error", 0.0)
    s.wrote(decision, None)
    assert s.decide(OBJ, "Warning", "RunnerFailed", "runner x: Error", 1.0).action == "create"


def test_writes_are_bounded_whatever_the_rate() -> None:
    """One event a second for ten minutes, all different: SIMILAR_AFTER + 1 creates, and a
    patch per FLUSH_SECONDS."""
    s = EventSeries()
    actions = [_post(s, f"creating {i % 37} runners", float(i)) for i in range(600)]
    writes = sum(a != "skip" for a in actions)
    assert writes <= SIMILAR_AFTER + 1 + 600 / FLUSH_SECONDS + 1
