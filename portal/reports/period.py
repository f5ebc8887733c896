"""The date range a report covers: `from` and `to`, whole days in the site's time zone."""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.dateparse import parse_date

DEFAULT_DAYS = 30
# Days whose bounds every database and `datetime` can hold (year 9999's last day has no next).
FIRST_YEAR = 1970
LAST_YEAR = 9998
# A year and a day: enough for a yearly comparison, small enough that a per-day table of
# every item stays a page, not a dump.
MAX_DAYS = 366


@dataclass(frozen=True)
class Period:
    start: date
    end: date

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]

    @property
    def start_at(self) -> datetime:
        return timezone.make_aware(datetime.combine(self.start, time.min))

    @property
    def end_at(self) -> datetime:
        """The first moment after the period (exclusive bound)."""
        return timezone.make_aware(datetime.combine(self.end + timedelta(days=1), time.min))

    def query(self) -> str:
        return f"from={self.start.isoformat()}&to={self.end.isoformat()}"


def last_days(n: int, today: date | None = None) -> Period:
    today = today or timezone.localdate()
    return Period(today - timedelta(days=n - 1), today)


def _day(params: Mapping[str, Any], name: str) -> date | None:
    value = (params.get(name) or "").strip()
    if not value:
        return None
    try:
        day = parse_date(value)
    except ValueError:
        day = None
    if day is None:
        raise ValidationError({name: [f"Give a date as YYYY-MM-DD, not {value[:40]!r}."]})
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise ValidationError({name: [f"Give a year from {FIRST_YEAR} to {LAST_YEAR}."]})
    return day


def parse_period(params: Mapping[str, Any], today: date | None = None) -> Period:
    """`from`/`to` of a query string; either may be left out (to: today; from: 30 days before
    `to`). A ValidationError names the field at fault."""
    today = today or timezone.localdate()
    end = _day(params, "to") or today
    start = _day(params, "from") or end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise ValidationError({"from": ["The start date is after the end date."]})
    if (end - start).days + 1 > MAX_DAYS:
        raise ValidationError({"to": [f"A report covers at most {MAX_DAYS} days."]})
    return Period(start, end)
