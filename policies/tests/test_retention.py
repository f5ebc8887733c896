from __future__ import annotations

import calendar
import copy
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.retention import (
    _SHAPES,
    add_months,
    expiry_for_on_demand,
    reduces_retention,
    retention_decision,
    retention_reductions,
    tags_and_expiry,
)
from policies.schedule import daily_representatives, run_times
from policies.spec import MONTHS, RETENTION_RULES, WEEK_ORDINALS, WEEKDAYS, validate_policy
from policies.tests.examples import EVERY4H, NIGHTLY
from policies.tests.strategies import anchors, instants, policies

BERLIN = ZoneInfo("Europe/Berlin")


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN).astimezone(UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def changed(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node[p]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return data


def test_examples_are_valid() -> None:
    assert validate_policy(NIGHTLY)[1] == {}
    assert validate_policy(EVERY4H)[1] == {}


# -- tags and expiry ----------------------------------------------------------------


def test_first_sunday_of_january() -> None:
    tags, expires = tags_and_expiry(NIGHTLY, berlin(2024, 1, 7, 2))
    assert tags == ["daily", "weekly", "monthly"]
    assert expires == berlin(2029, 1, 7, 2)


def test_new_year_is_yearly() -> None:
    tags, expires = tags_and_expiry(NIGHTLY, berlin(2024, 1, 1, 2))
    assert tags == ["daily", "yearly"]
    assert expires == berlin(2034, 1, 1, 2)


def test_last_day_of_january_is_yearly() -> None:
    assert tags_and_expiry(NIGHTLY, berlin(2024, 1, 31, 2))[0] == ["daily", "yearly"]
    assert tags_and_expiry(NIGHTLY, berlin(2024, 1, 30, 2))[0] == ["daily"]
    # yearly is January only
    assert tags_and_expiry(NIGHTLY, berlin(2024, 2, 1, 2))[0] == ["daily"]


def test_plain_day() -> None:
    tags, expires = tags_and_expiry(NIGHTLY, berlin(2024, 6, 12, 2))
    assert tags == ["daily"]
    assert expires == berlin(2024, 7, 12, 2)


def test_second_sunday_is_weekly_only() -> None:
    assert tags_and_expiry(NIGHTLY, berlin(2024, 1, 14, 2)) == (
        ["daily", "weekly"],
        berlin(2024, 4, 7, 2),  # 12 weeks
    )


def test_anchor_uses_policy_time_zone() -> None:
    # Saturday 23:30 UTC is Sunday 01:30 in Berlin
    taken = utc(2024, 6, 8, 23, 30)
    assert tags_and_expiry(NIGHTLY, taken)[0] == ["daily", "weekly"]
    assert tags_and_expiry({**NIGHTLY, "timezone": "UTC"}, taken)[0] == ["daily"]


def test_day_based_last_handles_february() -> None:
    p = changed(NIGHTLY, "retention.monthly", {"months": 6, "days": ["last"]})
    assert "monthly" in tags_and_expiry(p, berlin(2024, 2, 29, 2))[0]
    assert "monthly" not in tags_and_expiry(p, berlin(2024, 2, 28, 2))[0]
    assert "monthly" in tags_and_expiry(p, berlin(2023, 2, 28, 2))[0]
    assert "monthly" in tags_and_expiry(p, berlin(2024, 4, 30, 2))[0]


@pytest.mark.parametrize(
    "week,days",
    [
        ("first", range(1, 8)),
        ("second", range(8, 15)),
        ("third", range(15, 22)),
        ("fourth", range(22, 29)),
        ("last", range(25, 32)),
    ],
)
def test_week_ordinals(week: str, days: range) -> None:
    every_weekday = list(WEEKDAYS)
    p = changed(
        NIGHTLY, "retention.monthly", {"months": 6, "weeks": [week], "weekdays": every_weekday}
    )
    selected = [
        d for d in range(1, 32) if "monthly" in tags_and_expiry(p, berlin(2024, 5, d, 2))[0]
    ]
    assert selected == list(days)


def test_expiry_is_wall_clock_across_dst() -> None:
    tags, expires = tags_and_expiry(NIGHTLY, berlin(2024, 3, 20, 12))
    assert expires == berlin(2024, 4, 19, 12)  # 12:00 CEST, 23h after 30*24h
    assert expires - berlin(2024, 3, 20, 12) == timedelta(days=30, hours=-1)


def test_expiry_in_dst_gap_moves_forward() -> None:
    p = changed(NIGHTLY, "retention.daily.days", 7)
    p = changed(p, "retention.weekly", None)
    p = {**p, "schedule": {"frequency": "daily", "time": "02:30"}}
    _, expires = tags_and_expiry(p, berlin(2024, 3, 24, 2, 30))
    assert expires == utc(2024, 3, 31, 1)  # 03:00 CEST


def test_months_clamp_to_month_end() -> None:
    assert add_months(datetime(2024, 1, 31, 2), 1) == datetime(2024, 2, 29, 2)
    assert add_months(datetime(2024, 2, 29, 2), 12) == datetime(2025, 2, 28, 2)
    assert add_months(datetime(2024, 11, 15), 14) == datetime(2026, 1, 15)


def test_hourly_non_daily_points_live_only_in_snapshot_tier() -> None:
    taken = utc(2024, 5, 1, 12)
    assert tags_and_expiry(EVERY4H, taken, is_daily_last=False) == ([], utc(2024, 5, 8, 12))
    assert tags_and_expiry(EVERY4H, taken, is_daily_last=True) == (
        ["daily"],
        utc(2024, 10, 28, 12),
    )


def test_hourly_daily_representative_from_wrapped_window() -> None:
    slots = run_times(EVERY4H, utc(2024, 5, 1, 7), utc(2024, 5, 3, 7))
    reps = daily_representatives(EVERY4H, slots)
    assert reps == {utc(2024, 5, 2, 4), utc(2024, 5, 3, 4)}
    tagged = [s for s in slots if tags_and_expiry(EVERY4H, s, is_daily_last=s in reps)[0]]
    assert tagged == sorted(reps)


def test_instant_restore_longer_than_rules() -> None:
    p = {**EVERY4H, "instant_restore_days": 30, "retention": {"daily": {"days": 7}}}
    decision = retention_decision(p, utc(2024, 5, 1, 4))
    assert decision.tags == ("daily",)
    assert decision.rule_expiries == {"daily": utc(2024, 5, 8, 4)}
    assert decision.expires_at == decision.snapshot_expires_at == utc(2024, 5, 31, 4)


def test_naive_taken_at_rejected() -> None:
    with pytest.raises(ValueError):
        tags_and_expiry(NIGHTLY, datetime(2024, 1, 1))


# -- on-demand ------------------------------------------------------------------------


def test_on_demand_expiry() -> None:
    taken = utc(2024, 5, 1, 10)
    assert expiry_for_on_demand(taken, utc(2024, 6, 1, 12)) == utc(2024, 6, 1, 12)
    assert expiry_for_on_demand(taken, date(2024, 6, 1)) == utc(2024, 6, 2)
    assert expiry_for_on_demand(taken, date(2024, 6, 1), timezone="Europe/Berlin") == utc(
        2024, 6, 1, 22
    )
    assert expiry_for_on_demand(taken, date(2024, 5, 1)) == utc(2024, 5, 2)
    assert expiry_for_on_demand(taken, date(2123, 5, 1)) == utc(2123, 5, 2)
    with pytest.raises(ValueError, match="after"):
        expiry_for_on_demand(taken, date(2024, 4, 30))
    with pytest.raises(ValueError, match="after"):
        expiry_for_on_demand(taken, taken)
    with pytest.raises(ValueError, match="99 years"):
        expiry_for_on_demand(taken, date(2123, 5, 2))
    with pytest.raises(ValueError):
        expiry_for_on_demand(taken, datetime(2024, 6, 1))


# -- reduces_retention ------------------------------------------------------------------


def test_same_policy_does_not_reduce() -> None:
    times = run_times(NIGHTLY, utc(2024, 1, 1), utc(2024, 3, 1))
    assert retention_reductions(NIGHTLY, NIGHTLY, times) == []
    assert not reduces_retention(NIGHTLY, copy.deepcopy(NIGHTLY), times)


@pytest.mark.parametrize(
    "path,value,reason",
    [
        ("retention.daily.days", 29, "Daily retention is shortened from 30 to 29 days."),
        ("retention.weekly.weeks", 11, "Weekly retention is shortened from 12 to 11 weeks."),
        ("retention.monthly.months", 59, "Monthly retention is shortened"),
        ("retention.yearly.years", 9, "Yearly retention is shortened"),
        ("retention.weekly", None, "Weekly retention is removed"),
        ("retention.yearly", None, "Yearly retention is removed"),
        ("retention.weekly.weekdays", ["sat"], "Weekly retention no longer keeps"),
        ("retention.monthly.weeks", ["last"], "Monthly retention no longer keeps"),
        ("retention.monthly.weekdays", ["sat"], "Monthly retention no longer keeps"),
        ("retention.yearly.months", ["feb"], "Yearly retention no longer keeps"),
        ("retention.yearly.days", [1], "Yearly retention no longer keeps"),
        ("retention.monthly", {"months": 60, "days": [1]}, "Monthly retention no longer keeps"),
    ],
)
def test_reductions(path: str, value: Any, reason: str) -> None:
    b = changed(NIGHTLY, path, value)
    reasons = retention_reductions(NIGHTLY, b)
    assert any(r.startswith(reason) for r in reasons), reasons
    assert reduces_retention(NIGHTLY, b)


@pytest.mark.parametrize(
    "path,value",
    [
        ("retention.daily.days", 31),
        ("retention.weekly.weekdays", ["sat", "sun"]),
        ("retention.monthly.weeks", ["first", "last"]),
        ("retention.monthly", {"months": 60, "weeks": ["first"], "weekdays": list(WEEKDAYS)}),
        ("retention.yearly.months", ["jan", "jul"]),
        ("retention.yearly.days", [1, 2, "last"]),
        ("instant_restore_days", 1),  # snapshot tier only
        ("instant_restore_days", 5),
        ("schedule", {"frequency": "daily", "time": "03:00"}),
    ],
)
def test_not_reductions(path: str, value: Any) -> None:
    b = changed(NIGHTLY, path, value)
    assert retention_reductions(NIGHTLY, b) == []


def test_week_based_to_equivalent_day_based() -> None:
    # "first" of every weekday selects days 1-7, the same as days 1..7
    a = changed(
        NIGHTLY,
        "retention.monthly",
        {"months": 6, "weeks": ["first"], "weekdays": list(WEEKDAYS)},
    )
    b = changed(NIGHTLY, "retention.monthly", {"months": 6, "days": [1, 2, 3, 4, 5, 6, 7]})
    assert not reduces_retention(a, b)
    assert not reduces_retention(b, a)
    c = changed(NIGHTLY, "retention.monthly", {"months": 6, "days": [1, 2, 3, 4, 5, 6]})
    assert reduces_retention(a, c)


def test_adding_a_rule_does_not_reduce() -> None:
    a = changed(NIGHTLY, "retention.yearly", None)
    assert not reduces_retention(a, NIGHTLY)
    assert reduces_retention(NIGHTLY, a)


def test_time_zone_change_detected_through_recovery_points() -> None:
    b = {**NIGHTLY, "timezone": "America/New_York"}
    assert not reduces_retention(NIGHTLY, b)  # structurally the same rules
    # Sunday 01:30 in Berlin is still Saturday in New York: loses its weekly tag
    reasons = retention_reductions(NIGHTLY, b, [utc(2024, 6, 8, 23, 30)])
    assert len(reasons) == 1 and reasons[0].startswith("Recovery point of 2024-06-08T23:30")


def test_instant_restore_reduction_counts_for_snapshot_only_points() -> None:
    b = {**EVERY4H, "instant_restore_days": 3}
    assert not reduces_retention(EVERY4H, b)
    slots = run_times(EVERY4H, utc(2024, 5, 1, 7), utc(2024, 5, 2, 7, 59))
    assert reduces_retention(EVERY4H, b, slots)
    # only the day's last (daily) recovery point keeps its expiry
    reps = daily_representatives(EVERY4H, slots)
    assert len(retention_reductions(EVERY4H, b, [s for s in slots if s in reps])) == 0


def test_many_reduced_points_are_summarised() -> None:
    b = {**EVERY4H, "instant_restore_days": 3}
    slots = run_times(EVERY4H, utc(2024, 5, 1), utc(2024, 5, 11))
    reasons = retention_reductions(EVERY4H, b, slots)
    assert len(reasons) == 6
    assert reasons[-1].startswith("... and ")


# -- properties ---------------------------------------------------------------------------


def rp_times(p: dict[str, Any], start: datetime, days: int) -> list[datetime]:
    return run_times(p, start, start + timedelta(days=days))


@settings(max_examples=150, deadline=None)
@given(policies(), instants, st.booleans())
def test_expiry_after_taken_and_longest_rule_wins(
    p: dict[str, Any], taken: datetime, daily_last: bool
) -> None:
    decision = retention_decision(p, taken, is_daily_last=daily_last)
    assert decision.expires_at > taken
    assert list(decision.tags) == [
        t for t in ("daily", "weekly", "monthly", "yearly") if t in decision.tags
    ]
    if not daily_last:
        assert decision.tags == ()
    # each tag's expiry equals that of a policy holding that rule alone
    singles = []
    for tag in decision.tags:
        alone = {**p, "retention": {tag: p["retention"][tag]}}
        single = retention_decision(alone, taken, is_daily_last=daily_last)
        assert single.tags == (tag,)
        singles.append(single.expires_at)
    assert decision.expires_at == max([decision.snapshot_expires_at, *singles])
    assert tags_and_expiry(p, taken, is_daily_last=daily_last) == (
        list(decision.tags),
        decision.expires_at,
    )


@settings(max_examples=60, deadline=None)
@given(policies(), instants)
def test_reduces_retention_of_itself_is_false(p: dict[str, Any], start: datetime) -> None:
    assert retention_reductions(p, copy.deepcopy(p), rp_times(p, start, 10)) == []


@settings(max_examples=60, deadline=None)
@given(policies(), instants, st.data())
def test_lengthening_every_rule_never_reduces(
    p: dict[str, Any], start: datetime, data: st.DataObject
) -> None:
    b = copy.deepcopy(p)
    for name, rule in b["retention"].items():
        field, _, _, hi = RETENTION_RULES[name]
        rule[field] = data.draw(st.integers(rule[field], hi))
    assert validate_policy(b)[1] == {}
    assert not reduces_retention(p, b, rp_times(p, start, 10))


@settings(max_examples=60, deadline=None)
@given(policies(frequencies=("daily", "hourly")), st.data())
def test_shorter_daily_always_reduces(p: dict[str, Any], data: st.DataObject) -> None:
    days = p["retention"]["daily"]["days"]
    if days == 7:
        p["retention"]["daily"]["days"] = days = 8
    b = copy.deepcopy(p)
    b["retention"]["daily"]["days"] = data.draw(st.integers(7, days - 1))
    assert reduces_retention(p, b)


@st.composite
def anchor_change(draw: st.DrawFn, p: dict[str, Any]) -> dict[str, Any]:
    """Same policy with every weekly/monthly/yearly anchor redrawn."""
    b = copy.deepcopy(p)
    restricted = p["schedule"].get("weekdays")
    for name, rule in b["retention"].items():
        if name == "weekly":
            rule["weekdays"] = draw(
                st.lists(st.sampled_from(restricted or WEEKDAYS), min_size=1, unique=True)
            )
        elif name in ("monthly", "yearly"):
            for key in ("weeks", "weekdays", "days"):
                rule.pop(key, None)
            rule.update(draw(anchors(restricted)))
            if name == "yearly":
                rule["months"] = draw(st.lists(st.sampled_from(MONTHS), min_size=1, unique=True))
    return b


@settings(max_examples=80, deadline=None)
@given(policies(frequencies=("daily", "weekly")), st.data())
def test_structural_check_is_sound(p: dict[str, Any], data: st.DataObject) -> None:
    """If no anchor was narrowed, no recovery point can expire earlier."""
    b = data.draw(anchor_change(p))
    if retention_reductions(p, b) == []:
        times = rp_times(p, data.draw(instants), 90)
        assert retention_reductions(p, b, times) == []


def test_calendar_shapes_are_exactly_the_real_ones() -> None:
    """The anchor comparison enumerates (month, day, weekday, month length); 2000-2027
    holds every weekday/leap-year combination, so it must give the same set."""
    real = set()
    day = date(2000, 1, 1)
    while day.year < 2028:
        dim = calendar.monthrange(day.year, day.month)[1]
        real.add((MONTHS[day.month - 1], day.day, WEEKDAYS[day.weekday()], dim))
        day += timedelta(days=1)
    assert real == set(_SHAPES)


def test_week_ordinal_names() -> None:
    assert WEEK_ORDINALS == ("first", "second", "third", "fourth", "last")
