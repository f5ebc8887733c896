"""Stop with delete data, the recycle bin, undelete, purge, always-on soft delete."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.db import IntegrityError
from django.urls import reverse
from django.utils import timezone

import engine
from jobs import tasks
from jobs.models import Job, Operation, Status
from tests import factories as f
from tests.backups.conftest import aside, same_bytes
from tests.lifecycle.conftest import churn, client, needs_e2fsprogs, run
from vaults import lifecycle
from vaults.models import ItemState, ProtectedVM, RecoveryPoint, Vault
from vaults.protection import protect_vm, stop_protection
from vaults.services.vaults import update_vault

pytestmark = needs_e2fsprogs


def set_vault(lab, **fields):
    Vault.objects.filter(pk=lab.vault.pk).update(**fields)
    lab.vault.refresh_from_db()


def age_bin(item, days: float):
    """Move an item's deletion `days` into the past (time passing, as far as the bin knows)."""
    shift = timedelta(days=days)
    item.refresh_from_db()
    ProtectedVM.objects.filter(pk=item.pk).update(
        deleted_at=item.deleted_at - shift, purge_at=item.purge_at - shift
    )
    for rp in RecoveryPoint.objects.filter(protected_item=item, soft_deleted_at__isnull=False):
        RecoveryPoint.objects.filter(pk=rp.pk).update(
            soft_deleted_at=rp.soft_deleted_at - shift, purge_at=rp.purge_at - shift
        )


def purge_jobs_run() -> list[Job]:
    tasks.purge()
    return [run(j) for j in Job.objects.filter(operation=Operation.PURGE, status=Status.QUEUED)]


def test_delete_data_goes_to_the_bin_and_undelete_restores_identical_disks(lab, ops, tmp_path):
    set_vault(lab, soft_delete_days=30)
    item = lab.protect("web")
    expected = aside(lab.image(item), "first")
    rp = lab.backup(item)
    churn(lab.image(item), 1, "x")
    lab.backup(item)

    assert ops.stop(item, lab.contributor, "delete_data") == ("ok",)
    item.refresh_from_db()
    assert (item.state, item.deleted_by, item.retention_mode) == (
        "soft_deleted",
        lab.contributor,
        "",
    )
    assert (item.deleted_soft_delete_state, item.deleted_soft_delete_days) == ("enabled", 30)
    assert item.purge_at == item.deleted_at + timedelta(days=30)
    binned = RecoveryPoint.objects.filter(protected_item=item)
    assert {(r.soft_delete_reason, r.purge_at, r.soft_deleted_by_id) for r in binned} == {
        ("item_deleted", item.purge_at, lab.contributor.pk)
    }
    # Nothing left the stores: soft delete is a catalog state until the purge.
    assert len(engine.list_recovery_points(lab.vault_store())) == 2

    # The vault's recycle bin (API), for a reader too: who, when, purge date, days left.
    r = client(lab.reader).get(reverse("api-vault-recycle-bin", args=["lc"]))
    assert r.status_code == 200 and r.data["count"] == 1
    entry = r.data["results"][0]
    assert (entry["kind"], entry["vm_name"], entry["recovery_points"]) == ("item", "web", 2)
    assert (entry["deleted_by"], entry["days_left"], entry["reason"]) == (
        "lc-contributor",
        30,
        "item_deleted",
    )
    # The RP list leaves binned points out; the item says soft_deleted.
    r = client(lab.reader).get(reverse("api-recovery-point-list", args=["lc", "web"]))
    assert r.data["count"] == 0

    # Settings changed later do not govern the deleted item.
    update_vault(lab.vault, by=lab.admin, soft_delete_days=14)
    item.refresh_from_db()
    assert item.purge_at == item.deleted_at + timedelta(days=30)

    assert ops.undelete(item, lab.contributor) == ("ok",)
    item.refresh_from_db()
    assert (item.state, item.retention_mode, item.purge_at) == (
        "protection_stopped",
        "retain_forever",
        None,
    )
    assert RecoveryPoint.objects.filter(soft_deleted_at__isnull=False).count() == 0
    # Restore the first RP: byte-identical to the disk as it was at that backup.
    rp.refresh_from_db()
    target = Path(lab.host.allowed_roots[1]) / "restored.img"
    engine.restore(lab.vault_store(), str(rp.pk), {-1: target})
    assert same_bytes(target, expected)
    # The undeleted item resumes like any stopped one.
    assert ops.resume(item, lab.contributor) == ("ok",)
    assert Job.objects.filter(operation=Operation.UNDELETE, protected_item=item).exists()


def test_soft_delete_disabled_deletes_at_once(lab, ops):
    set_vault(lab, soft_delete_state="disabled")
    item = lab.protect("web")
    rp = lab.backup(item)
    assert ops.stop(item, lab.contributor, "delete_data") == ("ok",)
    job = Job.objects.get(operation=Operation.DELETE_BACKUP_DATA, status=Status.QUEUED)
    # Nothing to undelete: the data is being deleted.
    assert ops.undelete(item, lab.contributor) == ("blocked", "purge_due")
    job = run(job)
    assert job.status == Status.COMPLETED, job.error_message
    assert job.result["recovery_points"] == 1 and job.result["items"] == ["web"]
    assert not ProtectedVM.objects.filter(pk=item.pk).exists()
    assert not RecoveryPoint.objects.exists()
    assert not lab.vault_store().has_manifest(str(rp.pk))
    assert not lab.snapshot_store().has_manifest(str(rp.pk))
    # The VM can be protected again in the same vault.
    protect_vm(lab.vault, by=lab.admin, vm=item.vm, policy=lab.policy)


def test_the_vm_of_a_soft_deleted_item_can_be_protected_in_another_vault(lab, ops):
    item = lab.protect("web")
    lab.backup(item)
    assert ops.stop(item, lab.contributor, "delete_data") == ("ok",)
    other = f.make_vault("other", owner=lab.admin)
    other.linked_hosts.add(lab.host)
    # Not in the same vault (undelete instead) ...
    with pytest.raises(Exception) as refused:
        protect_vm(lab.vault, by=lab.admin, vm=item.vm, policy=lab.policy)
    assert "soft-deleted" in str(refused.value)
    # ... but in another one: the partial unique constraint allows it.
    moved = protect_vm(other, by=lab.admin, vm=item.vm, policy=other.policies.get())
    assert moved.state == ItemState.INITIAL_BACKUP_PENDING
    # Undeleting the old item now would protect the VM twice: refused, 409.
    assert ops.undelete(item, lab.contributor) == ("blocked", "vm_protected_elsewhere")
    # The database says the same, whatever the services check.
    with pytest.raises(IntegrityError):
        from django.db import transaction

        with transaction.atomic():
            ProtectedVM.objects.filter(pk=item.pk).update(state=ItemState.PROTECTION_STOPPED)


def test_purge_after_expiry_frees_only_the_chunks_of_that_item(lab):
    # b's disk is a byte copy of a's; a then gets unique data: they share most chunks.
    a = lab.protect("a")
    b = lab.protect("b", copy_of=lab.image(a))
    expected_b = aside(lab.image(b), "b")
    rp_b = lab.backup(b)
    only_b = lab.chunk_files()
    churn(lab.image(a), 2, "a-only")
    lab.backup(a)
    lab.backup(a)
    assert lab.chunk_files() > only_b

    stop_protection(a, by=lab.admin, mode="delete_data")
    # Before the purge date nothing is purged, whatever runs.
    assert purge_jobs_run() == []
    assert lab.chunk_files() > only_b

    age_bin(a, 14)  # 14 days later
    jobs = purge_jobs_run()
    assert [j.status for j in jobs] == [Status.COMPLETED], [j.error_message for j in jobs]
    assert jobs[0].result["recovery_points"] == 2 and jobs[0].result["items"] == ["a"]
    assert not ProtectedVM.objects.filter(pk=a.pk).exists()
    # Exactly b's chunks are left: the shared ones stay, a's own ones are gone.
    assert lab.chunk_files() == only_b
    target = Path(lab.host.allowed_roots[1]) / "b.img"
    engine.restore(lab.vault_store(), str(rp_b.pk), {-1: target})
    assert same_bytes(target, expected_b)
    assert engine.verify(lab.vault_store()).ok


def test_always_on_forbids_early_purge_and_cannot_be_turned_off(lab, ops):
    item = lab.protect("web")
    lab.backup(item)
    assert ops.settings(lab.vault, lab.contributor, soft_delete_state="always_on") == ("ok",)
    assert ops.stop(item, lab.contributor, "delete_data") == ("ok",)
    item.refresh_from_db()
    assert item.deleted_soft_delete_state == "always_on"
    # No purge-now while always on, for anybody.
    for user in (lab.contributor, lab.admin):
        assert ops.purge_now(item, user) == ("blocked", "soft_delete_always_on")
    # Nobody, superusers included, turns always-on off.
    for state in ("enabled", "disabled"):
        assert ops.settings(lab.vault, lab.admin, soft_delete_state=state) == (
            "blocked",
            "soft_delete_always_on",
        )
    lab.vault.refresh_from_db()
    assert lab.vault.soft_delete_state == "always_on"
    # The purge job judges by the real clock: a day before the purge date nothing goes.
    age_bin(item, 13)
    assert purge_jobs_run() == []
    assert RecoveryPoint.objects.filter(protected_item=item).count() == 1
    age_bin(item, 1.01)
    assert [j.status for j in purge_jobs_run()] == [Status.COMPLETED]
    assert not ProtectedVM.objects.filter(pk=item.pk).exists()


def test_purge_now_needs_soft_delete_disabled(lab, ops):
    item = lab.protect("web")
    lab.backup(item)
    assert ops.stop(item, lab.contributor, "delete_data") == ("ok",)
    assert ops.purge_now(item, lab.contributor) == ("blocked", "soft_delete_enabled")
    assert ops.purge_now(item, lab.operator) == ("forbidden",)
    assert ops.settings(lab.vault, lab.contributor, soft_delete_state="disabled") == ("ok",)
    assert ops.purge_now(item, lab.contributor) == ("ok",)
    job = run(Job.objects.get(operation=Operation.PURGE, status=Status.QUEUED))
    assert job.status == Status.COMPLETED, job.error_message
    assert not ProtectedVM.objects.filter(pk=item.pk).exists()


def test_recycle_bin_queries_and_upcoming_purges(lab):
    a, b = lab.protect("a"), lab.protect("b")
    lab.backup(a)
    stop_protection(a, by=lab.contributor, mode="delete_data")
    other = f.make_vault("other", owner=lab.admin)
    now = timezone.now()
    assert [e.vm_name for e in lifecycle.recycle_bin(lab.vault, user=lab.reader)] == ["a"]
    assert lifecycle.recycle_bin(other, user=lab.admin) == []
    assert [e.vault for e in lifecycle.site_recycle_bin(user=lab.admin)] == ["lc"]
    # Site-wide: site administrators only.
    assert client(lab.contributor).get(reverse("api-recycle-bin")).status_code == 403
    r = client(lab.admin).get(reverse("api-recycle-bin"))
    assert r.status_code == 200 and [e["vault"] for e in r.data["results"]] == ["lc"]
    # Outsiders do not see the vault's bin at all.
    assert (
        client(f.make_user("nobody")).get(reverse("api-vault-recycle-bin", args=["lc"])).status_code
        == 404
    )
    # The upcoming-purge alert: entries purged within two days.
    assert lifecycle.upcoming_purges(now) == []
    soon = lifecycle.upcoming_purges(now + timedelta(days=12, hours=1))
    assert [(e.kind, e.vm_name, e.days_left) for e in soon] == [("item", "a", 2)]
    assert lifecycle.upcoming_purges(now + timedelta(days=15)) == []
    assert b.state != ItemState.SOFT_DELETED
