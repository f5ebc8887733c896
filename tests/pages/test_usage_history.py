"""The daily usage history: one row per vault and per item and day, from the real store's
statistics and the catalog, rewritten (never duplicated) by each run of the same day, and no
row for a day nobody recorded."""

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import tasks
from jobs.schedules import PERIODIC
from tests import factories as f
from vaults.models import ItemUsage, VaultUsage
from vaults.storage import vault_storage
from vaults.usage import store_space


def test_it_is_a_periodic_task():
    assert any(p.func == "jobs.tasks.record_usage" for p in PERIODIC)


@pytest.mark.django_db(transaction=True)
def test_it_records_the_stores_real_figures_once_per_day(real_rp, vault):
    rp, _files, _image = real_rp
    tasks.record_usage()
    tasks.record_usage()  # the same day again: the row is rewritten, not added
    (row,) = VaultUsage.objects.all()
    storage = vault_storage(vault)
    assert row.day == timezone.localdate()
    assert row.logical_bytes == rp.size_bytes > 0
    assert row.vault_stored_bytes == storage.vault_tier.stored_bytes > 0
    assert row.stored_bytes == storage.stored_bytes
    assert row.referenced_bytes == storage.vault_tier.referenced_bytes
    assert row.recovery_points == 1 and row.protected_items == 1
    assert row.free_bytes is not None and 0 < row.free_bytes <= row.capacity_bytes
    (item_row,) = ItemUsage.objects.all()
    assert item_row.vm_name == "files-01" and item_row.recovery_points == 1
    assert item_row.stored_bytes == sum(d["bytes_stored"] for d in rp.disks) > 0


@pytest.mark.django_db
def test_a_new_day_adds_a_row_and_leaves_the_past(vault, rp):
    tasks.record_usage(timezone.now() - timedelta(days=1))
    tasks.record_usage()
    days = list(VaultUsage.objects.values_list("day", flat=True))
    assert days == [timezone.localdate() - timedelta(days=1), timezone.localdate()]
    assert ItemUsage.objects.count() == 2


@pytest.mark.django_db
def test_object_storage_is_unknown_not_zero(admin_user):
    vault = f.make_vault(store_location="s3://bucket-one/prefix")
    assert store_space(vault) is None
    tasks.record_usage()
    row = VaultUsage.objects.get(vault=vault)
    assert row.stats_known is False and row.free_bytes is None
