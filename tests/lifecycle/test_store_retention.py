"""The date the stores keep an RP until (what S3 Object Lock locks it to)."""

from datetime import UTC, datetime, timedelta

import pytest

from tests.factories import make_vault
from vaults.models import SoftDeleteState
from vaults.stores import store_retain_until

pytestmark = pytest.mark.django_db

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)


def test_the_recycle_bin_days_are_added_while_soft_delete_is_on():
    vault = make_vault(soft_delete_days=30)
    assert store_retain_until(vault, EXPIRES) == EXPIRES + timedelta(days=30)
    vault.soft_delete_state = SoftDeleteState.ALWAYS_ON
    assert store_retain_until(vault, EXPIRES) == EXPIRES + timedelta(days=30)


def test_without_soft_delete_the_expiry_alone():
    vault = make_vault(soft_delete_state=SoftDeleteState.DISABLED)
    assert store_retain_until(vault, EXPIRES) == EXPIRES
