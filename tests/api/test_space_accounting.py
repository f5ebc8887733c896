"""Space accounting through real backup jobs: each finished job refreshes the figures, the API
and pages show them, and deleting a recovery point and collecting garbage frees exactly what
was reported for it."""

import os

import pytest
from django.test import Client
from django.urls import reverse

import engine
from engine.stats import store_stats
from jobs.backup_queue import backup_now
from jobs.lifecycle import delete_everywhere, open_stores
from tests.api.conftest import MIB, make_ext4, needs_mkfs
from vaults import accounting
from vaults.models import ProtectedVM, RecoveryPoint, Vault

pytestmark = [needs_mkfs, pytest.mark.django_db(transaction=True)]


def _stored(vault: Vault, item: ProtectedVM) -> int:
    places = [vault.vault_location, str(item.vm.host.snapshot_store_path(vault))]
    return sum(store_stats(p).stored_bytes for p in places)


def test_delete_and_gc_free_what_was_reported(
    backed_up, real_disks, item, admin_user, run_job, api, reader
):
    vault = item.vault
    # A second backup with the data disk's file replaced: the OS disk's chunks are shared.
    make_ext4(real_disks[0], {"db/table.dat": os.urandom(MIB)})
    job = run_job(backup_now(item, by=admin_user).pk)
    assert job.status == "completed", job.error_message
    first, second = RecoveryPoint.objects.get(pk=backed_up.pk), job.recovery_point
    second.refresh_from_db()
    # The job's end refreshed the figures.
    assert first.unique_bytes > 0 and second.unique_bytes > 0
    assert first.shared_bytes > 0 and first.shared_bytes == second.shared_bytes
    item.refresh_from_db()
    vault.refresh_from_db()
    assert vault.accounted_at is not None
    # The item owns everything; shared chunks count once (its RPs' unique + one shared part).
    assert item.unique_bytes == _stored(vault, item)
    assert item.unique_bytes == first.unique_bytes + second.unique_bytes + first.shared_bytes
    # API and page show them.
    url = reverse("api-recovery-point-detail", args=[vault.name, item.vm.name, first.pk])
    shown = api(reader).get(url).data
    assert (shown["unique_bytes"], shown["shared_bytes"]) == (
        first.unique_bytes,
        first.shared_bytes,
    )
    page = Client()
    page.force_login(reader)
    html = page.get(reverse("item-detail", args=[vault.name, item.vm.name])).content.decode()
    assert "rp-unique" in html and 'id="item-space"' in html
    # The proof: delete the first RP everywhere, collect garbage, compare.
    before = _stored(vault, item)
    stores = open_stores(vault)
    delete_everywhere(first, stores)
    for store in stores.all():
        engine.gc(store, grace_seconds=0)
    assert before - _stored(vault, item) == first.unique_bytes
    # After a refresh the second RP holds everything alone.
    accounting.refresh(vault)
    second.refresh_from_db()
    assert second.shared_bytes == 0 and second.unique_bytes == _stored(vault, item)
