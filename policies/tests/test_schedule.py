from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from policies.schedule import (
    daily_representatives,
    due,
    next_run,
    period,
    previous_run,
    resolve_local,
    run_times,
    slot_day,
)
from policies.spec import WEEKDAYS, parse_hhmm
from policies.tests.strategies import instants, policies

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def policy(tz: str, **schedule: Any) -> dict[str, Any]:
    kind = "enhanced" if schedule.get("frequency") == "hourly" else "standard"
    return {
        "name": "P",
        "kind": kind,
        "timezone": tz,
        "consistency": "default",
        "schedule": schedule,
        "instant_restore_days": 2,
        "retention": {"daily": {"days": 30}},
    }


def daily(tz: str, at: str) -> dict[str, Any]:
    return policy(tz, frequency="daily", time=at)


def hourly(tz: str, start: str, hours: int, interval: int) -> dict[str, Any]:
    return policy(
        tz, frequency="hourly", interval_hours=interval, window_start=start, window_hours=hours
    )


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(tz: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=tz, fold=fold).astimezone(UTC)


# -- DST ----------------------------------------------------------------------------


def test_berlin_spring_forward_runs_at_first_valid_instant() -> None:
    p = daily("Europe/Berlin", "02:30")
    slots = run_times(p, utc(2024, 3, 29), utc(2024, 4, 2))
    assert slots == [
        local(BERLIN, 2024, 3, 29, 2, 30),
        local(BERLIN, 2024, 3, 30, 2, 30),
        utc(2024, 3, 31, 1, 0),  # 03:00 CEST, the end of the gap
        local(BERLIN, 2024, 4, 1, 2, 30),
    ]
    assert slots[2].astimezone(BERLIN).strftime("%H:%M %Z") == "03:00 CEST"


def test_berlin_fall_back_runs_once_at_first_occurrence() -> None:
    p = daily("Europe/Berlin", "02:30")
    slots = run_times(p, utc(2024, 10, 26), utc(2024, 10, 29))
    assert slots == [utc(2024, 10, 26, 0, 30), utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]
    assert slots[1].astimezone(BERLIN).strftime("%H:%M %Z") == "02:30 CEST"


def test_new_york_spring_forward() -> None:
    p = daily("America/New_York", "02:15")
    slots = run_times(p, utc(2024, 3, 9), utc(2024, 3, 12))
    assert slots == [utc(2024, 3, 9, 7, 15), utc(2024, 3, 10, 7, 0), utc(2024, 3, 11, 6, 15)]
    assert slots[1].astimezone(NEW_YORK).strftime("%H:%M %Z") == "03:00 EDT"


def test_new_york_fall_back() -> None:
    p = daily("America/New_York", "01:30")
    slots = run_times(p, utc(2024, 11, 2), utc(2024, 11, 5))
    assert slots == [utc(2024, 11, 2, 5, 30), utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)]
    assert slots[1].astimezone(NEW_YORK).strftime("%H:%M %Z") == "01:30 EDT"


def test_times_outside_transitions_unaffected() -> None:
    p = daily("Europe/Berlin", "04:00")
    slots = run_times(p, utc(2024, 3, 30), utc(2024, 4, 1))
    assert [s.astimezone(BERLIN).hour for s in slots] == [4, 4]
    assert slots[1] - slots[0] == timedelta(hours=23)


def test_resolve_local_half_hour_dst() -> None:
    # Lord Howe moves 30 minutes: 02:00 -> 02:30 on 2024-10-06.
    tz = ZoneInfo("Australia/Lord_Howe")
    t = resolve_local(datetime(2024, 10, 6, 2, 10), tz)
    assert t.astimezone(tz).replace(tzinfo=None) == datetime(2024, 10, 6, 2, 30)


# -- weekly -----------------------------------------------------------------------------


def test_weekly_on_listed_weekdays() -> None:
    p = policy("Europe/Berlin", frequency="weekly", time="22:30", weekdays=["mon", "thu"])
    slots = run_times(p, utc(2024, 6, 1), utc(2024, 6, 15))  # Sat 1 June .. Sat 15 June
    days = [s.astimezone(BERLIN) for s in slots]
    assert [(d.day, WEEKDAYS[d.weekday()], d.strftime("%H:%M")) for d in days] == [
        (3, "mon", "22:30"),
        (6, "thu", "22:30"),
        (10, "mon", "22:30"),
        (13, "thu", "22:30"),
    ]
    assert period(p) == timedelta(days=7)


def test_weekly_weekday_is_local_not_utc() -> None:
    # Monday 00:30 in Tokyo is Sunday in UTC.
    p = policy("Asia/Tokyo", frequency="weekly", time="00:30", weekdays=["mon"])
    assert next_run(p, utc(2024, 6, 1)) == utc(2024, 6, 2, 15, 30)


# -- hourly -------------------------------------------------------------------------------


def test_hourly_24h_window_wraps_past_midnight() -> None:
    p = hourly("UTC", "08:00", 24, 4)
    slots = run_times(p, utc(2024, 5, 1, 7), utc(2024, 5, 2, 7, 59))
    assert [s.hour for s in slots] == [8, 12, 16, 20, 0, 4]
    assert {slot_day(p, s) for s in slots} == {date(2024, 5, 1)}
    # the 04:00 slot on 1 May belongs to 30 April's window
    assert slot_day(p, utc(2024, 5, 1, 4)) == date(2024, 4, 30)


def test_hourly_partial_window() -> None:
    p = hourly("UTC", "09:30", 12, 6)
    slots = run_times(p, utc(2024, 5, 1), utc(2024, 5, 3))
    assert [s.strftime("%d %H:%M") for s in slots] == [
        "01 09:30",
        "01 15:30",
        "02 09:30",
        "02 15:30",
    ]


def test_hourly_window_crossing_midnight_not_full_day() -> None:
    p = hourly("UTC", "22:00", 8, 4)
    slots = run_times(p, utc(2024, 5, 1), utc(2024, 5, 3))
    assert [s.strftime("%d %H") for s in slots] == ["01 02", "01 22", "02 02", "02 22"]
    assert slot_day(p, utc(2024, 5, 2, 2)) == date(2024, 5, 1)


def test_hourly_across_berlin_dst() -> None:
    p = hourly("Europe/Berlin", "22:30", 24, 4)
    # spring: 02:30 of 31 March is skipped -> 03:00 CEST
    spring = run_times(p, local(BERLIN, 2024, 3, 30, 22), local(BERLIN, 2024, 3, 31, 22))
    walls = [s.astimezone(BERLIN).strftime("%H:%M") for s in spring]
    assert walls == ["22:30", "03:00", "06:30", "10:30", "14:30", "18:30"]
    # autumn: 02:30 of 27 October happens twice -> only the first (CEST)
    autumn = run_times(p, local(BERLIN, 2024, 10, 26, 22), local(BERLIN, 2024, 10, 27, 22))
    walls = [s.astimezone(BERLIN).strftime("%H:%M %Z") for s in autumn]
    assert walls[1] == "02:30 CEST"
    assert len(autumn) == 6


def test_hourly_period() -> None:
    assert period(hourly("UTC", "00:00", 24, 6)) == timedelta(hours=6)
    assert period(daily("UTC", "00:00")) == timedelta(days=1)


# -- next / previous / due --------------------------------------------------------------


def test_next_and_previous_run() -> None:
    p = daily("UTC", "02:00")
    assert next_run(p, utc(2024, 1, 1, 2)) == utc(2024, 1, 2, 2)
    assert next_run(p, utc(2024, 1, 1, 1, 59)) == utc(2024, 1, 1, 2)
    assert previous_run(p, utc(2024, 1, 1, 2)) == utc(2024, 1, 1, 2)
    assert previous_run(p, utc(2024, 1, 1, 1, 59)) == utc(2023, 12, 31, 2)


def test_due_catches_up_only_the_latest_missed_slot() -> None:
    p = daily("UTC", "02:00")
    # down from 1 Jan to 5 Jan 10:00: only 5 Jan 02:00 runs
    assert due(p, utc(2024, 1, 1, 2), utc(2024, 1, 5, 10)) == utc(2024, 1, 5, 2)
    # after running it, nothing more is due the same day
    assert due(p, utc(2024, 1, 5, 2), utc(2024, 1, 5, 23)) is None
    # a slot exactly at now is due
    assert due(p, utc(2024, 1, 5, 2), utc(2024, 1, 6, 2)) == utc(2024, 1, 6, 2)
    assert due(p, utc(2024, 1, 5, 2), utc(2024, 1, 6, 1, 59, 59)) is None


def test_due_after_long_downtime() -> None:
    p = hourly("UTC", "08:00", 24, 4)
    assert due(p, utc(2020, 1, 1, 8), utc(2024, 5, 1, 13)) == utc(2024, 5, 1, 12)


def test_due_without_history_looks_back_one_period() -> None:
    p = hourly("UTC", "08:00", 12, 4)  # 08, 12, 16
    assert due(p, None, utc(2024, 5, 1, 13)) == utc(2024, 5, 1, 12)
    assert due(p, None, utc(2024, 5, 1, 23)) is None  # 16:00 is older than 4h
    assert due(p, None, utc(2024, 5, 1, 23), lookback=timedelta(hours=8)) == utc(2024, 5, 1, 16)
    d = daily("UTC", "02:00")
    assert due(d, None, utc(2024, 5, 1, 3)) == utc(2024, 5, 1, 2)
    # a new protection that should wait for its next slot passes its creation time
    assert due(d, utc(2024, 5, 1, 3), utc(2024, 5, 1, 4)) is None


def test_naive_datetimes_rejected() -> None:
    p = daily("UTC", "02:00")
    with pytest.raises(ValueError):
        run_times(p, datetime(2024, 1, 1), utc(2024, 1, 2))
    with pytest.raises(ValueError):
        due(p, datetime(2024, 1, 1), utc(2024, 1, 2))
    with pytest.raises(ValueError):
        next_run(p, datetime(2024, 1, 1))


def test_run_times_empty_range() -> None:
    p = daily("UTC", "02:00")
    assert run_times(p, utc(2024, 1, 2), utc(2024, 1, 1)) == []
    assert run_times(p, utc(2024, 1, 1, 2), utc(2024, 1, 1, 2)) == []


def test_aware_non_utc_inputs() -> None:
    p = daily("UTC", "02:00")
    after = datetime(2024, 1, 1, 4, tzinfo=BERLIN)  # 03:00 UTC
    assert next_run(p, after) == utc(2024, 1, 2, 2)
    assert next_run(p, after).tzinfo is UTC


def test_daily_representatives() -> None:
    p = hourly("UTC", "08:00", 24, 4)
    times = [utc(2024, 5, 1, h) for h in (8, 12, 16)] + [utc(2024, 5, 2, 4), utc(2024, 5, 2, 8)]
    assert daily_representatives(p, times) == {utc(2024, 5, 2, 4), utc(2024, 5, 2, 8)}


# -- properties ---------------------------------------------------------------------------


def is_transition(t: datetime, tz: ZoneInfo) -> bool:
    before = (t - timedelta(seconds=1)).astimezone(tz).utcoffset()
    return before != t.astimezone(tz).utcoffset()


@settings(max_examples=150, deadline=None)
@given(policies(), instants, st.integers(0, 20 * 24 * 60))
def test_run_times_properties(p: dict[str, Any], after: datetime, minutes: int) -> None:
    until = after + timedelta(minutes=minutes)
    slots = run_times(p, after, until)
    assert all(a < b for a, b in zip(slots, slots[1:], strict=False))
    assert all(after < s <= until and s.tzinfo is UTC for s in slots)
    tz = ZoneInfo(p["timezone"])
    schedule = p["schedule"]
    for s in slots:
        wall = s.astimezone(tz).replace(tzinfo=None)
        shifted = is_transition(s, tz)  # moved forward out of a DST gap
        if schedule["frequency"] == "hourly":
            h, m = parse_hhmm(schedule["window_start"])
            offset = wall - datetime.combine(slot_day(p, s), datetime.min.time())
            offset -= timedelta(hours=h, minutes=m)
            steps, rest = divmod(offset, timedelta(hours=schedule["interval_hours"]))
            if not shifted:
                assert rest == timedelta(0)
                assert 0 <= steps < schedule["window_hours"] // schedule["interval_hours"]
        else:
            if not shifted:
                assert wall.strftime("%H:%M") == schedule["time"]
            if schedule["frequency"] == "weekly":
                assert WEEKDAYS[slot_day(p, s).weekday()] in schedule["weekdays"]
    if schedule["frequency"] == "daily":
        days = [slot_day(p, s) for s in slots]
        assert days == [days[0] + timedelta(days=i) for i in range(len(days))] if days else True
    # consistent with splitting the range
    mid = after + (until - after) / 2
    assert run_times(p, after, mid) + run_times(p, mid, until) == slots
    # next_run agrees with run_times
    if slots:
        assert next_run(p, after) == slots[0]


@settings(max_examples=150, deadline=None)
@given(policies(), instants, st.integers(0, 20 * 24 * 60), st.booleans())
def test_due_properties(p: dict[str, Any], now: datetime, minutes: int, fresh: bool) -> None:
    last = None if fresh else now - timedelta(minutes=minutes)
    result = due(p, last, now)
    lower = now - period(p) if last is None else last
    in_range = run_times(p, lower, now)
    if in_range:
        assert result == in_range[-1]
        assert result == previous_run(p, now)
    else:
        assert result is None
    if result is not None:
        assert result <= now
        assert due(p, result, now) is None  # running it clears the backlog


@settings(max_examples=60, deadline=None)
@given(policies(frequencies=("hourly",)), instants)
def test_hourly_slot_counts_per_day(p: dict[str, Any], start: datetime) -> None:
    tz = ZoneInfo(p["timezone"])
    day = start.astimezone(tz).date()
    assume(day.year < 2037)
    schedule = p["schedule"]
    expected = schedule["window_hours"] // schedule["interval_hours"]
    slots = run_times(p, start - timedelta(days=3), start + timedelta(days=3))
    per_day: dict[date, int] = {}
    for s in slots:
        per_day[slot_day(p, s)] = per_day.get(slot_day(p, s), 0) + 1
    # days fully inside the range have every slot (DST may merge at most one)
    inner = [day + timedelta(days=i) for i in (-1, 0, 1)]
    for d in inner:
        assert expected - 1 <= per_day.get(d, 0) <= expected


def _transitions(zone: str, years: range) -> list[datetime]:
    """UTC instants where the zone's offset changes (daily scan, then bisect)."""
    tz = ZoneInfo(zone)
    out = []
    day = datetime(years.start, 1, 1, tzinfo=UTC)
    end = datetime(years.stop, 1, 1, tzinfo=UTC)
    while day < end:
        lo, hi = day, day + timedelta(days=1)
        if lo.astimezone(tz).utcoffset() != hi.astimezone(tz).utcoffset():
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                if mid.astimezone(tz).utcoffset() == lo.astimezone(tz).utcoffset():
                    lo = mid
                else:
                    hi = mid
            out.append(hi.replace(microsecond=0))
        day += timedelta(days=1)
    return out


TRANSITIONS = {
    z: _transitions(z, range(2023, 2027))
    for z in ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago")
}


@settings(max_examples=120, deadline=None)
@given(policies(), st.data())
def test_slots_around_dst_transitions(p: dict[str, Any], data: st.DataObject) -> None:
    zone = data.draw(st.sampled_from(sorted(TRANSITIONS)))
    p = {**p, "timezone": zone}
    transition = data.draw(st.sampled_from(TRANSITIONS[zone]))
    after = transition - timedelta(minutes=data.draw(st.integers(0, 3 * 24 * 60)))
    until = transition + timedelta(minutes=data.draw(st.integers(0, 3 * 24 * 60)))
    slots = run_times(p, after, until)
    assert all(a < b for a, b in zip(slots, slots[1:], strict=False))
    tz = ZoneInfo(zone)
    schedule = p["schedule"]
    for s in slots:
        if is_transition(s, tz):
            continue
        wall = s.astimezone(tz).replace(tzinfo=None)
        if schedule["frequency"] != "hourly":
            assert wall.strftime("%H:%M") == schedule["time"]
        # a repeated wall time runs at its first occurrence only
        first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
        assert s == first
    if schedule["frequency"] == "daily":
        days = [slot_day(p, s) for s in slots]
        assert len(set(days)) == len(days)
    now = data.draw(st.sampled_from([after, until, transition]))
    result = due(p, after, now)
    expected = run_times(p, after, now)
    assert result == (expected[-1] if expected else None)
