"""When a policy's scheduled backups run. Pure Python, no Django.

All functions take a *validated* policy representation (see ``policies.spec``)
and timezone-aware datetimes, and return UTC-aware datetimes. Naive datetimes
are rejected with ``ValueError``.

Slots are computed on the local wall clock of the policy's time zone:

* daily: every local day at ``time``;
* weekly: on the listed ``weekdays`` at ``time``;
* hourly: every local day D has the slots ``window_start + k * interval_hours``
  for ``k = 0 .. window_hours / interval_hours - 1`` (wall-clock arithmetic).
  A window may run past midnight (e.g. 08:00 with 24 hours and 4-hour
  interval gives 08, 12, 16, 20, 00, 04); those slots belong to day D, the day
  the window started (``slot_day``).

DST: a wall time the clock skips (spring forward) runs at the first valid
instant after the gap (02:30 Europe/Berlin on the spring-forward day runs at
03:00 CEST); a wall time that occurs twice (fall back) runs once, at the first
occurrence. Two slots that land on the same instant are merged, so the result
is always strictly increasing.

Intervals are half-open: ``run_times(policy, after, until)`` returns the slots
``s`` with ``after < s <= until``.

``due(policy, last_scheduled, now)`` is what the scheduler tick calls: it
returns the single slot to run now, or None. After downtime only the latest
missed slot is run (earlier missed slots are skipped). When the protection has
never run (``last_scheduled`` is None) only a slot within the last ``period``
(see ``period``; one day for daily, seven days for weekly, ``interval_hours``
for hourly) counts, so an ancient slot never fires. That still means a new
protection of a daily policy runs today's already-passed slot at the next
tick; to make a new protection wait for its next slot instead, pass the
protection's creation time as ``last_scheduled``. After running, persist the
returned slot (not the current time) as the new ``last_scheduled``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from policies.spec import WEEKDAYS, parse_hhmm

Policy = Mapping[str, Any]

# Longest distance between consecutive slots of any valid policy is 7 days
# (weekly on one weekday); a DST shift or a skipped calendar day adds at most
# a little more. Searching this far back/ahead always finds a slot.
_SEARCH_SPAN = timedelta(days=16)


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def policy_zone(policy: Policy) -> ZoneInfo:
    return zone(policy["timezone"])


def require_aware(value: datetime, name: str) -> None:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def resolve_local(wall: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of a naive local wall time in ``tz``.

    A wall time repeated by a fall-back transition resolves to its first
    occurrence. A wall time inside a spring-forward gap resolves to the first
    valid instant after the gap (the transition itself).
    """
    first = wall.replace(tzinfo=tz, fold=0)
    instant = first.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == wall.replace(tzinfo=None):
        return instant
    # In a gap. fold=1 applies the post-transition offset and lands before the
    # transition; fold=0 applies the pre-transition offset and lands after it.
    lo = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    hi = instant
    if lo >= hi:  # not a normal gap; nothing better to offer
        return hi
    target = hi.astimezone(tz).utcoffset()
    lo_s, hi_s = 0, int((hi - lo).total_seconds())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if (lo + timedelta(seconds=mid)).astimezone(tz).utcoffset() == target:
            hi_s = mid
        else:
            lo_s = mid
    return lo + timedelta(seconds=hi_s)


def _slot_walls(schedule: Mapping[str, Any], day: date) -> list[datetime]:
    """Naive local wall times of the slots attributed to ``day``."""
    freq = schedule["frequency"]
    if freq == "hourly":
        h, m = parse_hhmm(schedule["window_start"])
        base = datetime.combine(day, time(h, m))
        step = schedule["interval_hours"]
        return [base + timedelta(hours=k * step) for k in range(schedule["window_hours"] // step)]
    if freq == "weekly" and WEEKDAYS[day.weekday()] not in schedule["weekdays"]:
        return []
    h, m = parse_hhmm(schedule["time"])
    return [datetime.combine(day, time(h, m))]


def run_times(policy: Policy, after: datetime, until: datetime) -> list[datetime]:
    """Scheduled slots ``s`` with ``after < s <= until``, strictly increasing, UTC."""
    require_aware(after, "after")
    require_aware(until, "until")
    if until <= after:
        return []
    tz = policy_zone(policy)
    schedule = policy["schedule"]
    # A slot of day D can fall on D+1 (window past midnight, DST shift), so
    # start one day early (two, to be safe around skipped calendar days).
    day = after.astimezone(tz).date() - timedelta(days=2)
    last_day = until.astimezone(tz).date() + timedelta(days=1)
    found: set[datetime] = set()
    while day <= last_day:
        for wall in _slot_walls(schedule, day):
            instant = resolve_local(wall, tz)
            if after < instant <= until:
                found.add(instant)
        day += timedelta(days=1)
    return sorted(found)


def next_run(policy: Policy, after: datetime) -> datetime:
    """The first slot strictly after ``after``."""
    require_aware(after, "after")
    start = after
    while True:
        slots = run_times(policy, start, start + _SEARCH_SPAN)
        if slots:
            return slots[0]
        start += _SEARCH_SPAN  # pragma: no cover - every valid policy has a slot per week


def previous_run(policy: Policy, at: datetime) -> datetime:
    """The latest slot at or before ``at``."""
    require_aware(at, "at")
    end = at
    while True:
        slots = run_times(policy, end - _SEARCH_SPAN, end)
        if slots:
            return slots[-1]
        end -= _SEARCH_SPAN  # pragma: no cover


def period(policy: Policy) -> timedelta:
    """Nominal spacing of the schedule: interval_hours, one day, or seven days."""
    schedule = policy["schedule"]
    if schedule["frequency"] == "hourly":
        return timedelta(hours=schedule["interval_hours"])
    if schedule["frequency"] == "weekly":
        return timedelta(days=7)
    return timedelta(days=1)


def due(
    policy: Policy,
    last_scheduled: datetime | None,
    now: datetime,
    *,
    lookback: timedelta | None = None,
) -> datetime | None:
    """The one slot to run now, or None.

    That is the latest slot ``s <= now`` if ``s > last_scheduled``; earlier
    missed slots are never returned (only the latest is caught up). With
    ``last_scheduled=None`` the slot must also be newer than ``now - lookback``
    (default ``period(policy)``). Persist the returned slot as the next call's
    ``last_scheduled``.
    """
    require_aware(now, "now")
    latest = previous_run(policy, now)
    if last_scheduled is None:
        window = period(policy) if lookback is None else lookback
        return latest if latest > now - window else None
    require_aware(last_scheduled, "last_scheduled")
    return latest if latest > last_scheduled else None


def slot_day(policy: Policy, instant: datetime) -> date:
    """The local day a backup taken at ``instant`` belongs to.

    Daily and weekly: the local calendar date. Hourly: the day whose window
    contains it, i.e. the local date of (wall time - window_start), so the
    00:00 and 04:00 slots of a window starting 08:00 belong to the previous day.
    """
    require_aware(instant, "instant")
    tz = policy_zone(policy)
    wall = instant.astimezone(tz).replace(tzinfo=None)
    schedule = policy["schedule"]
    if schedule["frequency"] == "hourly":
        h, m = parse_hhmm(schedule["window_start"])
        return (wall - timedelta(hours=h, minutes=m)).date()
    return wall.date()


def daily_representatives(policy: Policy, times: Iterable[datetime]) -> set[datetime]:
    """For each ``slot_day``, the latest of ``times`` (the day's "daily" backup).

    Pass the scheduled slot times of a protection's successful backups; the
    result tells ``retention.tags_and_expiry`` which ones get ``is_daily_last``.
    """
    latest: dict[date, datetime] = {}
    for t in times:
        d = slot_day(policy, t)
        if d not in latest or t > latest[d]:
            latest[d] = t
    return set(latest.values())
