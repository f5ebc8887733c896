"""A second copy of every recovery point: replicate jobs, their retries, restores from the
secondary while the primary is gone, and deletion that follows the primary.

Real ext4 images, real stores on local disks (the secondary is a local directory here; the
object-storage variants live in test_object_storage.py)."""

import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

import engine
from jobs import backup_queue, runner
from jobs.models import Job, Operation, Status
from jobs.purge import enqueue_due_purges
from jobs.restore import request_restore
from tests.backups.conftest import World, aside, needs_e2fsprogs, run, same_bytes
from vaults.models import RecoveryPoint, Replication
from vaults.stores import open_secondary_store, open_vault_store

pytestmark = [needs_e2fsprogs, pytest.mark.django_db(transaction=True)]


def with_secondary(tmp_path: Path, where: str = "secondary") -> World:
    w = World(tmp_path, freeze_command="true", thaw_command="true")
    w.vault.secondary_location = str(tmp_path / where / w.vault.name)
    w.vault.save()
    return w


def replicate_jobs():
    return Job.objects.filter(operation=Operation.REPLICATE)


def chunk_files(location: str) -> int:
    return sum(1 for p in (Path(location) / "chunks").rglob("*") if p.is_file())


def backed_up_and_replicated(w: World) -> RecoveryPoint:
    job = run(w.backup_now())
    assert job.status == Status.COMPLETED, job.error_message
    rp = RecoveryPoint.objects.get()
    assert rp.replication == Replication.PENDING
    replicate = run(replicate_jobs().get())
    assert replicate.status == Status.COMPLETED, replicate.error_message
    assert replicate.recovery_point_id == rp.pk
    rp.refresh_from_db()
    assert (rp.replication, rp.replication_error) == (Replication.REPLICATED, "")
    assert rp.replicated_at is not None
    return rp


def test_a_backup_reaches_the_secondary_and_restores_from_it_with_the_primary_gone(tmp_path):
    w = with_secondary(tmp_path)
    expected = aside(w.images[-1], "now")
    rp = backed_up_and_replicated(w)
    secondary = open_secondary_store(w.vault)
    assert secondary.has_manifest(str(rp.pk))
    assert replicate_jobs().get().result["replicate"]["chunks_copied"] > 0

    # The primary is gone (its disk unmounted): the vault store cannot be opened.
    primary = Path(w.vault.vault_location)
    shutil.move(primary, tmp_path / "primary-away")
    with pytest.raises(engine.StoreNotFound):
        open_vault_store(w.vault)
    with pytest.raises(ValidationError) as refused:
        request_restore(
            rp,
            by=w.admin,
            kind="restore_disks",
            tier="vault",
            target={"host": w.host.pk, "path": w.host.allowed_roots[1]},
        )
    assert "tier" in refused.value.message_dict

    job = request_restore(
        rp,
        by=w.admin,
        kind="restore_disks",
        source="secondary",
        target={"host": w.host.pk, "path": w.host.allowed_roots[1]},
    )
    assert job.params["tier"] == "secondary"
    job = run(job)
    assert job.status == Status.COMPLETED, job.error_message
    assert "secondary copy" in job.subtasks.get(name="Restore data").message
    assert same_bytes(Path(job.result["targets"]["-1"]), expected)


def test_only_replicated_points_restore_from_the_secondary(tmp_path):
    w = with_secondary(tmp_path)
    run(w.backup_now())
    rp = RecoveryPoint.objects.get()
    target = {"host": w.host.pk, "path": w.host.allowed_roots[1]}
    with pytest.raises(ValidationError) as refused:
        request_restore(rp, by=w.admin, kind="restore_disks", source="secondary", target=target)
    assert "secondary location" in refused.value.message_dict["source"][0]
    with pytest.raises(ValidationError) as refused:
        request_restore(rp, by=w.admin, kind="restore_disks", source="elsewhere", target=target)
    assert "source" in refused.value.message_dict


def test_a_failed_replication_is_kept_failed_and_retried_after_its_backoff(tmp_path):
    # The secondary's parent is a file: the store cannot be created there.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("in the way\n")
    w = World(tmp_path, freeze_command="true", thaw_command="true")
    w.vault.secondary_location = str(blocker / "copy")
    w.vault.save()
    backup = run(w.backup_now())
    assert backup.status == Status.COMPLETED  # the backup itself is whole
    failed = run(replicate_jobs().get())
    assert (failed.status, failed.error_code) == (Status.FAILED, "replication_failed")
    rp = RecoveryPoint.objects.get()
    assert rp.replication == Replication.FAILED
    assert rp.replication_attempts == 1
    assert "not-a-dir" in rp.replication_error

    first = rp.last_replication_at
    assert backup_queue.enqueue_pending_replications(first + timedelta(minutes=4)) == 0
    # The secondary answers again.
    blocker.unlink()
    assert backup_queue.enqueue_pending_replications(first + timedelta(minutes=6)) == 1
    assert backup_queue.enqueue_pending_replications(first + timedelta(minutes=6)) == 0
    retry = run(replicate_jobs().get(status=Status.QUEUED))
    assert retry.status == Status.COMPLETED, retry.error_message
    rp.refresh_from_db()
    assert (rp.replication, rp.replication_attempts) == (Replication.REPLICATED, 2)
    assert backup_queue.enqueue_pending_replications(timezone.now() + timedelta(days=1)) == 0


def test_a_pending_replication_whose_job_was_lost_is_queued_again(tmp_path):
    w = with_secondary(tmp_path)
    run(w.backup_now())
    lost = replicate_jobs().get()
    runner.request_cancel(lost)
    lost.refresh_from_db()
    Job.objects.filter(pk=lost.pk).update(status=Status.CANCELLED)
    assert backup_queue.enqueue_pending_replications(timezone.now()) == 1
    assert run(replicate_jobs().get(status=Status.QUEUED)).status == Status.COMPLETED


def test_purge_deletes_the_copy_in_both_places_and_collects_their_garbage(tmp_path, settings):
    settings.LIFEBOAT = {**settings.LIFEBOAT, "GC_GRACE_SECONDS": 0}
    w = with_secondary(tmp_path)
    rp = backed_up_and_replicated(w)
    assert chunk_files(w.vault.secondary_location) > 0
    now = timezone.now()
    RecoveryPoint.objects.filter(pk=rp.pk).update(
        soft_deleted_at=now - timedelta(days=15), purge_at=now - timedelta(days=1)
    )
    assert enqueue_due_purges() == 1
    purge = run(Job.objects.get(operation=Operation.PURGE))
    assert purge.status == Status.COMPLETED, purge.error_message
    assert not RecoveryPoint.objects.exists()
    assert not open_vault_store(w.vault).has_manifest(str(rp.pk))
    assert not open_secondary_store(w.vault).has_manifest(str(rp.pk))
    assert chunk_files(w.vault.secondary_location) == 0
    assert chunk_files(w.vault.vault_location) == 0


def test_a_secondary_that_does_not_answer_never_stops_the_primary_cleanup(tmp_path, settings):
    settings.LIFEBOAT = {**settings.LIFEBOAT, "GC_GRACE_SECONDS": 0}
    w = with_secondary(tmp_path)
    rp = backed_up_and_replicated(w)
    secondary = Path(w.vault.secondary_location)
    os.chmod(secondary / "keys.json", 0)
    if os.access(secondary / "keys.json", os.R_OK):  # root reads anything
        shutil.move(secondary / "keys.json", tmp_path / "keys-away.json")
        (secondary / "keys.json").mkdir()
    now = timezone.now()
    RecoveryPoint.objects.filter(pk=rp.pk).update(
        soft_deleted_at=now - timedelta(days=15), purge_at=now - timedelta(days=1)
    )
    assert enqueue_due_purges() == 1
    purge = run(Job.objects.get(operation=Operation.PURGE))
    assert purge.status == Status.COMPLETED_WITH_WARNINGS, purge.error_message
    assert [x["code"] for x in purge.warnings] == ["secondary_unreachable"]
    assert not RecoveryPoint.objects.exists()
    assert not open_vault_store(w.vault).has_manifest(str(rp.pk))
