"""The two policies of the API contract, as the tests use them."""

from typing import Any

NIGHTLY: dict[str, Any] = {
    "name": "Nightly",
    "kind": "standard",
    "timezone": "Europe/Berlin",
    "consistency": "default",
    "schedule": {"frequency": "daily", "time": "02:00"},
    "instant_restore_days": 2,
    "retention": {
        "daily": {"days": 30},
        "weekly": {"weeks": 12, "weekdays": ["sun"]},
        "monthly": {"months": 60, "weeks": ["first"], "weekdays": ["sun"]},
        "yearly": {"years": 10, "months": ["jan"], "days": [1, "last"]},
    },
}
EVERY4H: dict[str, Any] = {
    "name": "Every4h",
    "kind": "enhanced",
    "timezone": "UTC",
    "consistency": "crash_only",
    "schedule": {
        "frequency": "hourly",
        "interval_hours": 4,
        "window_start": "08:00",
        "window_hours": 24,
    },
    "instant_restore_days": 7,
    "retention": {"daily": {"days": 180}},
}
