"""Helpers for page tests: logging in a persona and checking query budgets at scale."""

import pytest


@pytest.fixture
def login(client):
    """`login(user)` → the test client, logged in as that persona."""

    def _login(user):
        client.force_login(user)
        return client

    return _login


HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def assert_query_budget(client, django_assert_max_num_queries):
    """Render `url` with 3 rows and with 50 rows under the same query budget.

    `make_rows(n)` adds n rows to whatever the page lists; `marker` (if given) must appear at
    least once per row, so the check proves the rows were actually rendered.
    """

    def check(user, url, make_rows, budget, marker=None):
        client.force_login(user)
        shown = 0
        for total in (3, 50):
            make_rows(total - shown)
            shown = total
            with django_assert_max_num_queries(budget):
                response = client.get(url)
            assert response.status_code == 200
            if marker is not None:
                assert response.content.decode().count(marker) >= total

    return check


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # The personas' passwords are hashed once per test; a fast hasher keeps the pages suite quick.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
