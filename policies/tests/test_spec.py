from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.spec import (
    DEFAULT_POLICY,
    NON_FIELD_ERRORS,
    PolicyValidationError,
    clean_policy,
    default_policy,
    merge_patch,
    retention_days_summary,
    retention_summary,
    validate_policy,
)
from policies.tests.examples import EVERY4H, NIGHTLY
from policies.tests.strategies import policies

WEEKLY: dict[str, Any] = {
    "name": "Weekly",
    "kind": "standard",
    "timezone": "UTC",
    "consistency": "default",
    "schedule": {"frequency": "weekly", "time": "22:30", "weekdays": ["wed", "sun"]},
    "instant_restore_days": 5,
    "retention": {
        "weekly": {"weeks": 12, "weekdays": ["sun"]},
        "monthly": {"months": 12, "weeks": ["last"], "weekdays": ["wed"]},
    },
}


def with_(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Copy of base with the dotted path set (or deleted when value is DELETE)."""
    data = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node[p]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return data


DELETE = object()


def errors_of(data: Any, **kw: Any) -> dict[str, list[str]]:
    return validate_policy(data, **kw)[1]


def assert_only_error(data: Any, path: str, contains: str = "") -> None:
    errors = errors_of(data)
    assert list(errors) == [path], errors
    assert contains in " ".join(errors[path]), errors


def assert_valid(data: Any) -> dict[str, Any]:
    cleaned, errors = validate_policy(data)
    assert errors == {}
    return cleaned


# -- canonical examples ---------------------------------------------------------


@pytest.mark.parametrize("policy", [NIGHTLY, EVERY4H, WEEKLY, DEFAULT_POLICY])
def test_examples_are_canonical(policy: dict[str, Any]) -> None:
    assert validate_policy(policy) == (policy, {})


def test_default_policy() -> None:
    assert DEFAULT_POLICY == {
        "name": "DefaultPolicy",
        "kind": "standard",
        "timezone": "UTC",
        "consistency": "default",
        "schedule": {"frequency": "daily", "time": "02:00"},
        "instant_restore_days": 2,
        "retention": {"daily": {"days": 30}},
    }
    fresh = default_policy()
    fresh["retention"]["daily"]["days"] = 99
    assert DEFAULT_POLICY["retention"]["daily"]["days"] == 30


def test_defaults_filled_in() -> None:
    minimal = {
        "name": "Min",
        "schedule": {"frequency": "daily", "time": "02:00"},
        "retention": {"daily": {"days": 30}},
    }
    cleaned = assert_valid(minimal)
    assert cleaned["kind"] == "standard"
    assert cleaned["timezone"] == "UTC"
    assert cleaned["consistency"] == "default"
    assert cleaned["instant_restore_days"] == 2
    assert list(cleaned) == [
        "name",
        "kind",
        "timezone",
        "consistency",
        "schedule",
        "instant_restore_days",
        "retention",
    ]
    weekly = {**minimal, "schedule": WEEKLY["schedule"], "retention": WEEKLY["retention"]}
    assert assert_valid(weekly)["instant_restore_days"] == 5
    enhanced = {**minimal, "kind": "enhanced"}
    assert assert_valid(enhanced)["instant_restore_days"] == 7


def test_lists_are_deduplicated_and_sorted() -> None:
    data = with_(NIGHTLY, "retention.weekly.weekdays", ["sun", "mon", "sun"])
    data = with_(data, "retention.yearly.days", ["last", 15, 1, 15])
    data = with_(data, "retention.yearly.months", ["dec", "jan"])
    data = with_(data, "retention.monthly.weeks", ["last", "first"])
    cleaned = assert_valid(data)
    assert cleaned["retention"]["weekly"]["weekdays"] == ["mon", "sun"]
    assert cleaned["retention"]["yearly"]["days"] == [1, 15, "last"]
    assert cleaned["retention"]["yearly"]["months"] == ["jan", "dec"]
    assert cleaned["retention"]["monthly"]["weeks"] == ["first", "last"]
    assert validate_policy(cleaned) == (cleaned, {})


def test_null_rule_is_absent() -> None:
    data = with_(NIGHTLY, "retention.yearly", None)
    cleaned = assert_valid(data)
    assert "yearly" not in cleaned["retention"]


# -- ranges: both edges ---------------------------------------------------------


@pytest.mark.parametrize(
    "path,value,ok",
    [
        ("retention.daily.days", 6, False),
        ("retention.daily.days", 7, True),
        ("retention.daily.days", 9999, True),
        ("retention.daily.days", 10000, False),
        ("retention.weekly.weeks", 0, False),
        ("retention.weekly.weeks", 1, True),
        ("retention.weekly.weeks", 5163, True),
        ("retention.weekly.weeks", 5164, False),
        ("retention.monthly.months", 0, False),
        ("retention.monthly.months", 1, True),
        ("retention.monthly.months", 1188, True),
        ("retention.monthly.months", 1189, False),
        ("retention.yearly.years", 0, False),
        ("retention.yearly.years", 1, True),
        ("retention.yearly.years", 99, True),
        ("retention.yearly.years", 100, False),
    ],
)
def test_retention_ranges(path: str, value: int, ok: bool) -> None:
    data = with_(NIGHTLY, path, value)
    if ok:
        assert_valid(data)
    else:
        assert_only_error(data, path, "Must be between")


def test_range_message() -> None:
    assert errors_of(with_(NIGHTLY, "retention.daily.days", 6)) == {
        "retention.daily.days": ["Must be between 7 and 9999 days."]
    }


@pytest.mark.parametrize("value,ok", [(0, False), (1, True), (5, True), (6, False), (-1, False)])
def test_instant_restore_standard(value: int, ok: bool) -> None:
    data = with_(NIGHTLY, "instant_restore_days", value)
    if ok:
        assert_valid(data)
    else:
        assert_only_error(data, "instant_restore_days", "between 1 and 5")


@pytest.mark.parametrize("value,ok", [(0, False), (1, True), (30, True), (31, False)])
def test_instant_restore_enhanced(value: int, ok: bool) -> None:
    data = with_(EVERY4H, "instant_restore_days", value)
    if ok:
        assert_valid(data)
    else:
        assert_only_error(data, "instant_restore_days", "between 1 and 30")


@pytest.mark.parametrize("value,ok", [(1, False), (4, False), (5, True), (6, False)])
def test_instant_restore_weekly_standard_needs_exactly_five(value: int, ok: bool) -> None:
    data = with_(WEEKLY, "instant_restore_days", value)
    if ok:
        assert_valid(data)
    else:
        assert_only_error(data, "instant_restore_days", "Must be 5 for a weekly schedule")


def test_instant_restore_weekly_enhanced_range() -> None:
    data = {**WEEKLY, "kind": "enhanced", "instant_restore_days": 20}
    assert_valid(data)


@pytest.mark.parametrize(
    "value,ok", [(3, False), (4, True), (6, True), (8, True), (12, True), (5, False), (24, False)]
)
def test_interval_hours(value: int, ok: bool) -> None:
    data = with_(EVERY4H, "schedule.interval_hours", value)
    if ok:
        assert_valid(data)
    else:
        assert_only_error(data, "schedule.interval_hours", "4, 6, 8 or 12")


@pytest.mark.parametrize(
    "window,interval,ok,message",
    [
        (3, 4, False, "between 4 and 24"),
        (4, 4, True, ""),
        (24, 4, True, ""),
        (25, 4, False, "between 4 and 24"),
        (10, 4, False, "multiple of interval_hours (4)"),
        (18, 12, False, "multiple of interval_hours (12)"),
        (12, 12, True, ""),
        (4, 8, False, "multiple"),
        (18, 6, True, ""),
    ],
)
def test_window_hours(window: int, interval: int, ok: bool, message: str) -> None:
    data = with_(EVERY4H, "schedule.window_hours", window)
    data = with_(data, "schedule.interval_hours", interval)
    if ok:
        assert_valid(data)
    else:
        assert_only_error(data, "schedule.window_hours", message)


# -- schedule shape -----------------------------------------------------------------


def test_weekdays_on_daily_schedule_rejected() -> None:
    data = with_(NIGHTLY, "schedule.weekdays", ["mon"])
    assert errors_of(data) == {"schedule.weekdays": ["Not allowed for a daily schedule."]}


def test_hourly_fields_on_weekly_rejected() -> None:
    data = with_(WEEKLY, "schedule.interval_hours", 4)
    assert errors_of(data) == {"schedule.interval_hours": ["Not allowed for a weekly schedule."]}


def test_time_on_hourly_rejected() -> None:
    data = with_(EVERY4H, "schedule.time", "02:00")
    assert errors_of(data) == {"schedule.time": ["Not allowed for an hourly schedule."]}


def test_hourly_on_standard_rejected() -> None:
    data = {**EVERY4H, "kind": "standard", "consistency": "default", "instant_restore_days": 2}
    assert_only_error(data, "schedule.frequency", "enhanced")


def test_crash_only_on_standard_rejected() -> None:
    data = {**NIGHTLY, "consistency": "crash_only"}
    assert_only_error(data, "consistency", "enhanced")


def test_crash_only_on_enhanced_daily_ok() -> None:
    assert_valid({**NIGHTLY, "kind": "enhanced", "consistency": "crash_only"})


@pytest.mark.parametrize(
    "path",
    ["schedule.time", "schedule.frequency"],
)
def test_schedule_required_fields(path: str) -> None:
    errors = errors_of(with_(NIGHTLY, path, DELETE))
    assert path in errors


def test_weekly_schedule_needs_weekdays() -> None:
    assert_only_error(with_(WEEKLY, "schedule.weekdays", DELETE), "schedule.weekdays", "Required")
    assert_only_error(with_(WEEKLY, "schedule.weekdays", []), "schedule.weekdays", "at least one")


def test_hourly_requires_all_fields() -> None:
    for field in ("interval_hours", "window_start", "window_hours"):
        assert_only_error(
            with_(EVERY4H, f"schedule.{field}", DELETE), f"schedule.{field}", "Required"
        )


@pytest.mark.parametrize(
    "value,ok",
    [
        ("00:00", True),
        ("23:59", True),
        ("02:30", True),
        ("02:17", True),
        ("24:00", False),
        ("2:00", False),
        ("02:60", False),
        ("02:00:00", False),
        ("", False),
        (" 02:00", False),
    ],
)
def test_times(value: str, ok: bool) -> None:
    for base, path in ((NIGHTLY, "schedule.time"), (EVERY4H, "schedule.window_start")):
        data = with_(base, path, value)
        if ok:
            assert_valid(data)
        else:
            assert_only_error(data, path, "HH:MM")


def test_unknown_frequency() -> None:
    assert_only_error(with_(NIGHTLY, "schedule.frequency", "monthly"), "schedule.frequency")


# -- retention shape / cross-field rules ------------------------------------------


def test_daily_schedule_needs_daily_rule() -> None:
    data = with_(NIGHTLY, "retention.daily", DELETE)
    assert errors_of(data) == {"retention.daily": ["Required for a daily schedule."]}


def test_hourly_schedule_needs_daily_rule() -> None:
    data = with_(EVERY4H, "retention", {"weekly": {"weeks": 4, "weekdays": ["sun"]}})
    assert errors_of(data) == {"retention.daily": ["Required for an hourly schedule."]}


def test_weekly_schedule_rejects_daily_rule() -> None:
    data = with_(WEEKLY, "retention.daily", {"days": 30})
    assert errors_of(data) == {"retention.daily": ["Not allowed for a weekly schedule."]}


def test_weekly_schedule_needs_weekly_rule() -> None:
    data = with_(WEEKLY, "retention.weekly", DELETE)
    assert_only_error(data, "retention.weekly", "Required for a weekly schedule")


def test_weekly_retention_weekdays_among_schedule() -> None:
    data = with_(WEEKLY, "retention.weekly.weekdays", ["sun", "mon"])
    assert_only_error(data, "retention.weekly.weekdays", "schedule's weekdays (wed, sun)")
    data = with_(WEEKLY, "retention.monthly.weekdays", ["fri"])
    assert_only_error(data, "retention.monthly.weekdays", "schedule's weekdays")


def test_weekly_schedule_rejects_day_based_monthly() -> None:
    data = with_(WEEKLY, "retention.monthly", {"months": 12, "days": [1]})
    assert_only_error(data, "retention.monthly.days", "weekly schedule")


def test_weekly_rule_needs_weekdays() -> None:
    data = with_(NIGHTLY, "retention.weekly", {"weeks": 4})
    assert_only_error(data, "retention.weekly.weekdays", "required")


def test_retention_needs_a_rule() -> None:
    errors = errors_of(with_(NIGHTLY, "retention", {}))
    assert errors["retention"] == ["At least one retention rule is required."]


@pytest.mark.parametrize("rule", ["monthly", "yearly"])
def test_anchor_both_or_neither(rule: str) -> None:
    base = NIGHTLY["retention"][rule]
    both = {**base, "weeks": ["first"], "weekdays": ["sun"], "days": [1]}
    assert_only_error(with_(NIGHTLY, f"retention.{rule}", both), f"retention.{rule}", "not both")
    neither = {k: v for k, v in base.items() if k not in ("weeks", "weekdays", "days")}
    assert_only_error(with_(NIGHTLY, f"retention.{rule}", neither), f"retention.{rule}", "either")


def test_week_based_needs_both_parts() -> None:
    data = with_(NIGHTLY, "retention.monthly", {"months": 6, "weeks": ["first"]})
    assert_only_error(data, "retention.monthly.weekdays", "Required")
    data = with_(NIGHTLY, "retention.monthly", {"months": 6, "weekdays": ["sun"]})
    assert_only_error(data, "retention.monthly.weeks", "Required")


@pytest.mark.parametrize(
    "days,ok",
    [
        ([1], True),
        ([28], True),
        (["last"], True),
        ([0], False),
        ([29], False),
        (["first"], False),
        ([True], False),
        (["1"], False),
        ([1.0], False),
        ([], False),
        ("last", False),
    ],
)
def test_days_of_month(days: Any, ok: bool) -> None:
    data = with_(NIGHTLY, "retention.monthly", {"months": 6, "days": days})
    if ok:
        assert_valid(data)
    else:
        assert_only_error(data, "retention.monthly.days")


def test_yearly_needs_months() -> None:
    data = with_(NIGHTLY, "retention.yearly.months", DELETE)
    assert_only_error(data, "retention.yearly.months", "required")
    data = with_(NIGHTLY, "retention.yearly.months", ["January"])
    assert_only_error(data, "retention.yearly.months", 'Unknown month "January"')


# -- wrong types ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,value",
    [
        ("name", 5),
        ("name", None),
        ("kind", ["standard"]),
        ("timezone", 1),
        ("consistency", True),
        ("schedule", ["daily"]),
        ("schedule", "daily"),
        ("schedule.time", 200),
        ("schedule.frequency", None),
        ("instant_restore_days", "2"),
        ("instant_restore_days", True),
        ("instant_restore_days", 2.0),
        ("instant_restore_days", None),
        ("retention", []),
        ("retention.daily", 30),
        ("retention.daily", []),
        ("retention.daily.days", "30"),
        ("retention.daily.days", True),
        ("retention.daily.days", 30.0),
        ("retention.daily.days", [30]),
        ("retention.weekly.weekdays", "sun"),
        ("retention.weekly.weekdays", {"sun": True}),
        ("retention.weekly.weekdays", [1]),
        ("retention.weekly.weeks", False),
        ("retention.monthly.weeks", "first"),
        ("retention.yearly.months", None),
    ],
)
def test_wrong_types_name_the_field(path: str, value: Any) -> None:
    cleaned, errors = validate_policy(with_(NIGHTLY, path, value))
    assert path in errors, errors
    assert all(isinstance(m, str) and m for msgs in errors.values() for m in msgs)


def test_wrong_types_hourly() -> None:
    for path, value in (
        ("schedule.interval_hours", "4"),
        ("schedule.interval_hours", True),
        ("schedule.window_hours", "24"),
        ("schedule.window_start", 8),
    ):
        assert path in errors_of(with_(EVERY4H, path, value))


def test_not_an_object() -> None:
    for data in (None, [], "policy", 3):
        assert validate_policy(data) == ({}, {NON_FIELD_ERRORS: ["Must be a JSON object."]})


# -- unknown fields -----------------------------------------------------------------


def test_unknown_fields_named() -> None:
    data = copy.deepcopy(NIGHTLY)
    data["colour"] = "red"
    data["schedule"]["every"] = 2
    data["retention"]["hourly"] = {"hours": 4}
    data["retention"]["daily"]["weeks"] = 2
    assert errors_of(data) == {
        "colour": ["Unknown field."],
        "schedule.every": ["Unknown field."],
        "retention.hourly": ["Unknown field."],
        "retention.daily.weeks": ["Unknown field."],
    }


def test_ignore_keys_for_read_only_fields() -> None:
    data = {**NIGHTLY, "id": 7, "vault": "v1"}
    assert validate_policy(data, ignore_keys={"id", "vault"}) == (NIGHTLY, {})
    assert set(errors_of(data)) == {"id", "vault"}


# -- names and time zones ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name,ok",
    [
        ("a", True),
        ("Nightly-2_b", True),
        ("A" * 50, True),
        ("A" * 51, False),
        ("", False),
        ("1abc", False),
        ("-abc", False),
        ("_abc", False),
        ("a b", False),
        ("a.b", False),
        ("Zürich", False),
        ("abc\n", False),
    ],
)
def test_names(name: str, ok: bool) -> None:
    data = {**NIGHTLY, "name": name}
    if ok:
        assert_valid(data)
    else:
        assert_only_error(data, "name")


def test_name_required() -> None:
    assert_only_error(with_(NIGHTLY, "name", DELETE), "name", "required")


@pytest.mark.parametrize(
    "tz,ok",
    [
        ("UTC", True),
        ("America/New_York", True),
        ("Asia/Kathmandu", True),
        ("utc", False),
        ("Europe/Nowhere", False),
        ("../etc/passwd", False),
        ("", False),
        ("+02:00", False),
    ],
)
def test_timezones(tz: str, ok: bool) -> None:
    data = {**NIGHTLY, "timezone": tz}
    if ok:
        assert_valid(data)
    else:
        assert_only_error(data, "timezone", "IANA")


# -- PATCH, helpers -----------------------------------------------------------------------


def test_merge_patch_replaces_sections_whole() -> None:
    merged = merge_patch(NIGHTLY, {"schedule": {"frequency": "daily", "time": "03:00"}})
    assert merged["schedule"] == {"frequency": "daily", "time": "03:00"}
    assert merged["retention"] == NIGHTLY["retention"]
    merged["retention"]["daily"]["days"] = 1
    assert NIGHTLY["retention"]["daily"]["days"] == 30


def test_partial_base() -> None:
    cleaned, errors = validate_policy({"instant_restore_days": 3}, partial_base=NIGHTLY)
    assert errors == {}
    assert cleaned == {**NIGHTLY, "instant_restore_days": 3}
    # switching to weekly without fixing the rest reports every consequence
    errors = errors_of({"schedule": WEEKLY["schedule"]}, partial_base=NIGHTLY)
    assert {"instant_restore_days", "retention.daily"} <= set(errors)


def test_clean_policy_raises() -> None:
    assert clean_policy(NIGHTLY) == NIGHTLY
    with pytest.raises(PolicyValidationError) as info:
        clean_policy({**NIGHTLY, "name": ""})
    assert list(info.value.errors) == ["name"]


def test_summaries() -> None:
    assert retention_summary(NIGHTLY) == (
        "daily: 30 days; weekly: 12 weeks (Sunday); monthly: 60 months (first Sunday); "
        "yearly: 10 years (January; day 1, last)"
    )
    assert retention_days_summary(EVERY4H) == {"instant_restore": 7, "daily": 180}


# -- properties ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10000) | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(policies())
def test_generated_policies_valid_and_canonical_idempotent(policy: dict[str, Any]) -> None:
    cleaned, errors = validate_policy(policy)
    assert errors == {}
    assert validate_policy(cleaned) == (cleaned, {})


@settings(max_examples=200, deadline=None)
@given(
    policies(),
    st.sampled_from(
        [
            "name",
            "kind",
            "timezone",
            "consistency",
            "schedule",
            "schedule.frequency",
            "schedule.time",
            "schedule.weekdays",
            "schedule.interval_hours",
            "schedule.window_hours",
            "instant_restore_days",
            "retention",
            "retention.daily",
            "retention.weekly",
            "retention.weekly.weekdays",
            "retention.monthly",
            "retention.yearly",
        ]
    ),
    json_values,
)
def test_garbage_never_raises(policy: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = policy
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            return
        node = node[p]
    node[parts[-1]] = value
    cleaned, errors = validate_policy(policy)
    assert isinstance(cleaned, dict)
    for key, messages in errors.items():
        assert isinstance(key, str)
        assert messages and all(isinstance(m, str) and m for m in messages)
    if not errors:
        assert validate_policy(cleaned) == (cleaned, {})


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_arbitrary_json_never_raises(value: Any) -> None:
    validate_policy(value)
    validate_policy({"name": "x", "schedule": value, "retention": value})
