"""Hypothesis strategies for valid policy representations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from policies.spec import HOURLY_INTERVALS, MONTHS, WEEK_ORDINALS, WEEKDAYS

# Zones with awkward transitions: 30-minute DST (Lord_Howe), DST at midnight
# (Santiago), Ramadan DST (Casablanca), odd offsets (Kathmandu, St_Johns).
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Africa/Casablanca",
    "Asia/Kathmandu",
    "America/St_Johns",
    "Asia/Kolkata",
)

hhmm = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))

# 2012 onwards: skips Pacific/Apia-style lost calendar days (none in ZONES
# anyway) and keeps the arithmetic far from datetime's limits.
instants = st.datetimes(
    min_value=datetime(2012, 1, 1), max_value=datetime(2037, 12, 31), timezones=st.just(UTC)
)


def subsets(items: tuple[str, ...] | list[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(items), min_size=1, max_size=len(items), unique=True)


@st.composite
def anchors(draw: st.DrawFn, weekdays: list[str] | None) -> dict[str, Any]:
    """Week- or day-based anchor; week-based only when weekdays are restricted."""
    if weekdays is None and draw(st.booleans()):
        days = draw(
            st.lists(
                st.one_of(st.integers(1, 28), st.just("last")), min_size=1, max_size=5, unique=True
            )
        )
        return {"days": days}
    return {
        "weeks": draw(subsets(WEEK_ORDINALS)),
        "weekdays": draw(subsets(weekdays or list(WEEKDAYS))),
    }


@st.composite
def policies(draw: st.DrawFn, frequencies: tuple[str, ...] = ("daily", "weekly", "hourly")):
    freq = draw(st.sampled_from(frequencies))
    kind = "enhanced" if freq == "hourly" else draw(st.sampled_from(("standard", "enhanced")))
    schedule: dict[str, Any]
    restricted: list[str] | None = None
    if freq == "daily":
        schedule = {"frequency": "daily", "time": draw(hhmm)}
    elif freq == "weekly":
        restricted = draw(subsets(WEEKDAYS))
        schedule = {"frequency": "weekly", "time": draw(hhmm), "weekdays": restricted}
    else:
        interval = draw(st.sampled_from(HOURLY_INTERVALS))
        multiples = [k * interval for k in range(1, 24 // interval + 1) if k * interval >= 4]
        schedule = {
            "frequency": "hourly",
            "interval_hours": interval,
            "window_start": draw(hhmm),
            "window_hours": draw(st.sampled_from(multiples)),
        }
    if kind == "standard":
        ir = 5 if freq == "weekly" else draw(st.integers(1, 5))
    else:
        ir = draw(st.integers(1, 30))
    retention: dict[str, Any] = {}
    if freq != "weekly":
        retention["daily"] = {"days": draw(st.integers(7, 9999))}
    if freq == "weekly" or draw(st.booleans()):
        retention["weekly"] = {
            "weeks": draw(st.integers(1, 5163)),
            "weekdays": draw(subsets(restricted or list(WEEKDAYS))),
        }
    if draw(st.booleans()):
        retention["monthly"] = {"months": draw(st.integers(1, 1188)), **draw(anchors(restricted))}
    if draw(st.booleans()):
        retention["yearly"] = {
            "years": draw(st.integers(1, 99)),
            "months": draw(subsets(MONTHS)),
            **draw(anchors(restricted)),
        }
    return {
        "name": draw(st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,49}", fullmatch=True)),
        "kind": kind,
        "timezone": draw(st.sampled_from(ZONES)),
        "consistency": draw(st.sampled_from(("default", "crash_only")))
        if kind == "enhanced"
        else "default",
        "schedule": schedule,
        "instant_restore_days": ir,
        "retention": retention,
    }
