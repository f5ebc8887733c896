"""Strict input for every endpoint: unknown fields, wrong JSON types and changed read-only
fields are 400s naming the field, instead of being ignored or coerced ("5" is not 5)."""

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers
from rest_framework.settings import api_settings

NON_FIELD = api_settings.NON_FIELD_ERRORS_KEY
UNKNOWN = "Unknown field."
READ_ONLY = "This field is read-only."


def type_error(field: serializers.Field, value: object) -> str | None:
    """What is wrong with the JSON type of `value` for `field`, or None."""
    if value is None:
        return None  # the field's own allow_null check answers
    if isinstance(field, serializers.BooleanField):
        return None if isinstance(value, bool) else "Must be true or false."
    if isinstance(field, serializers.IntegerField):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "Must be an integer."
    if isinstance(field, serializers.CharField | serializers.ChoiceField):
        return None if isinstance(value, str) else "Must be a string."
    if isinstance(field, serializers.ListField):
        if not isinstance(value, list):
            return "Must be a list."
        for i, item in enumerate(value):
            problem = type_error(field.child, item)
            if problem:
                return f"Item {i}: {problem[0].lower()}{problem[1:]}"
    return None


class StrictSerializer(serializers.Serializer):
    """Read-only fields may be sent back unchanged (so a GET can be PUT back); with any other
    value they are refused. Nested serializers that describe server-side state (disk sizes,
    extension state) set `ignore_read_only` so what they show can be sent back freely.
    """

    ignore_read_only = False

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise serializers.ValidationError({NON_FIELD: ["Must be a JSON object."]})
        errors: dict[str, Any] = {}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            detail = exc.detail
            errors.update(detail if isinstance(detail, dict) else {NON_FIELD: detail})
            value = None
        current = None
        for key, raw in data.items():
            field = self.fields.get(key)
            if field is None:
                errors[key] = [UNKNOWN]
            elif field.read_only:
                if self.ignore_read_only:
                    continue
                if self.instance is not None and not isinstance(self.instance, list):
                    if current is None:
                        current = self.to_representation(self.instance)
                    if current.get(key) == raw:
                        continue
                errors[key] = [READ_ONLY]
            else:
                problem = type_error(field, raw)
                if problem:
                    errors[key] = [problem]
        if errors:
            raise serializers.ValidationError(errors)
        return value


class StrictModelSerializer(StrictSerializer, serializers.ModelSerializer):
    pass
