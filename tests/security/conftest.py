"""Security tests: personas from the root conftest; jobs run in this process."""

import pytest


@pytest.fixture(autouse=True)
def _quiet(quiet_heartbeat):
    """Every test here may run a job in this process."""


@pytest.fixture
def mua_vault(vault):
    """Vault `prod` with MUA on (guard approver: the `approver` persona)."""
    vault.mua_enabled = True
    vault.save(update_fields=["mua_enabled"])
    return vault
