"""Security tests: personas from the root conftest, an API client per persona, fast hashing."""

import pytest

from tests.api.clients import PersonaClient


@pytest.fixture(autouse=True)
def _quiet(settings, monkeypatch):
    from jobs import runner

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    monkeypatch.setattr(runner, "HEARTBEAT_SECONDS", 3600)


@pytest.fixture
def api():
    """`api(user)` → an API client acting as `user` (None: anonymous)."""

    def make(user=None) -> PersonaClient:
        client = PersonaClient()
        if user is not None:
            client.persona = user
            client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def mua_vault(vault):
    """Vault `prod` with MUA on (guard approver: the `approver` persona)."""
    vault.mua_enabled = True
    vault.save(update_fields=["mua_enabled"])
    return vault
