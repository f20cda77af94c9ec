"""Scheduled floors (issue 14 part 2): windows, midnight, days, zones, daylight saving time,
the next edge, validation, and the planner's effective minimum."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

import pytest
from pydantic import ValidationError

from runnerfleet.models.runner_scale_set import RunnerScaleSetSpec, ScheduledFloor
from runnerfleet.planning.floors import active_floors, floor_at, next_edge
from runnerfleet.planning.runners import Limits, desired_runners
from runnerfleet.services.scale_set import limits_of

pytestmark = pytest.mark.unit

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


def at(*args: int, zone: dt.tzinfo = dt.UTC) -> float:
    return dt.datetime(*args, tzinfo=zone).timestamp()  # type: ignore[misc]


def window(start: str, end: str, runners: int = 3, **extra: Any) -> ScheduledFloor:
    return ScheduledFloor.model_validate(
        {"start": start, "end": end, "minRunners": runners, **extra}
    )


# 2026-12-07 is a Monday.
def test_a_window_is_active_from_start_inclusive_to_end_exclusive() -> None:
    w = [window("09:00", "17:00", 4)]
    assert floor_at(w, at(2026, 12, 7, 8, 59, 59)) == 0
    assert floor_at(w, at(2026, 12, 7, 9, 0)) == 4
    assert floor_at(w, at(2026, 12, 7, 16, 59, 59)) == 4
    assert floor_at(w, at(2026, 12, 7, 17, 0)) == 0


def test_days_select_the_start_day_and_a_window_past_midnight_belongs_to_it() -> None:
    late = [window("22:00", "06:00", 2, days=["Fri"])]
    assert floor_at(late, at(2026, 12, 11, 23, 0)) == 2  # Friday night
    assert floor_at(late, at(2026, 12, 12, 5, 59)) == 2  # Saturday morning, still Friday's
    assert floor_at(late, at(2026, 12, 12, 6, 0)) == 0
    assert floor_at(late, at(2026, 12, 12, 23, 0)) == 0  # Saturday night: not listed
    assert floor_at(late, at(2026, 12, 11, 5, 0)) == 0  # Friday morning is Thursday's


def test_the_largest_active_minimum_wins() -> None:
    w = [window("08:00", "18:00", 2), window("09:00", "12:00", 6), window("20:00", "21:00", 9)]
    assert floor_at(w, at(2026, 12, 7, 8, 30)) == 2
    assert floor_at(w, at(2026, 12, 7, 10, 0)) == 6
    assert [f.min_runners for f in active_floors(w, at(2026, 12, 7, 10, 0))] == [2, 6]
    assert floor_at(None, at(2026, 12, 7, 10, 0)) == 0


def test_time_zones_are_wall_clock_times_in_the_zone() -> None:
    w = [window("09:00", "17:00", 3, timeZone="Europe/Berlin", days=["Mon"])]
    # Berlin is UTC+1 in December: 09:00 local is 08:00 UTC.
    assert floor_at(w, at(2026, 12, 7, 8, 0)) == 3
    assert floor_at(w, at(2026, 12, 7, 7, 59)) == 0
    # UTC Sunday 23:30 is Monday 00:30 in Tokyo: a Tokyo Monday window is already active.
    tokyo = [window("00:00", "01:00", 1, timeZone="Asia/Tokyo", days=["Mon"])]
    assert floor_at(tokyo, at(2026, 12, 6, 15, 30)) == 1


def test_daylight_saving_time_keeps_local_times() -> None:
    w = [window("09:00", "17:00", 3, timeZone="Europe/Berlin")]
    # Summer (UTC+2) and winter (UTC+1): 09:00 local both times.
    assert floor_at(w, at(2026, 7, 6, 7, 0)) == 3
    assert floor_at(w, at(2026, 7, 6, 6, 59)) == 0
    assert floor_at(w, at(2026, 12, 7, 8, 0)) == 3
    # The spring-forward day (2026-03-29, 02:00 -> 03:00): a night window ends at 06:00 local
    # and lasts an hour less.
    night = [window("00:00", "06:00", 2, timeZone="Europe/Berlin")]
    begins, ends = at(2026, 3, 29, 0, 0, zone=BERLIN), at(2026, 3, 29, 6, 0, zone=BERLIN)
    assert ends - begins == 5 * 3600
    assert floor_at(night, ends - 1) == 2
    assert floor_at(night, ends) == 0
    # The fall-back day (2026-10-25): an hour longer.
    assert next_edge(night, at(2026, 10, 25, 0, 0, zone=BERLIN)) == at(2026, 10, 25, 5, 0)


def test_a_start_in_the_skipped_hour_starts_an_hour_later_on_the_new_clock() -> None:
    # New York springs forward on 2026-03-08 at 02:00: 02:30 does not exist that day.
    w = [window("02:30", "04:00", 1, timeZone="America/New_York")]
    edge = next_edge(w, at(2026, 3, 8, 0, 0, zone=NEW_YORK))
    assert edge == at(2026, 3, 8, 3, 30, zone=NEW_YORK)
    assert floor_at(w, at(2026, 3, 8, 3, 45, zone=NEW_YORK)) == 1


def test_next_edge_is_the_first_start_or_end_after_now() -> None:
    w = [window("09:00", "17:00", 3, days=["Mon", "Wed"])]
    assert next_edge(w, at(2026, 12, 7, 8, 0)) == at(2026, 12, 7, 9, 0)
    assert next_edge(w, at(2026, 12, 7, 9, 0)) == at(2026, 12, 7, 17, 0)  # strictly after
    assert next_edge(w, at(2026, 12, 7, 17, 0)) == at(2026, 12, 9, 9, 0)  # Wednesday
    assert next_edge(w, at(2026, 12, 9, 18, 0)) == at(2026, 12, 14, 9, 0)  # next Monday
    assert next_edge(None, at(2026, 12, 7, 8, 0)) is None
    # Seconds are honoured (the e2e test uses windows a few seconds away).
    short = [window("10:00:10", "10:00:25", 1)]
    assert next_edge(short, at(2026, 12, 7, 10, 0)) == at(2026, 12, 7, 10, 0, 10)


def test_effective_minimum_raises_desired_and_never_exceeds_max() -> None:
    assert desired_runners(Limits(min_runners=1, max_runners=10, warm_floor=4), None) == 4
    assert desired_runners(Limits(min_runners=5, max_runners=10, warm_floor=4), None) == 5
    assert desired_runners(Limits(min_runners=1, max_runners=3, warm_floor=8), None) == 3
    assert Limits(min_runners=1, max_runners=3, warm_floor=8).effective_min == 3
    assert desired_runners(Limits(1, 10, suspend=True, warm_floor=4), None) == 0


def _spec(floors: list[dict[str, Any]], **extra: Any) -> RunnerScaleSetSpec:
    return RunnerScaleSetSpec.model_validate({
        "github": {"configUrl": "https://github.com/acme", "secretRef": {"name": "gh"}},
        "labels": ["linux"], "minRunners": 1, "maxRunners": 6, "scheduledFloors": floors,
        **extra,
    })  # fmt: skip


def test_limits_of_applies_the_floor_active_at_now() -> None:
    spec = _spec([{"start": "09:00", "end": "17:00", "minRunners": 5}])
    assert limits_of(spec, now=at(2026, 12, 7, 10, 0)).warm_floor == 5
    assert limits_of(spec, now=at(2026, 12, 7, 18, 0)).warm_floor == 0
    assert limits_of(spec).warm_floor == 0


@pytest.mark.parametrize(
    ("floor", "where"),
    [
        (
            {"start": "09:00", "end": "17:00", "minRunners": 1, "timeZone": "Mars/Olympus"},
            "timeZone",
        ),
        ({"start": "9:00", "end": "17:00", "minRunners": 1}, "start"),
        ({"start": "09:00", "end": "24:00", "minRunners": 1}, "end"),
        ({"start": "09:00", "end": "17:00", "minRunners": -1}, "minRunners"),
        ({"start": "09:00", "end": "17:00", "minRunners": 1, "days": ["Monday"]}, "days"),
    ],
)
def test_bad_windows_are_refused_naming_the_field(floor: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as err:
        _spec([floor])
    assert err.value.errors()[0]["loc"][:3] == ("scheduledFloors", 0, where)


def test_an_empty_window_is_refused() -> None:
    with pytest.raises(ValidationError, match="equals start"):
        _spec([{"start": "09:00", "end": "09:00:00", "minRunners": 1}])
