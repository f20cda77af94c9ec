"""Predictive warm pools: learn a scale set's job arrival rate from its own history and
recommend how many idle runners to keep so that the jobs arriving within the runner start-up
lead time find one (issue 14 part 2).

The model is two tables of arrival rates (jobs per hour) with exponential decay:
- `weekly[168]`, one per hour of the week (UTC), updated once a week each: weekly seasonality
  (working hours, quiet weekends);
- `daily[24]`, one per hour of the day, updated every day: daily seasonality, learnt in a day,
  used while the weekly table has seen less than a week.
Arrivals are counted into the current hour and folded into both tables when the hour is over
(hours with no arrival fold a zero; a gap longer than MAX_GAP_HOURS - the listener was down -
folds nothing, so an outage does not teach "no jobs"). Memory is bounded (192 numbers) and the
state encodes into a short string (`encode`/`decode`, ~530 characters) the listener keeps in
the scale set's status.demand.arrivals, so it survives restarts.

The recommendation: expected arrivals over [now, now + lead] from the rate of each hour the
interval covers (so a ramp at 9 am is anticipated `lead` ahead), and the smallest k whose
Poisson CDF reaches the target percentile.

Layer: planning. Pure: `now` is an argument; no clock, no I/O.
"""

from __future__ import annotations

import base64
import math
import struct
from dataclasses import dataclass, field, replace

HOURS_PER_WEEK = 168
WEEKLY_DECAY = 0.3  # weight of the newest week in an hour-of-week rate (half-life ~2 weeks)
DAILY_DECAY = 0.2  # weight of the newest day in an hour-of-day rate
MAX_GAP_HOURS = 6  # a longer silence of the listener itself is not taken for "no jobs"
_SCALE = 10.0  # rates stored as uint16 tenths of a job per hour (up to 6,553 jobs/hour)
_VERSION = "v1"
MAX_RECOMMENDATION = 1000


@dataclass(frozen=True)
class ArrivalModel:
    """What the listener remembers of a scale set's arrivals (immutable: updates return new)."""

    hour: int = 0  # the epoch hour `count` belongs to (0: nothing seen yet)
    count: int = 0  # arrivals so far in `hour`
    hours_seen: int = 0  # hours folded in (caps at a few weeks: only the blend reads it)
    weekly: tuple[float, ...] = field(default=(0.0,) * HOURS_PER_WEEK)
    daily: tuple[float, ...] = field(default=(0.0,) * 24)

    def rate(self, hour: int) -> float:
        """Learnt jobs per hour for the epoch hour `hour`: the hour-of-week rate, blended with
        the hour-of-day rate while less than a week has been seen."""
        weekly, daily = self.weekly[hour % HOURS_PER_WEEK], self.daily[hour % 24]
        trust = min(1.0, self.hours_seen / HOURS_PER_WEEK)
        return trust * weekly + (1.0 - trust) * daily


def _fold(model: ArrivalModel, hour: int, count: int) -> ArrivalModel:
    weekly, daily = list(model.weekly), list(model.daily)
    w, d = hour % HOURS_PER_WEEK, hour % 24
    # A bucket seen for the first time takes the count as it is (no decay towards zero).
    first_week = model.hours_seen < HOURS_PER_WEEK
    weekly[w] = count if first_week else (1 - WEEKLY_DECAY) * weekly[w] + WEEKLY_DECAY * count
    daily[d] = (
        count if model.hours_seen < 24 else (1 - DAILY_DECAY) * daily[d] + DAILY_DECAY * count
    )
    return replace(
        model, weekly=tuple(weekly), daily=tuple(daily),
        hours_seen=min(model.hours_seen + 1, 4 * HOURS_PER_WEEK),
    )  # fmt: skip


def advance(model: ArrivalModel, now: float) -> ArrivalModel:
    """Fold the hours that ended before `now` (the current one with its count, the silent
    ones after it as zeros, unless the gap is too long to be silence)."""
    hour = int(now // 3600)
    if model.hour == 0:
        return replace(model, hour=hour, count=0)
    if hour <= model.hour:
        return model
    folded = _fold(model, model.hour, model.count)
    if hour - model.hour - 1 <= MAX_GAP_HOURS:
        for silent in range(model.hour + 1, hour):
            folded = _fold(folded, silent, 0)
    return replace(folded, hour=hour, count=0)


def observe(model: ArrivalModel, arrivals: int, now: float) -> ArrivalModel:
    """`arrivals` new jobs seen at `now`."""
    model = advance(model, now)
    return replace(model, count=model.count + max(0, arrivals))


def expected_arrivals(model: ArrivalModel, now: float, lead: float) -> float:
    """Expected jobs arriving in [now, now + lead], hour by hour of the learnt rates."""
    total, t, end = 0.0, now, now + max(0.0, lead)
    while t < end:
        hour = int(t // 3600)
        step = min(end, (hour + 1) * 3600.0) - t
        total += model.rate(hour) * step / 3600.0
        t += step
    return total


def poisson_quantile(mean: float, percentile: float) -> int:
    """The smallest k with P(X <= k) >= percentile/100 for X ~ Poisson(mean)."""
    if mean <= 0:
        return 0
    target = min(percentile, 99.999) / 100.0
    term = math.exp(-mean) if mean < 700 else 0.0
    if term == 0.0:  # far too many for the series: the normal approximation
        return math.ceil(mean + _z(target) * math.sqrt(mean))
    k, cdf = 0, term
    while cdf < target and k < MAX_RECOMMENDATION:
        k += 1
        term *= mean / k
        cdf += term
    return k


def _z(p: float) -> float:
    # The standard normal quantile by bisection (used only for means above 700).
    lo, hi = -10.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 * math.erfc(-mid / math.sqrt(2)) < p else (lo, mid)
    return (lo + hi) / 2


def recommend(model: ArrivalModel | None, now: float, lead: float, percentile: float) -> int:
    """Idle runners to keep warm at `now`: the `percentile` of the arrivals expected within
    the runner start-up `lead` (0 with no history)."""
    if model is None or model.hour == 0:
        return 0
    return poisson_quantile(expected_arrivals(advance(model, now), now, lead), percentile)


def next_change(now: float, lead: float) -> float:
    """When [t, t + lead] next reaches a new hour: the forecast's rates change then."""
    return (math.floor((now + lead) / 3600) + 1) * 3600.0 - lead


# ----------------------------------------------------------------------------- persistence
def encode(model: ArrivalModel) -> str:
    """A compact, versioned text form (for status.demand.arrivals)."""
    rates = [min(65535, round(r * _SCALE)) for r in (*model.weekly, *model.daily)]
    packed = base64.b64encode(struct.pack(f"<{len(rates)}H", *rates)).decode()
    return f"{_VERSION}.{model.hour}.{model.count}.{model.hours_seen}.{packed}"


def decode(text: str | None) -> ArrivalModel | None:
    """The model `encode` wrote; None for nothing or anything unreadable (start afresh)."""
    if not text:
        return None
    try:
        version, hour, count, seen, packed = text.split(".", 4)
        raw = base64.b64decode(packed, validate=True)
        rates = struct.unpack(f"<{HOURS_PER_WEEK + 24}H", raw)
    except (ValueError, struct.error):
        return None
    if version != _VERSION:
        return None
    values = tuple(r / _SCALE for r in rates)
    return ArrivalModel(
        hour=int(hour), count=int(count), hours_seen=int(seen),
        weekly=values[:HOURS_PER_WEEK], daily=values[HOURS_PER_WEEK:],
    )  # fmt: skip
