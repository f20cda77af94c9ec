"""The arrival forecaster (issue 14 part 2) on synthetic seasonal data: it learns daily and
weekly seasonality, anticipates a ramp by the lead time, forgets slowly, survives a round trip
through its text form, and recommends a Poisson percentile."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest

from runnerfleet.planning.forecast import (
    ArrivalModel,
    advance,
    decode,
    encode,
    expected_arrivals,
    observe,
    poisson_quantile,
    recommend,
)

pytestmark = pytest.mark.unit

MONDAY = dt.datetime(2026, 11, 2, tzinfo=dt.UTC).timestamp()  # a Monday, 00:00 UTC
HOUR = 3600.0


def working_hours(t: float) -> float:
    """Jobs per hour: 60 on weekdays 09-17 UTC, 6 at other weekday hours, 0 at weekends."""
    day = dt.datetime.fromtimestamp(t, dt.UTC)
    if day.weekday() >= 5:
        return 0.0
    return 60.0 if 9 <= day.hour < 17 else 6.0


def learn(weeks: float, rate=working_hours, seed: int = 1) -> ArrivalModel:  # type: ignore[no-untyped-def]
    """Poisson arrivals, minute by minute, from MONDAY on."""
    draw, model = random.Random(seed), ArrivalModel()  # noqa: S311 (a trace, not a secret)
    for minute in range(int(weeks * 7 * 24 * 60)):
        t = MONDAY + minute * 60.0
        p = rate(t) / 60.0
        arrivals = sum(1 for _ in range(4) if draw.random() < p / 4)  # up to 4 a minute
        model = observe(model, arrivals, t)
    return model


def test_learns_working_hours_and_quiet_weekends() -> None:
    model = learn(3)
    week3 = MONDAY + 21 * 24 * HOUR  # the Monday after
    assert model.rate(int((week3 + 10 * HOUR) // HOUR)) == pytest.approx(60, rel=0.25)
    assert model.rate(int((week3 + 3 * HOUR) // HOUR)) == pytest.approx(6, abs=3)
    saturday_noon = week3 - 2 * 24 * HOUR + 12 * HOUR
    assert model.rate(int(saturday_noon // HOUR)) < 1.0  # weekly, not daily, seasonality


def test_first_day_uses_daily_seasonality_until_a_week_is_seen() -> None:
    model = learn(1.5 / 7)  # Monday and half of Tuesday
    tuesday_2pm = MONDAY + 24 * HOUR + 14 * HOUR
    # Tuesday 14:00's hour-of-week has not been seen, Monday 14:00's hour of day has.
    assert expected_arrivals(model, tuesday_2pm, HOUR) > 30


def test_anticipates_a_ramp_by_the_lead_time() -> None:
    model = learn(2)
    monday = MONDAY + 14 * 24 * HOUR
    before_nine = monday + 9 * HOUR - 120  # 08:58
    quiet = recommend(model, before_nine, lead=60, percentile=95)
    ramp = recommend(model, before_nine, lead=600, percentile=95)  # reaches past 09:00
    assert quiet <= 2
    assert ramp >= 6
    assert recommend(model, monday + 12 * HOUR, lead=60, percentile=95) >= 3
    assert recommend(model, monday - 24 * HOUR + 12 * HOUR, lead=60, percentile=95) == 0  # Sunday


def test_higher_percentiles_and_longer_leads_keep_more_warm() -> None:
    model = learn(2)
    noon = MONDAY + 14 * 24 * HOUR + 12 * HOUR
    by_pct = [recommend(model, noon, 120, p) for p in (50, 90, 99)]
    assert by_pct == sorted(by_pct)
    assert by_pct[0] < by_pct[-1]
    assert recommend(model, noon, 600, 95) > recommend(model, noon, 60, 95)


def test_a_changed_pattern_is_learnt_within_weeks() -> None:
    model = learn(2)

    # The team moves its working hours to the night: after a few weeks the old ones fade.
    def night(t: float) -> float:
        return 60.0 if dt.datetime.fromtimestamp(t, dt.UTC).hour < 8 else 0.0

    draw, t0 = random.Random(7), MONDAY + 14 * 24 * HOUR  # noqa: S311
    for minute in range(4 * 7 * 24 * 60):
        t = t0 + minute * 60.0
        model = observe(model, 1 if draw.random() < night(t) / 60 else 0, t)
    later = t0 + 28 * 24 * HOUR
    assert model.rate(int((later + 10 * HOUR) // HOUR)) < 20  # 60 x 0.7^4 = 14 after four weeks
    assert model.rate(int((later + 3 * HOUR) // HOUR)) > 40


def test_a_long_listener_outage_is_not_learnt_as_silence() -> None:
    model = learn(2)
    noon_hour = int((MONDAY + 14 * 24 * HOUR + 12 * HOUR) // HOUR)
    before = model.rate(noon_hour)
    # Nothing observed for two days (the listener was down), then one arrival.
    after = observe(model, 1, model.hour * HOUR + 2 * 24 * HOUR)
    assert after.rate(noon_hour) == before


def test_round_trips_through_its_text_form_compactly() -> None:
    model = learn(1)
    text = encode(model)
    assert len(text) < 600
    back = decode(text)
    assert back is not None
    assert (back.hour, back.count) == (model.hour, model.count)
    assert back.hours_seen == model.hours_seen
    assert max(abs(a - b) for a, b in zip(back.weekly, model.weekly, strict=True)) <= 0.05
    assert decode(None) is None
    assert decode("v9.1.2.3.AAAA") is None
    assert decode("junk") is None


def test_poisson_quantile() -> None:
    assert poisson_quantile(0.0, 95) == 0
    assert poisson_quantile(1.0, 50) == 1
    assert poisson_quantile(1.0, 95) == 3  # P(X<=2)=0.920, P(X<=3)=0.981
    assert poisson_quantile(10.0, 95) == 15
    assert 1000 < poisson_quantile(1000.0, 95) < 1060  # normal approximation


def test_no_history_recommends_nothing() -> None:
    assert recommend(None, MONDAY, 60, 95) == 0
    assert recommend(ArrivalModel(), MONDAY, 60, 95) == 0
    assert advance(ArrivalModel(), MONDAY).hour == int(MONDAY // HOUR)


def test_the_operator_keeps_the_recommendation_warm_and_wakes_at_hour_edges() -> None:
    from runnerfleet.models.runner_scale_set import Demand, RunnerScaleSetSpec
    from runnerfleet.planning.forecast import next_change
    from runnerfleet.services.scale_set import limits_of

    model = learn(2)
    noon = MONDAY + 14 * 24 * HOUR + 12 * HOUR
    demand = Demand.model_validate({
        "assignedJobs": 0, "sequence": 1, "observedAt": "2026-11-16T12:00:00Z",
        "arrivals": encode(model),
    })  # fmt: skip

    def spec(**extra: Any) -> RunnerScaleSetSpec:
        return RunnerScaleSetSpec.model_validate({
            "github": {"configUrl": "https://github.com/acme", "secretRef": {"name": "gh"}},
            "labels": ["linux"], "minRunners": 1, "maxRunners": 4, **extra,
        })  # fmt: skip

    wanted = recommend(model, noon, 120, 99)
    assert wanted > 4
    predictive = spec(
        warmPolicy="predictive", predictive={"targetPercentile": 99, "leadTime": "2m"}
    )
    assert limits_of(predictive, now=noon, demand=demand).effective_min == 4  # within max
    assert limits_of(spec(), now=noon, demand=demand).effective_min == 1  # static: unchanged
    assert next_change(noon, 120) == noon + HOUR - 120
