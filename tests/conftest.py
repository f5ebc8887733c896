"""Fixtures and helpers shared by the Django-side tests: an API client per persona, the
heartbeat patch for jobs run in this process, and polling for a condition."""

import time

import pytest

from tests.api.clients import persona_client


@pytest.fixture
def api():
    """`api(user)` → an API client acting as `user` (None: anonymous)."""
    return persona_client


@pytest.fixture
def quiet_heartbeat(monkeypatch):
    """A job run in this process shares the test's database: no heartbeat thread beside it."""
    from jobs import runner

    monkeypatch.setattr(runner, "HEARTBEAT_SECONDS", 3600)


def wait_until(predicate, timeout: float = 10.0, step: float = 0.02, what: str = "condition"):
    """Poll `predicate` every `step` seconds until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"{what} not met within {timeout}s")
