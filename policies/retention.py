"""Which retention rules keep a recovery point, and until when. Pure Python.

Call ``tags_and_expiry(policy, taken_at, is_daily_last=...)`` once per
successful scheduled backup, with ``taken_at`` = the *scheduled slot time*
(what ``schedule.due`` returned), not the completion time, so a backup that
ran late still belongs to its slot's day. Everything is evaluated on the local
calendar of the policy's time zone.

Rules (``day`` is ``schedule.slot_day(policy, taken_at)``):

* daily    keeps the day's backup for ``days`` days;
* weekly   keeps it for ``weeks`` weeks when ``day`` is one of ``weekdays``;
* monthly  keeps it for ``months`` months when ``day`` matches the anchor:
  week-based - ``day`` is one of ``weekdays`` and falls in one of ``weeks``
  (first = days 1-7, second 8-14, third 15-21, fourth 22-28, last = the last
  seven days of the month); day-based - ``day`` is one of ``days`` (1-28), or
  ``"last"`` and it is the last day of the month;
* yearly   keeps it for ``years`` years when ``day`` is in one of ``months``
  and matches the same kind of anchor.

There is no fallback: if the anchor day's backup failed, no other backup is
promoted (as Azure).

Only the day's representative backup is eligible for the rules. Daily and
weekly schedules produce one scheduled backup a day, so ``is_daily_last``
defaults to True. For hourly schedules the caller passes ``is_daily_last=True``
only for the day's last successful backup (``schedule.daily_representatives``
computes that set); the other hourly recovery points live only in the snapshot
tier and expire after ``instant_restore_days``.

Durations are wall-clock: N days/weeks later at the same local time, N months
or years later on the same day of the month (clamped to the month's end), at
the same local time; the result is resolved to UTC like schedule slots.

``expires_at`` is the latest of the instant-restore snapshot expiry and the
expiry of every rule that selects the recovery point (the longest rule wins),
so it is always later than ``taken_at``.

``reduces_retention(a, b, rp_times)`` is the multi-user-authorisation check for
a policy change from ``a`` to ``b``. It is True when

* a retention rule of ``a`` is absent in ``b`` or has a smaller count;
* a weekly/monthly/yearly rule of ``b`` no longer selects some calendar day
  that the same rule of ``a`` selected (a narrowed anchor: weekday removed,
  "first sun" -> "last sun", a month removed, day-based <-> week-based ...),
  because existing recovery points kept by that anchor would lose the tag;
* any of the given recovery point times (scheduled slot times of existing
  backups) would expire earlier under ``b`` than under ``a`` - this catches
  time zone and hourly-window changes, and instant-restore reductions that
  shorten snapshot-only (hourly) recovery points.

Reducing ``instant_restore_days`` alone is *not* a reduction: it only shortens
how long the fast snapshot copy is kept, not how long a vault recovery point is
kept (as Azure's MUA "reduce retention" operation). It does count through
``rp_times`` when the snapshot is the only copy of a given recovery point.
Changes to the schedule itself are not reductions.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from policies.schedule import (
    daily_representatives,
    policy_zone,
    require_aware,
    resolve_local,
    slot_day,
    zone,
)
from policies.spec import MONTHS, RETENTION_RULES, WEEKDAYS, describe_rule

Policy = Mapping[str, Any]

TAGS = ("daily", "weekly", "monthly", "yearly")
ON_DEMAND_MAX_YEARS = 99
_MAX_REASONS_PER_RP_CHECK = 5


@dataclass(frozen=True)
class RetentionDecision:
    tags: tuple[str, ...]
    expires_at: datetime
    snapshot_expires_at: datetime
    rule_expiries: dict[str, datetime] = field(default_factory=dict)


def add_months(wall: datetime, months: int) -> datetime:
    """Naive calendar arithmetic: same day of month (clamped), same wall time."""
    y, m = divmod(wall.month - 1 + months, 12)
    year, month = wall.year + y, m + 1
    day = min(wall.day, calendar.monthrange(year, month)[1])
    return wall.replace(year=year, month=month, day=day)


def _day_matches(rule: Mapping[str, Any], day: date) -> bool:
    """Does the week- or day-based anchor of a monthly/yearly rule select ``day``?"""
    dim = calendar.monthrange(day.year, day.month)[1]
    return _anchor_selects(rule, day.day, WEEKDAYS[day.weekday()], dim)


def _anchor_selects(rule: Mapping[str, Any], dom: int, weekday: str, dim: int) -> bool:
    if "days" in rule:
        days = rule["days"]
        return dom in days or ("last" in days and dom == dim)
    if weekday not in rule["weekdays"]:
        return False
    for week in rule["weeks"]:
        if week == "last":
            if dom > dim - 7:
                return True
        elif (dom - 1) // 7 == ("first", "second", "third", "fourth").index(week):
            return True
    return False


def _selects(name: str, rule: Mapping[str, Any], day: date) -> bool:
    if name == "daily":
        return True
    if name == "weekly":
        return WEEKDAYS[day.weekday()] in rule["weekdays"]
    if name == "yearly" and MONTHS[day.month - 1] not in rule["months"]:
        return False
    return _day_matches(rule, day)


def _rule_end(name: str, rule: Mapping[str, Any], wall: datetime) -> datetime:
    count = rule[RETENTION_RULES[name][0]]
    if name == "daily":
        return wall + timedelta(days=count)
    if name == "weekly":
        return wall + timedelta(weeks=count)
    if name == "monthly":
        return add_months(wall, count)
    return add_months(wall, 12 * count)


def retention_decision(
    policy: Policy, taken_at: datetime, *, is_daily_last: bool = True
) -> RetentionDecision:
    """Tags, per-rule expiries, snapshot expiry and overall expiry of one RP."""
    require_aware(taken_at, "taken_at")
    tz = policy_zone(policy)
    wall = taken_at.astimezone(tz).replace(tzinfo=None)
    snapshot = resolve_local(wall + timedelta(days=policy["instant_restore_days"]), tz)
    expiries: dict[str, datetime] = {}
    if is_daily_last:
        day = slot_day(policy, taken_at)
        retention = policy["retention"]
        for name in TAGS:
            rule = retention.get(name)
            if rule is not None and _selects(name, rule, day):
                expiries[name] = resolve_local(_rule_end(name, rule, wall), tz)
    expires_at = max([snapshot, *expiries.values()])
    return RetentionDecision(tuple(expiries), expires_at, snapshot, expiries)


def tags_and_expiry(
    policy: Policy, taken_at: datetime, *, is_daily_last: bool = True
) -> tuple[list[str], datetime]:
    """GFS tags (subset of daily, weekly, monthly, yearly, in that order; empty
    for a snapshot-only RP) and the UTC expiry of a scheduled recovery point."""
    decision = retention_decision(policy, taken_at, is_daily_last=is_daily_last)
    return list(decision.tags), decision.expires_at


def expiry_for_on_demand(
    taken_at: datetime, retain_until: datetime | date, *, timezone: str = "UTC"
) -> datetime:
    """Expiry (UTC) of an on-demand backup kept until ``retain_until``.

    A ``date`` keeps the backup through that whole day in ``timezone`` (it
    expires at the start of the next local day) and may be at most 99 years
    after the local day of ``taken_at``; a ``datetime`` must be aware and at
    most 99 years after ``taken_at`` (Azure's limit for on-demand retention).
    Raises ``ValueError`` (message fit for the user) if the expiry is not
    after ``taken_at`` or is beyond that limit.
    """
    require_aware(taken_at, "taken_at")
    too_late = ValueError(f"Retain-until must be at most {ON_DEMAND_MAX_YEARS} years ahead.")
    if isinstance(retain_until, datetime):
        require_aware(retain_until, "retain_until")
        expires = retain_until.astimezone(zone("UTC"))
        if expires > add_months(taken_at.astimezone(zone("UTC")), 12 * ON_DEMAND_MAX_YEARS):
            raise too_late
    else:
        tz = zone(timezone)
        taken_day = taken_at.astimezone(tz).date()
        limit = add_months(
            datetime.combine(taken_day, datetime.min.time()), 12 * ON_DEMAND_MAX_YEARS
        )
        if retain_until > limit.date():
            raise too_late
        start_of_next = datetime.combine(retain_until + timedelta(days=1), datetime.min.time())
        expires = resolve_local(start_of_next, tz)
    if expires <= taken_at:
        raise ValueError("Retain-until must be after the backup time.")
    return expires


def _calendar_shapes() -> list[tuple[str, int, str, int]]:
    """Every (month, day of month, weekday, days in month) that exists."""
    shapes = []
    for month_index, month in enumerate(MONTHS, start=1):
        lengths = {calendar.monthrange(y, month_index)[1] for y in (2023, 2024)}
        for dim in lengths:
            for dom in range(1, dim + 1):
                for weekday in WEEKDAYS:
                    shapes.append((month, dom, weekday, dim))
    return shapes


_SHAPES = _calendar_shapes()


def _anchor_narrowed(name: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    if name == "daily":
        return False
    if name == "weekly":
        return not set(old["weekdays"]) <= set(new["weekdays"])
    for month, dom, weekday, dim in _SHAPES:
        if name == "yearly" and month not in old["months"]:
            continue
        if not _anchor_selects(old, dom, weekday, dim):
            continue
        if name == "yearly" and month not in new["months"]:
            return True
        if not _anchor_selects(new, dom, weekday, dim):
            return True
    return False


def retention_reductions(a: Policy, b: Policy, rp_times: Iterable[datetime] = ()) -> list[str]:
    """Reasons why changing policy ``a`` to ``b`` reduces retention (empty: it doesn't)."""
    reasons: list[str] = []
    ra, rb = a["retention"], b["retention"]
    for name, (count_field, unit, _, _) in RETENTION_RULES.items():
        if name not in ra:
            continue
        label = name.capitalize()
        if name not in rb:
            reasons.append(f"{label} retention is removed ({describe_rule(name, ra[name])}).")
            continue
        old, new = ra[name][count_field], rb[name][count_field]
        if new < old:
            reasons.append(f"{label} retention is shortened from {old} to {new} {unit}.")
        if _anchor_narrowed(name, ra[name], rb[name]):
            reasons.append(
                f"{label} retention no longer keeps backups of some days it kept before "
                f"({describe_rule(name, ra[name])} -> {describe_rule(name, rb[name])})."
            )
    times = list(rp_times)
    if times:
        reps_a = daily_representatives(a, times)
        reps_b = daily_representatives(b, times)
        earlier = []
        for t in sorted(set(times)):
            exp_a = retention_decision(a, t, is_daily_last=t in reps_a).expires_at
            exp_b = retention_decision(b, t, is_daily_last=t in reps_b).expires_at
            if exp_b < exp_a:
                earlier.append((t, exp_a, exp_b))
        for t, exp_a, exp_b in earlier[:_MAX_REASONS_PER_RP_CHECK]:
            reasons.append(
                f"Recovery point of {t.isoformat()} would expire {exp_b.isoformat()} "
                f"instead of {exp_a.isoformat()}."
            )
        if len(earlier) > _MAX_REASONS_PER_RP_CHECK:
            more = len(earlier) - _MAX_REASONS_PER_RP_CHECK
            reasons.append(f"... and {more} more recovery points would expire earlier.")
    return reasons


def reduces_retention(a: Policy, b: Policy, rp_times: Iterable[datetime] = ()) -> bool:
    """True if changing policy ``a`` to ``b`` reduces retention (see module doc)."""
    return bool(retention_reductions(a, b, rp_times))
