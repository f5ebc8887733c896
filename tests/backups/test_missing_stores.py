"""Only writing a backup creates a vault's stores. A restore, a transfer's source, verify,
cleanup and garbage collection open the stores that exist: a missing store fails the job with
an error naming the vault and the tier, and nothing is created in its place (a new empty store
would hold new data keys and hide the loss)."""

import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from jobs import tasks
from jobs.backup_queue import enqueue_pending_transfers
from jobs.models import Job, Operation, Status
from jobs.restore import request_restore
from jobs.runner import create_job
from tests import factories as f
from tests.backups.conftest import World, needs_e2fsprogs, run
from vaults.models import RecoveryPoint

pytestmark = pytest.mark.django_db(transaction=True)


def moved_aside(path: Path) -> Path:
    aside = path.with_name(path.name + "-aside")
    shutil.move(path, aside)
    return aside


def backed_up(tmp_path: Path) -> tuple[World, RecoveryPoint]:
    w = World(tmp_path, freeze_command="true", thaw_command="true")
    job = run(w.backup_now())
    assert job.status == Status.COMPLETED, job.error_message
    rp = RecoveryPoint.objects.get()
    assert rp.in_snapshot_tier and rp.in_vault_tier
    return w, rp


def restore_job(w: World, rp: RecoveryPoint, tier: str) -> Job:
    target = {"host": w.host.pk, "path": w.host.allowed_roots[1]}
    return request_restore(rp, by=w.admin, kind="restore_disks", tier=tier, target=target)


@needs_e2fsprogs
@pytest.mark.parametrize("tier", ["vault", "snapshot"])
def test_a_restore_whose_store_went_missing_fails_naming_it_and_creates_none(tmp_path, tier):
    w, rp = backed_up(tmp_path)
    job = restore_job(w, rp, tier)
    store = w.vault.store_path if tier == "vault" else w.host.snapshot_store_path(w.vault)
    moved_aside(store)

    job = run(job)
    assert job.status == Status.FAILED
    where = f"vault {w.vault.name}" + ("" if tier == "vault" else f" on host {w.host.name}")
    assert f"the {tier} store of {where} is missing" in job.error_message
    assert not store.exists()
    assert list(Path(w.host.allowed_roots[1]).iterdir()) == []


@needs_e2fsprogs
def test_a_transfer_whose_snapshot_store_went_missing_is_retried_later_and_creates_none(
    tmp_path, settings
):
    w = World(tmp_path, freeze_command="true", thaw_command="true")
    settings.LIFEBOAT = {**settings.LIFEBOAT, "FAIL_TRANSFERS": True}
    run(w.backup_now())
    settings.LIFEBOAT = {**settings.LIFEBOAT, "FAIL_TRANSFERS": False}
    rp = RecoveryPoint.objects.get()
    snapshots = w.host.snapshot_store_path(w.vault)
    moved_aside(snapshots)

    assert enqueue_pending_transfers(rp.last_transfer_at + timedelta(minutes=6)) == 1
    job = run(Job.objects.get(operation=Operation.TRANSFER))
    assert (job.status, job.error_code) == (Status.FAILED, "transfer_failed")
    assert f"snapshot store of vault {w.vault.name} on host {w.host.name} is missing" in (
        job.error_message
    )
    assert not snapshots.exists()
    rp.refresh_from_db()
    assert (rp.in_snapshot_tier, rp.in_vault_tier, rp.transfer_due) == (True, False, True)


@needs_e2fsprogs
@pytest.mark.parametrize("operation", [Operation.VERIFY, Operation.GARBAGE_COLLECT, "cleanup"])
def test_a_vault_store_gone_fails_verify_cleanup_and_gc_naming_it_and_none_is_created(
    tmp_path, operation
):
    w, rp = backed_up(tmp_path)
    moved_aside(w.vault.store_path)

    if operation == "cleanup":
        assert tasks.cleanup() == 1
        job = run(Job.objects.get(operation=Operation.CLEANUP))
    else:
        job = run(create_job(operation=operation, vault=w.vault))
    assert (job.status, job.error_code) == (Status.FAILED, "store")
    assert f"the vault store of vault {w.vault.name} is missing" in job.error_message
    assert not w.vault.store_path.exists()
    assert RecoveryPoint.objects.filter(pk=rp.pk).exists()


def test_garbage_collection_of_a_vault_that_stored_nothing_creates_no_store(tmp_path):
    vault = f.make_vault()
    job = run(create_job(operation=Operation.GARBAGE_COLLECT, vault=vault))
    assert job.status == Status.COMPLETED, job.error_message
    assert job.result == {"chunks_swept": 0, "bytes_swept": 0}
    assert not vault.store_path.exists()


def test_verify_of_a_vault_that_stored_nothing_says_so_and_creates_no_store(tmp_path):
    vault = f.make_vault()
    job = run(create_job(operation=Operation.VERIFY, vault=vault))
    assert (job.status, job.error_code) == (Status.FAILED, "store")
    assert f"the vault store of vault {vault.name} is missing" in job.error_message
    assert not vault.store_path.exists()
