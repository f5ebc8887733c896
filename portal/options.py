"""Numbers operators and tests tune in `settings.LIFEBOAT` (a number, or its text from the
environment): one reader for all of them."""

from typing import Any

from django.conf import settings


def option(name: str, default: float) -> float:
    """`settings.LIFEBOAT[name]` as a number, or `default` when it is not set."""
    value: Any = settings.LIFEBOAT.get(name, default)
    return float(value)
