"""Scheduled floors: which time windows of a scale set are active at `now`, the minimum of idle
runners they ask for, and when the next window starts or ends (so the round wakes on time).

Windows are wall-clock times in an IANA zone (zoneinfo), repeated weekly on the listed days.
A window belongs to the day it starts on: `Fri 22:00-06:00` runs from Friday 22:00 to Saturday
06:00. Daylight saving time follows the wall clock: `09:00` is 09:00 local all year, so a
window spanning a change is an hour longer or shorter that day. A start or end that falls in
the hour skipped in spring is taken with the offset before the change (PEP 495, fold=0),
i.e. an hour later on the new clock; one in the hour repeated in autumn is its first pass.

Layer: planning. Pure: `now` is an argument (epoch seconds); no clock, no I/O.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator, Sequence
from functools import lru_cache

from runnerfleet.models.runner_scale_set import WEEKDAYS, ScheduledFloor

# Look back one day (a window begun yesterday may still run past midnight) and ahead eight
# (every weekly window starts within seven days; one more covers its end).
_BACK_DAYS = 1
_AHEAD_DAYS = 8


@lru_cache(maxsize=256)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def _time_of_day(text: str) -> dt.time:
    return dt.time.fromisoformat(text)  # HH:MM or HH:MM:SS (the CRD's pattern)


def _spans(
    floor: ScheduledFloor, now: float, back: int, ahead: int
) -> Iterator[tuple[float, float]]:
    """(start, end) epoch seconds of the floor's windows starting on local days around `now`."""
    zone = _zone(floor.time_zone)
    today = dt.datetime.fromtimestamp(now, zone).date()
    start, end = _time_of_day(floor.start), _time_of_day(floor.end)
    days = set(floor.days)
    for offset in range(-back, ahead + 1):
        day = today + dt.timedelta(days=offset)
        if WEEKDAYS[day.weekday()] not in days:
            continue
        end_day = day + dt.timedelta(days=1) if end <= start else day
        # Aware datetimes in one zone compare as wall times; timestamps are the real order.
        begins = dt.datetime.combine(day, start, tzinfo=zone).timestamp()
        ends = dt.datetime.combine(end_day, end, tzinfo=zone).timestamp()
        if ends > begins:  # a window shrunk to nothing by a spring-forward gap: skip it
            yield begins, ends


def active_floors(floors: Sequence[ScheduledFloor], now: float) -> list[ScheduledFloor]:
    """The windows active at `now` (start inclusive, end exclusive)."""
    return [f for f in floors if any(b <= now < e for b, e in _spans(f, now, _BACK_DAYS, 0))]


def floor_at(floors: Sequence[ScheduledFloor] | None, now: float) -> int:
    """The largest minRunners of the windows active at `now` (0 when none is)."""
    return max((f.min_runners for f in active_floors(floors or (), now)), default=0)


def next_edge(floors: Sequence[ScheduledFloor] | None, now: float) -> float | None:
    """The first start or end of any window strictly after `now` (None without windows)."""
    edges = [
        t
        for f in floors or ()
        for span in _spans(f, now, _BACK_DAYS, _AHEAD_DAYS)
        for t in span
        if t > now
    ]
    return min(edges, default=None)
