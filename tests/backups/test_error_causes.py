"""A failed job names its cause: a full disk is `no_space` on every tier, a missing disk image is
`disk_not_found`, never an `internal_error` quoting an errno."""

import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from jobs import restore
from jobs.backup_queue import enqueue_pending_transfers
from jobs.models import Job, Operation, Status
from security.models import Alert
from tests.backups.conftest import World, needs_e2fsprogs, run
from vaults.models import ItemState, RecoveryPoint

pytestmark = [needs_e2fsprogs, pytest.mark.django_db(transaction=True)]


def test_a_full_snapshot_disk_fails_the_backup_as_no_space(tmp_path, small_disk):
    small_disk(tmp_path / "host" / "snapshots", "1m")
    w = World(tmp_path)
    job = run(w.backup_now())
    assert (job.status, job.error_code) == (Status.FAILED, "no_space"), job.error_message
    assert w.host.snapshot_root in job.error_message and "is full" in job.error_message
    assert not RecoveryPoint.objects.exists()
    w.item.refresh_from_db()
    assert w.item.state == ItemState.PROTECTION_ERROR
    assert "no_space" in Alert.objects.get(kind="backup_failure").message


def test_a_full_vault_disk_fails_the_transfer_as_no_space(tmp_path, small_disk):
    w = World(tmp_path, freeze_command="true", thaw_command="true")
    store = Path(w.vault_store().path)
    aside = shutil.copytree(store, tmp_path / "vault-store-aside")
    small_disk(store, "1m")
    shutil.copytree(aside, store, dirs_exist_ok=True)

    # The snapshot is good, so the backup completes with the cause as its warning.
    job = run(w.backup_now())
    assert job.status == Status.COMPLETED_WITH_WARNINGS, job.error_message
    assert [x["code"] for x in job.warnings] == ["no_space"]
    assert str(store) in job.warnings[0]["message"]
    rp = RecoveryPoint.objects.get()
    assert (rp.in_snapshot_tier, rp.in_vault_tier, rp.transfer_due) == (True, False, True)

    # The retried transfer fails for the same, named reason.
    assert enqueue_pending_transfers(rp.last_transfer_at + timedelta(minutes=6)) == 1
    retry = run(Job.objects.get(operation=Operation.TRANSFER))
    assert (retry.status, retry.error_code) == (Status.FAILED, "no_space"), retry.error_message


def test_a_full_restore_target_fails_the_restore_as_no_space(tmp_path, small_disk):
    w = World(tmp_path)
    rp = run(w.backup_now()).recovery_point
    target = small_disk(Path(w.host.allowed_roots[1]), "1m")
    job = run(
        restore.request_restore(
            rp,
            by=w.admin,
            kind="restore_disks",
            tier="snapshot",
            target={"host": w.host.pk, "path": str(target)},
        )
    )
    assert (job.status, job.error_code) == (Status.FAILED, "no_space"), job.error_message
    assert f"restore target's disk ({target}) is full" in job.error_message
    assert list(target.iterdir()) == []  # no partial disk, no temp file
    assert "no_space" in Alert.objects.get(kind="restore_failure").message


def test_a_missing_disk_image_is_disk_not_found(tmp_path):
    w = World(tmp_path)
    w.images[-1].unlink()
    job = run(w.backup_now())
    assert (job.status, job.error_code) == (Status.FAILED, "disk_not_found"), job.error_message
    assert str(w.images[-1]) in job.error_message


def fill_disk(ctx):
    """A job handler that writes more than its disk holds."""
    Path(ctx.job.params["path"]).write_bytes(b"x" * (1 << 20))


def test_any_job_that_fills_a_disk_fails_as_no_space(tmp_path, small_disk, monkeypatch):
    """Operations without a disk of their own to name (GC, purge, key update …) still say
    `no_space` rather than an internal error."""
    from jobs import runner

    full = small_disk(tmp_path / "full", "64k")
    monkeypatch.setitem(runner.REGISTRY, Operation.VERIFY, runner.JobKind(fill_disk))
    job = run(runner.create_job(operation=Operation.VERIFY, params={"path": str(full / "big")}))
    assert (job.status, job.error_code) == (Status.FAILED, "no_space"), job.error_message
    assert "is full (No space left on device)" in job.error_message


def test_a_disk_image_gone_when_the_engine_opens_it_is_disk_not_found(tmp_path):
    """Between the connector's check and the engine's read (or in a replace-disks restore's
    safety backup), a vanished image is named as such too, not as an unreadable source."""
    import engine
    from jobs.backup import engine_error

    w = World(tmp_path)
    gone = tmp_path / "gone.img"
    request = engine.BackupRequest(
        store=w.snapshot_store(), disks=[engine.DiskSource(-1, str(gone))], vm_name="vm"
    )
    with pytest.raises(engine.SourceUnreadable) as raised:
        engine.backup(request)
    error = engine_error(raised.value)
    assert (error.code, str(gone) in error.message) == ("disk_not_found", True)
