"""The API's one parser: JSON whose every value the rest of the code can hold.

Checked here, once, for every endpoint (anonymous ones too) before any serializer runs:

- nesting is bounded (`MAX_DEPTH`): the standard parser recurses once per level and a body of
  a few kilobytes of `[` exhausts the interpreter's stack; the API's own bodies nest 4 levels;
- integers fit a signed 64-bit database column: a larger id overflows the query parameter
  (SQLite) before any "no such row" check can answer;
- strings and keys hold no NUL: PostgreSQL text refuses it and every file-system call raises on
  it, so it must never reach either.

A refusal names the value's place in the body as `key.key.index` (`target.path`,
`linked_hosts.0`), the way the services name nested fields.
"""

from collections.abc import Mapping
from typing import IO, Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.settings import api_settings

MAX_DEPTH = 32
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
NUL = "\x00"
# Where a value sits in the body: the keys and indexes that lead to it.
Place = tuple[str | int, ...]


class JSONParser(parsers.JSONParser):
    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(too_deep()) from None
        check(data)
        return data


def too_deep() -> str:
    return f"JSON parse error - the body nests deeper than {MAX_DEPTH} levels."


def check(data: object) -> None:
    """Walk the parsed body without recursion; raise at the first value the API cannot hold."""
    stack: list[tuple[object, Place, int]] = [(data, (), 1)]
    while stack:
        value, place, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise ParseError(too_deep())
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and NUL in key:
                    refuse(place, "Keys must not contain NUL characters.")
                stack.append((item, (*place, key), depth + 1))
        elif isinstance(value, str) and NUL in value:
            refuse(place, "Must not contain NUL characters.")
        elif isinstance(value, int) and not isinstance(value, bool):
            if not INT_MIN <= value <= INT_MAX:
                refuse(place, f"Must be between {INT_MIN} and {INT_MAX}.")


def refuse(place: Place, message: str) -> None:
    field = ".".join(str(p) for p in place) or api_settings.NON_FIELD_ERRORS_KEY
    raise ValidationError({field: [message]})
