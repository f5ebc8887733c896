"""Helpers for the API tests: an authenticated client per persona and a query-budget check."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from tests.api.clients import PersonaClient


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    # The personas' passwords are hashed per test; the real hasher is slow by design.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def api():
    """`api(user)` → an API client acting as `user` (None: anonymous)."""

    def make(user=None) -> APIClient:
        client = PersonaClient()
        if user is not None:
            client.persona = user
            client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def assert_flat_queries(django_assert_max_num_queries):
    """`assert_flat_queries(client, url, make_rows, budget)`.

    Lists `url` with 3 rows and again with 50 (`make_rows(n)` adds n rows): both answers
    must stay within `budget` queries and use the same number, so no query runs per row.
    """

    def check(client, url, make_rows, budget: int) -> None:
        counts = []
        for total, add in ((3, 3), (50, 47)):
            make_rows(add)
            with django_assert_max_num_queries(budget):
                with CaptureQueriesContext(connection) as ctx:
                    response = client.get(url, {"page_size": 100})
            assert response.status_code == 200, response.content
            assert response.data["count"] >= total
            assert len(response.data["results"]) >= total
            counts.append(len(ctx.captured_queries))
        assert counts[0] == counts[1], f"queries grow with rows: {counts}"

    return check
