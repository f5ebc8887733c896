"""Query-string filters of the list endpoints.

Each list declares its filters as a `FilterSerializer`, which is also its OpenAPI parameters,
so the schema shows every filter's choices. Values are checked whole: a value outside its
choices or an impossible date is a 400 naming the filter, never ignored (a misspelt status
would silently list everything) and never a 500. A blank value filters nothing, as a form
field left empty.
"""

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, time
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


class FilterSerializer(serializers.Serializer):
    @classmethod
    def values(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """The filters of `params` (a QueryDict or a dict) this class declares, validated."""
        given = {name: params.get(name) or "" for name in cls().fields.keys()}
        filters = cls(data={name: value for name, value in given.items() if value.strip()})
        filters.is_valid(raise_exception=True)
        return filters.validated_data


class CommaChoices(serializers.CharField):
    """`a,b` → ["a", "b"], each one of `choices`."""

    def __init__(self, choices: Iterable[tuple[str, str]], **kwargs: Any) -> None:
        self.allowed = [c for c, _ in choices]
        super().__init__(**kwargs)

    # Text on the way in (its length and blank rules are CharField's), a list once parsed.
    def to_internal_value(self, data: Any) -> list[str]:  # type: ignore[override]
        values = [v.strip() for v in super().to_internal_value(data).split(",") if v.strip()]
        bad = [v for v in values if v not in self.allowed]
        if bad:
            raise serializers.ValidationError(
                f"Unknown value {', '.join(bad)}; use {', '.join(self.allowed)}."
            )
        return values


@extend_schema_field(OpenApiTypes.STR)
class MomentField(serializers.Field):
    """An ISO date or date-time, as an aware UTC datetime.

    A date stands for its first moment, or with `end=True` its last, so `until=2025-01-31`
    keeps the whole day; a date-time without an offset is UTC.
    """

    default_error_messages = {
        "invalid": "Give an ISO date (2025-01-31) or date-time (2025-01-31T12:00:00Z).",
    }

    def __init__(self, *, end: bool = False, **kwargs: Any) -> None:
        self.end = end
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> datetime:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            moment = parse_datetime(data)
            if moment is None:
                day = parse_date(data)
                if day is None:
                    self.fail("invalid")
                moment = datetime.combine(day, time.max if self.end else time.min)
            if timezone.is_naive(moment):
                moment = moment.replace(tzinfo=UTC)
            # The database compares in UTC, where a moment at the edge of year 1 or 9999
            # does not exist.
            return moment.astimezone(UTC)
        except (ValueError, OverflowError):
            # Well formed, but no such day or time (2020-02-30, 24:00).
            self.fail("invalid")

    def to_representation(self, value: datetime) -> str:
        return value.isoformat()
