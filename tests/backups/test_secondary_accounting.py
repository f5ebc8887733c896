"""The secondary copy in the vault's space accounting: its own figure (every chunk stored there)
and each RP's presence, refreshed by the replicate job's end, shown on the overview and in the
API; the vault tier's figures are not changed by it, and a secondary that does not answer
keeps its old figures. Real images, real replicate jobs, a local secondary."""

import shutil

import pytest
from django.test import Client
from django.urls import reverse

from engine.stats import store_stats
from jobs.models import Job, Operation, Status
from tests.api.clients import persona_client
from tests.backups.conftest import World, needs_e2fsprogs, run
from vaults import accounting
from vaults.models import RecoveryPoint, Vault

pytestmark = [needs_e2fsprogs, pytest.mark.django_db(transaction=True)]


def backed_up(w: World) -> RecoveryPoint:
    job = run(w.backup_now())
    assert job.status == Status.COMPLETED, job.error_message
    return RecoveryPoint.objects.get(pk=job.recovery_point_id)


def replicated(rp: RecoveryPoint) -> RecoveryPoint:
    job = run(Job.objects.get(operation=Operation.REPLICATE, recovery_point=rp))
    assert job.status == Status.COMPLETED, job.error_message
    rp.refresh_from_db()
    return rp


def test_the_secondary_copy_is_its_own_figure(tmp_path):
    w = World(tmp_path, freeze_command="true", thaw_command="true")
    secondary = tmp_path / "secondary" / w.vault.name
    Vault.objects.filter(pk=w.vault.pk).update(secondary_location=str(secondary))
    w.vault.refresh_from_db()
    first = backed_up(w)
    # Not copied yet: measured, and absent there.
    vault = Vault.objects.get(pk=w.vault.pk)
    assert first.secondary_unique_bytes is None
    assert vault.secondary_stored_bytes == 0 and vault.secondary_accounted_at is not None
    unique_before = first.unique_bytes
    # The replicate job's end measures the copy.
    first = replicated(first)
    vault.refresh_from_db()
    stored = store_stats(str(secondary)).stored_bytes
    assert stored > 0 and vault.secondary_stored_bytes == stored
    assert first.secondary_unique_bytes == stored  # it alone is there
    assert first.unique_bytes == unique_before  # the vault's own figures ignore the copy
    # A second backup: present in the vault tier, not yet in the secondary.
    with open(w.images[-1], "r+b") as disk:
        disk.seek(8 << 20)
        disk.write(b"changed" * 4096)
    second = backed_up(w)
    assert second.secondary_unique_bytes is None
    first.refresh_from_db()
    assert first.secondary_unique_bytes == stored
    second = replicated(second)
    first.refresh_from_db()
    vault.refresh_from_db()
    assert second.secondary_unique_bytes > 0
    assert vault.secondary_stored_bytes == store_stats(str(secondary)).stored_bytes
    # Shared chunks are nobody's alone: the two RPs' unique bytes leave some out.
    assert first.secondary_unique_bytes + second.secondary_unique_bytes < (
        vault.secondary_stored_bytes
    )
    # The API and the overview show it.
    api = persona_client(w.admin)
    shown = api.get(reverse("api-vault-detail", args=[vault.name])).json()
    assert shown["secondary_stored_bytes"] == vault.secondary_stored_bytes
    assert shown["secondary_accounted_at"] is not None
    rp_url = reverse("api-recovery-point-detail", args=[vault.name, w.vm.name, second.pk])
    assert api.get(rp_url).json()["secondary_unique_bytes"] == second.secondary_unique_bytes
    page = Client()
    page.force_login(w.admin)
    html = page.get(reverse("vault-detail", args=[vault.name])).content.decode()
    assert 'id="secondary-stored"' in html and "2 of 2 recovery points there" in html
    # The secondary does not answer: the vault's figures move on, the copy's keep their date.
    measured_at = vault.secondary_accounted_at
    shutil.move(secondary, tmp_path / "secondary-away")
    assert accounting.refresh(vault) == 2
    vault.refresh_from_db()
    second.refresh_from_db()
    assert vault.secondary_accounted_at == measured_at and vault.accounted_at > measured_at
    assert second.secondary_unique_bytes is not None
    shutil.move(tmp_path / "secondary-away", secondary)
    # No secondary any more: its figures go.
    Vault.objects.filter(pk=vault.pk).update(secondary_location="")
    vault.refresh_from_db()
    accounting.refresh(vault)
    vault.refresh_from_db()
    assert vault.secondary_stored_bytes is None and vault.secondary_accounted_at is None
    assert not RecoveryPoint.objects.filter(secondary_unique_bytes__isnull=False).exists()
