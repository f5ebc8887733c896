import os

from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver


def api_patterns(patterns=None, prefix=""):
    patterns = get_resolver().url_patterns if patterns is None else patterns
    for p in patterns:
        route = prefix + str(p.pattern)
        if isinstance(p, URLResolver):
            yield from api_patterns(p.url_patterns, route)
        elif isinstance(p, URLPattern) and route.startswith("api/"):
            yield route, p.name


def test_every_api_route_has_a_unique_name():
    routes = list(api_patterns())
    assert len(routes) >= 23
    unnamed = [route for route, name in routes if not name]
    assert unnamed == []
    names = [name for _, name in routes]
    assert len(names) == len(set(names)), sorted(names)


def test_the_schema_generates_without_warnings():
    # --fail-on-warn turns any drf-spectacular warning or error into a failure.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", os.devnull)
