"""Fuzz the whole REST API from its OpenAPI schema with schemathesis: no answer may be a 5xx.

Runs in-process against `portal.wsgi` (no server needed) on pytest-django's test database,
authenticated with a site administrator's API token (so every endpoint is reachable) over the
personas' vault `prod`. Outside `testpaths`, so `make test` does not run it; `make fuzz` does:

    .venv/bin/pytest scripts/api_fuzz.py -q -p no:cacheprovider

LIFEBOAT_FUZZ_EXAMPLES sets hypothesis' examples per operation (default 25).
"""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

EXAMPLES = int(os.environ.get("LIFEBOAT_FUZZ_EXAMPLES", "25"))


@pytest.fixture
def api_schema(db):
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    from portal.wsgi import application

    # As Django's test client does: the raw WSGI app would otherwise close the connection
    # that holds the test's transaction after every request (PostgreSQL).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield schemathesis.openapi.from_wsgi("/api/schema/", application)
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture
def token(vault, item, rp, job, admin_user, settings):
    from portal.models import ApiToken

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    _, key = ApiToken.issue(admin_user, "fuzz")
    return key


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case, token):
    response = case.call(headers={"Authorization": f"Token {token}"})
    case.validate_response(response, checks=[not_a_server_error])
