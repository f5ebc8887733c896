"""Backup policy representation: validation, canonical form and defaults.

Pure Python (no Django) so it can be used by the API, the forms, the scheduler
and the tests alike.

A policy representation looks like::

    {"name": "Nightly", "kind": "standard", "timezone": "Europe/Berlin",
     "consistency": "default",
     "schedule": {"frequency": "daily", "time": "02:00"},
     "instant_restore_days": 2,
     "retention": {"daily": {"days": 30},
                   "weekly": {"weeks": 12, "weekdays": ["sun"]},
                   "monthly": {"months": 60, "weeks": ["first"], "weekdays": ["sun"]},
                   "yearly": {"years": 10, "months": ["jan"], "days": [1, "last"]}}}

``validate_policy`` returns ``(cleaned, errors)``. ``errors`` maps a dotted field
path (``"schedule.interval_hours"``, ``"retention.weekly.weekdays"``, ``"name"``)
to a list of messages; it is empty when the input is valid. Validation never
raises on malformed input: wrong JSON types are reported against the field.
``cleaned`` is the canonical representation (only meaningful when ``errors`` is
empty) and validating it again returns it unchanged, so what a GET returns can
be PUT back as is.

Choices made here (beyond the fixed contract):

* Required: ``name``, ``schedule``, ``retention``. Defaults when omitted:
  ``kind`` "standard", ``timezone`` "UTC", ``consistency`` "default",
  ``instant_restore_days`` 2 (standard), 5 (standard with a weekly schedule),
  7 (enhanced). The canonical form always contains every top-level field.
* Values are strict and case-sensitive: ``"Sun"`` is not a weekday, ``"30"`` is
  not an integer, ``true`` is not an integer, ``30.0`` is not an integer.
* Lists (weekdays, weeks, months, days) must be non-empty; duplicates are
  dropped and the canonical order is the calendar order (mon..sun, jan..dec,
  first..last, 1..28 then "last").
* A retention rule given as ``null`` counts as absent (forms send that for a
  disabled rule). ``null`` anywhere else is a type error.
* Times are "HH:MM", 00:00-23:59, any minute (also for an hourly
  ``window_start``; Azure's portal offers whole and half hours only, the
  scheduler has no such limitation).
* A daily or hourly schedule needs a daily retention rule. A weekly schedule
  needs a weekly rule, must not have a daily rule, and every weekday named by
  its weekly, monthly or yearly rule must be one of the schedule's weekdays;
  its monthly and yearly rules must be week-based ("days" is rejected, since a
  day of the month is not guaranteed to be a backup day).
* ``instant_restore_days``: standard 1-5, and exactly 5 for a standard weekly
  schedule; enhanced 1-30 (any schedule).
* Hourly schedules and ``crash_only`` consistency need an enhanced policy.
* Time zones are the IANA names known to ``zoneinfo.available_timezones()``
  (case-sensitive), excluding the pseudo zones "Factory" and "localtime".
* ``ignore_keys`` lets the API accept read-only fields of its own
  representation (``id``, ``vault``, ...) in a PUT without reporting them as
  unknown; they are dropped from the cleaned output.
"""

from __future__ import annotations

import copy
import re
import zoneinfo
from collections.abc import Collection, Mapping
from functools import lru_cache
from typing import Any

Policy = dict[str, Any]
Errors = dict[str, list[str]]

NON_FIELD_ERRORS = "non_field_errors"

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# How pages name them (`portal.words` and the summaries below).
DAY_NAMES = dict(
    zip(
        WEEKDAYS,
        ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
        strict=True,
    )
)
MONTH_NAMES = dict(
    zip(
        MONTHS,
        (
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ),
        strict=True,
    )
)


def _names(codes: list[str], names: Mapping[str, str]) -> str:
    return ", ".join(names.get(c, c) for c in codes)


WEEK_ORDINALS = ("first", "second", "third", "fourth", "last")
KINDS = ("standard", "enhanced")
CONSISTENCIES = ("default", "crash_only")
FREQUENCIES = ("daily", "weekly", "hourly")
HOURLY_INTERVALS = (4, 6, 8, 12)
WINDOW_HOURS_RANGE = (4, 24)
NAME_MAX_LENGTH = 50

# rule -> (count field, unit word, minimum, maximum)
RETENTION_RULES: dict[str, tuple[str, str, int, int]] = {
    "daily": ("days", "days", 7, 9999),
    "weekly": ("weeks", "weeks", 1, 5163),
    "monthly": ("months", "months", 1, 1188),
    "yearly": ("years", "years", 1, 99),
}
INSTANT_RESTORE_RANGE = {"standard": (1, 5), "enhanced": (1, 30)}
WEEKLY_STANDARD_INSTANT_RESTORE_DAYS = 5
DEFAULT_INSTANT_RESTORE_DAYS = {"standard": 2, "enhanced": 7}

TOP_LEVEL_FIELDS = (
    "name",
    "kind",
    "timezone",
    "consistency",
    "schedule",
    "instant_restore_days",
    "retention",
)
SCHEDULE_FIELDS = {
    "daily": ("frequency", "time"),
    "weekly": ("frequency", "time", "weekdays"),
    "hourly": ("frequency", "interval_hours", "window_start", "window_hours"),
}
RULE_FIELDS = {
    "daily": ("days",),
    "weekly": ("weeks", "weekdays"),
    "monthly": ("months", "weeks", "weekdays", "days"),
    "yearly": ("years", "months", "weeks", "weekdays", "days"),
}

DEFAULT_POLICY: Policy = {
    "name": "DefaultPolicy",
    "kind": "standard",
    "timezone": "UTC",
    "consistency": "default",
    "schedule": {"frequency": "daily", "time": "02:00"},
    "instant_restore_days": 2,
    "retention": {"daily": {"days": 30}},
}

_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_TIME_RE = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
_ARTICLE = {"daily": "a daily", "weekly": "a weekly", "hourly": "an hourly"}
_MISSING: Any = object()


def default_policy() -> Policy:
    """A fresh (mutable) copy of ``DEFAULT_POLICY``."""
    return copy.deepcopy(DEFAULT_POLICY)


class PolicyValidationError(ValueError):
    """Raised by ``clean_policy``; ``errors`` is the dict ``validate_policy`` returns."""

    def __init__(self, errors: Errors) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in sorted(errors.items())))
        self.errors = errors


def merge_patch(current: Mapping[str, Any], patch: Mapping[str, Any]) -> Policy:
    """PATCH semantics: top-level keys of ``patch`` replace those of ``current``.

    ``schedule`` and ``retention`` are replaced whole, not merged key by key
    (a partial schedule would rarely make sense on its own). Nothing is
    validated here; pass the result to ``validate_policy``.
    """
    return {**copy.deepcopy(dict(current)), **copy.deepcopy(dict(patch))}


def clean_policy(
    data: Any,
    *,
    partial_base: Mapping[str, Any] | None = None,
    ignore_keys: Collection[str] = (),
) -> Policy:
    """Like ``validate_policy`` but returns the cleaned policy or raises
    ``PolicyValidationError``."""
    cleaned, errors = validate_policy(data, partial_base=partial_base, ignore_keys=ignore_keys)
    if errors:
        raise PolicyValidationError(errors)
    return cleaned


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones() - {"Factory", "localtime"})


def is_valid_timezone(name: object) -> bool:
    return isinstance(name, str) and name in _known_zones()


def parse_hhmm(value: str) -> tuple[int, int]:
    """``"02:30"`` -> ``(2, 30)``; the value must already be valid."""
    hours, minutes = value.split(":")
    return int(hours), int(minutes)


class _Validator:
    def __init__(self) -> None:
        self.errors: Errors = {}

    def err(self, path: str, message: str) -> None:
        self.errors.setdefault(path, []).append(message)

    # -- scalar helpers -------------------------------------------------

    def integer(self, value: Any, path: str, lo: int, hi: int, unit: str) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.err(path, "Must be an integer.")
            return None
        if not lo <= value <= hi:
            self.err(path, f"Must be between {lo} and {hi} {unit}.")
            return None
        return int(value)

    def choice(self, value: Any, path: str, choices: tuple[str, ...]) -> str | None:
        if not isinstance(value, str) or value not in choices:
            self.err(path, f"Must be one of: {', '.join(choices)}.")
            return None
        return value

    def time(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str):
            self.err(path, 'Must be a string with a time as "HH:MM".')
            return None
        if not _TIME_RE.fullmatch(value):
            self.err(path, 'Must be a time as "HH:MM" between 00:00 and 23:59.')
            return None
        return value

    def names(self, value: Any, path: str, choices: tuple[str, ...], what: str) -> list[str] | None:
        if not isinstance(value, list):
            self.err(path, f"Must be a list of {what}s.")
            return None
        if not value:
            self.err(path, f"Choose at least one {what}.")
            return None
        bad = [v for v in value if not isinstance(v, str) or v not in choices]
        if bad:
            shown = ", ".join(f'"{v}"' if isinstance(v, str) else repr(v) for v in bad)
            self.err(path, f"Unknown {what} {shown}; use {', '.join(choices)}.")
            return None
        return [c for c in choices if c in value]

    def days_of_month(self, value: Any, path: str) -> list[int | str] | None:
        if not isinstance(value, list):
            self.err(path, 'Must be a list of days of the month (1-28 or "last").')
            return None
        if not value:
            self.err(path, "Choose at least one day of the month.")
            return None
        ints: set[int] = set()
        last = False
        for v in value:
            if v == "last" and isinstance(v, str):
                last = True
            elif isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 28:
                ints.add(v)
            else:
                self.err(path, f'Days must be whole numbers 1-28 or "last"; got {v!r}.')
                return None
        out: list[int | str] = sorted(ints)
        if last:
            out.append("last")
        return out

    def unknown_keys(self, value: Mapping[str, Any], prefix: str, known: Collection[str]) -> None:
        for key in value:
            if key not in known:
                self.err(f"{prefix}{key}", "Unknown field.")

    # -- top-level fields -----------------------------------------------

    def policy_name(self, value: Any) -> str | None:
        if value is _MISSING:
            self.err("name", "This field is required.")
        elif not isinstance(value, str):
            self.err("name", "Must be a string.")
        elif not 1 <= len(value) <= NAME_MAX_LENGTH:
            self.err("name", f"Must be 1 to {NAME_MAX_LENGTH} characters long.")
        elif not _NAME_RE.fullmatch(value):
            self.err(
                "name",
                "Must start with a letter and contain only letters, digits, '-' and '_'.",
            )
        else:
            return value
        return None

    def timezone(self, value: Any) -> str | None:
        if not isinstance(value, str):
            self.err("timezone", "Must be a string.")
        elif not is_valid_timezone(value):
            self.err("timezone", 'Must be a valid IANA time zone such as "Europe/Berlin" or "UTC".')
        else:
            return value
        return None

    def instant_restore_days(
        self, data: Mapping[str, Any], kind: str | None, freq: str | None
    ) -> int | None:
        """The days given, within the kind's range (fixed for a standard weekly policy), or
        the default when none are given; None when invalid or the kind is unknown."""
        weekly_standard = kind == "standard" and freq == "weekly"
        if "instant_restore_days" not in data:
            if kind is None:
                return None
            if weekly_standard:
                return WEEKLY_STANDARD_INSTANT_RESTORE_DAYS
            return DEFAULT_INSTANT_RESTORE_DAYS[kind]
        days = data["instant_restore_days"]
        if isinstance(days, bool) or not isinstance(days, int):
            self.err("instant_restore_days", "Must be an integer.")
        elif weekly_standard:
            if days == WEEKLY_STANDARD_INSTANT_RESTORE_DAYS:
                return days
            self.err(
                "instant_restore_days",
                f"Must be {WEEKLY_STANDARD_INSTANT_RESTORE_DAYS} for a weekly schedule.",
            )
        elif kind is not None:
            lo, hi = INSTANT_RESTORE_RANGE[kind]
            if lo <= days <= hi:
                return days
            self.err(
                "instant_restore_days",
                f"Must be between {lo} and {hi} days for {kind} policies.",
            )
        return None

    # -- sections -------------------------------------------------------

    def schedule(self, value: Any, kind: str | None) -> Policy | None:
        if not isinstance(value, Mapping):
            self.err("schedule", "Must be an object.")
            return None
        freq = value.get("frequency", _MISSING)
        if freq is _MISSING:
            self.err("schedule.frequency", "This field is required.")
            freq = None
        else:
            freq = self.choice(freq, "schedule.frequency", FREQUENCIES)
        known = {f for fields in SCHEDULE_FIELDS.values() for f in fields}
        for key in value:
            if key not in known:
                self.err(f"schedule.{key}", "Unknown field.")
            elif freq is not None and key not in SCHEDULE_FIELDS[freq]:
                self.err(f"schedule.{key}", f"Not allowed for {_ARTICLE[freq]} schedule.")
        if freq is None:
            return None
        out: Policy = {"frequency": freq}
        ok = True
        for field in SCHEDULE_FIELDS[freq][1:]:
            path = f"schedule.{field}"
            if field not in value:
                self.err(path, f"Required for {_ARTICLE[freq]} schedule.")
                ok = False
                continue
            raw = value[field]
            cleaned: Any
            if field in ("time", "window_start"):
                cleaned = self.time(raw, path)
            elif field == "weekdays":
                cleaned = self.names(raw, path, WEEKDAYS, "weekday")
            elif field == "interval_hours":
                if isinstance(raw, bool) or not isinstance(raw, int):
                    self.err(path, "Must be an integer.")
                    cleaned = None
                elif raw not in HOURLY_INTERVALS:
                    self.err(path, "Must be one of 4, 6, 8 or 12 hours.")
                    cleaned = None
                else:
                    cleaned = raw
            else:  # window_hours
                cleaned = self.integer(raw, path, *WINDOW_HOURS_RANGE, "hours")
            if cleaned is None:
                ok = False
            else:
                out[field] = cleaned
        if freq == "hourly":
            if kind == "standard":
                self.err(
                    "schedule.frequency",
                    "Hourly schedules are only available for enhanced policies.",
                )
                ok = False
            if "interval_hours" in out and "window_hours" in out:
                if out["window_hours"] % out["interval_hours"]:
                    self.err(
                        "schedule.window_hours",
                        f"Must be a multiple of interval_hours ({out['interval_hours']}).",
                    )
                    ok = False
        return out if ok else None

    def rule(self, name: str, value: Any) -> Policy | None:
        prefix = f"retention.{name}"
        if not isinstance(value, Mapping):
            self.err(prefix, "Must be an object.")
            return None
        self.unknown_keys(value, prefix + ".", RULE_FIELDS[name])
        count_field, unit, lo, hi = RETENTION_RULES[name]
        out: Policy = {}
        ok = True
        if count_field not in value:
            self.err(f"{prefix}.{count_field}", "This field is required.")
            ok = False
        else:
            count = self.integer(value[count_field], f"{prefix}.{count_field}", lo, hi, unit)
            if count is None:
                ok = False
            else:
                out[count_field] = count
        if name == "weekly":
            if "weekdays" not in value:
                self.err(f"{prefix}.weekdays", "This field is required.")
                return None
            weekdays = self.names(value["weekdays"], f"{prefix}.weekdays", WEEKDAYS, "weekday")
            if weekdays is None:
                return None
            out["weekdays"] = weekdays
            return out if ok else None
        if name == "yearly":
            if "months" not in value:
                self.err(f"{prefix}.months", "This field is required.")
                ok = False
            else:
                months = self.names(value["months"], f"{prefix}.months", MONTHS, "month")
                if months is None:
                    ok = False
                else:
                    out["months"] = months
        if name in ("monthly", "yearly"):
            week_based = "weeks" in value or "weekdays" in value
            day_based = "days" in value
            if week_based and day_based:
                self.err(prefix, "Use either weeks with weekdays, or days, not both.")
                return None
            if not week_based and not day_based:
                self.err(prefix, "Give either weeks with weekdays, or days.")
                return None
            if day_based:
                days = self.days_of_month(value["days"], f"{prefix}.days")
                if days is None:
                    return None
                out["days"] = days
            else:
                for field, choices, what in (
                    ("weeks", WEEK_ORDINALS, "week"),
                    ("weekdays", WEEKDAYS, "weekday"),
                ):
                    if field not in value:
                        self.err(f"{prefix}.{field}", "Required with week-based retention.")
                        ok = False
                        continue
                    names = self.names(value[field], f"{prefix}.{field}", choices, what)
                    if names is None:
                        ok = False
                    else:
                        out[field] = names
        return out if ok else None

    def retention(self, value: Any) -> tuple[Policy | None, set[str]]:
        """Returns (cleaned rules or None if any rule is invalid, names of present rules)."""
        if not isinstance(value, Mapping):
            self.err("retention", "Must be an object.")
            return None, set()
        self.unknown_keys(value, "retention.", RETENTION_RULES)
        present = {k for k in RETENTION_RULES if value.get(k) is not None}
        if not present:
            self.err("retention", "At least one retention rule is required.")
        out: Policy = {}
        ok = True
        for name in RETENTION_RULES:
            if name in present:
                rule = self.rule(name, value[name])
                if rule is None:
                    ok = False
                else:
                    out[name] = rule
        return (out if ok else None), present

    def cross_checks(self, schedule: Policy, retention: Policy, present: set[str]) -> None:
        freq = schedule["frequency"]
        if freq in ("daily", "hourly"):
            if "daily" not in present:
                self.err("retention.daily", f"Required for {_ARTICLE[freq]} schedule.")
            return
        # weekly schedule
        if "daily" in present:
            self.err("retention.daily", "Not allowed for a weekly schedule.")
        if "weekly" not in present:
            self.err("retention.weekly", "Required for a weekly schedule.")
        allowed = set(schedule.get("weekdays", ()))
        if not allowed:
            return
        shown = ", ".join(schedule["weekdays"])
        for name in ("weekly", "monthly", "yearly"):
            rule = retention.get(name)
            if rule is None:
                continue
            if "days" in rule:
                self.err(
                    f"retention.{name}.days",
                    "Not allowed for a weekly schedule; use weeks with weekdays.",
                )
            elif not set(rule.get("weekdays", ())) <= allowed:
                self.err(
                    f"retention.{name}.weekdays",
                    f"Must be among the schedule's weekdays ({shown}).",
                )


def validate_policy(
    data: Any,
    *,
    partial_base: Mapping[str, Any] | None = None,
    ignore_keys: Collection[str] = (),
) -> tuple[Policy, Errors]:
    """Validate a policy representation.

    Returns ``(cleaned, errors)``; ``errors`` is ``{}`` when valid. With
    ``partial_base`` (the current canonical policy), ``data`` is a PATCH body
    merged with ``merge_patch`` before validation. Keys in ``ignore_keys`` are
    accepted and dropped. Never raises for bad input.
    """
    v = _Validator()
    if not isinstance(data, Mapping):
        return {}, {NON_FIELD_ERRORS: ["Must be a JSON object."]}
    if partial_base is not None:
        data = merge_patch(partial_base, data)
    for key in data:
        if key not in TOP_LEVEL_FIELDS and key not in ignore_keys:
            v.err(str(key), "Unknown field.")

    out: Policy = {}

    name = v.policy_name(data.get("name", _MISSING))
    if name is not None:
        out["name"] = name

    kind = v.choice(data.get("kind", "standard"), "kind", KINDS)
    if kind is not None:
        out["kind"] = kind

    tz = v.timezone(data.get("timezone", "UTC"))
    if tz is not None:
        out["timezone"] = tz

    consistency = v.choice(data.get("consistency", "default"), "consistency", CONSISTENCIES)
    if consistency == "crash_only" and kind == "standard":
        v.err("consistency", "crash_only is only available for enhanced policies.")
    elif consistency is not None:
        out["consistency"] = consistency

    schedule = None
    if "schedule" not in data:
        v.err("schedule", "This field is required.")
    else:
        schedule = v.schedule(data["schedule"], kind)
    freq = schedule["frequency"] if schedule else None

    days = v.instant_restore_days(data, kind, freq)
    if days is not None:
        out["instant_restore_days"] = days

    retention: Policy | None = None
    present: set[str] = set()
    if "retention" not in data:
        v.err("retention", "This field is required.")
    else:
        retention, present = v.retention(data["retention"])

    if schedule is not None:
        out["schedule"] = schedule
        v.cross_checks(schedule, retention or {}, present)
    if retention is not None:
        out["retention"] = retention

    ordered = {k: out[k] for k in TOP_LEVEL_FIELDS if k in out}
    return ordered, v.errors


# -- summaries ----------------------------------------------------------------


def describe_rule(name: str, rule: Mapping[str, Any]) -> str:
    """Human text for one retention rule, e.g. "monthly: 60 months (first sun)"."""
    count_field, unit, _, _ = RETENTION_RULES[name]
    count = rule[count_field]
    text = f"{name}: {count} {unit[:-1] if count == 1 else unit}"
    anchors = []
    if name == "weekly":
        anchors.append(_names(rule["weekdays"], DAY_NAMES))
    elif name in ("monthly", "yearly"):
        if name == "yearly":
            anchors.append(_names(rule["months"], MONTH_NAMES))
        if "days" in rule:
            anchors.append("day " + ", ".join(str(d) for d in rule["days"]))
        else:
            days = "/".join(DAY_NAMES.get(d, d) for d in rule["weekdays"])
            anchors.append(f"{'/'.join(rule['weeks'])} {days}")
    if anchors:
        text += f" ({'; '.join(anchors)})"
    return text


def retention_summary(policy: Mapping[str, Any]) -> str:
    """One line, e.g. "daily: 30 days; weekly: 12 weeks (sun)"."""
    retention = policy.get("retention", {})
    return "; ".join(describe_rule(n, retention[n]) for n in RETENTION_RULES if n in retention)


def retention_days_summary(policy: Mapping[str, Any]) -> dict[str, int]:
    """Upper bound, in days, of how long each present rule keeps a recovery point
    (months count as 31 days, years as 366), plus ``"instant_restore"``.
    Useful for display and for sorting policies by retention."""
    per_unit = {"daily": 1, "weekly": 7, "monthly": 31, "yearly": 366}
    out = {"instant_restore": int(policy["instant_restore_days"])}
    retention = policy.get("retention", {})
    for name, (count_field, _, _, _) in RETENTION_RULES.items():
        if name in retention:
            out[name] = retention[name][count_field] * per_unit[name]
    return out
