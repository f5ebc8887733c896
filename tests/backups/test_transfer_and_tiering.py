"""A failed vault transfer leaves a good snapshot; retries with backoff; tiering afterwards."""

from datetime import timedelta

import pytest
from django.utils import timezone

import engine
from jobs import runner, tasks
from jobs.backup_queue import enqueue_pending_transfers
from jobs.models import Job, Operation, Status
from tests.backups.conftest import World, aside, needs_e2fsprogs, run, same_bytes
from vaults.models import RecoveryPoint

pytestmark = [needs_e2fsprogs, pytest.mark.django_db(transaction=True)]


def transfer_jobs():
    return Job.objects.filter(operation=Operation.TRANSFER)


def test_transfer_failure_retry_and_tiering(tmp_path, settings):
    w = World(tmp_path, freeze_command="true", thaw_command="true")
    expected = aside(w.images[-1], "now")
    settings.LIFEBOAT = {**settings.LIFEBOAT, "FAIL_TRANSFERS": True, "GC_GRACE_SECONDS": 0}

    # 1. The snapshot succeeds, the transfer fails: completed with warnings, RP stays snapshot.
    job = run(w.backup_now())
    assert job.status == Status.COMPLETED_WITH_WARNINGS
    assert [x["code"] for x in job.warnings] == ["transfer_failed"]
    snap_sub, transfer_sub = job.subtasks.order_by("order")
    assert (snap_sub.status, transfer_sub.status) == (Status.COMPLETED, Status.FAILED)
    rp = RecoveryPoint.objects.get()
    assert (rp.type, rp.transfer_due, rp.transfer_attempts) == ("snapshot", True, 1)
    assert engine.list_recovery_points(w.vault_store()) == []
    # Instant restore works from the snapshot tier meanwhile.
    assert same_bytes(w.restore(w.snapshot_store(), rp.pk, -1), expected)

    # 2. Tiering never drops a snapshot whose transfer is still due.
    late = rp.snapshot_expires_at + timedelta(minutes=1)
    run_cleanup(late)
    rp.refresh_from_db()
    assert rp.type == "snapshot"
    assert [r.rp_id for r in engine.list_recovery_points(w.snapshot_store())] == [str(rp.pk)]

    # 3. Retries wait for the backoff: 5 minutes after the first attempt, then 10 …
    first = rp.last_transfer_at
    assert enqueue_pending_transfers(first + timedelta(minutes=4)) == 0
    assert enqueue_pending_transfers(first + timedelta(minutes=6)) == 1
    assert enqueue_pending_transfers(first + timedelta(minutes=6)) == 0  # one at a time
    retry = run(transfer_jobs().get())
    assert (retry.status, retry.error_code) == (Status.FAILED, "transfer_failed")
    rp.refresh_from_db()
    assert (rp.type, rp.transfer_attempts) == ("snapshot", 2)
    second = rp.last_transfer_at
    assert enqueue_pending_transfers(second + timedelta(minutes=9)) == 0

    # 4. The vault store is back: the dispatcher's tick starts a transfer that succeeds.
    settings.LIFEBOAT = {**settings.LIFEBOAT, "FAIL_TRANSFERS": False}
    assert tasks.dispatch(now=second + timedelta(minutes=11)) == {
        "backups": 0,
        "transfers": 1,
        "replications": 0,
    }
    retry = run(transfer_jobs().get(status=Status.QUEUED))
    assert (retry.status, retry.warnings) == (Status.COMPLETED, []), retry.error_message
    assert retry.recovery_point_id == rp.pk
    rp.refresh_from_db()
    assert (rp.type, rp.transfer_due) == ("snapshot_and_vault", False)
    assert enqueue_pending_transfers(timezone.now() + timedelta(days=1)) == 0

    # 5. After the instant-restore days, tiering removes the snapshot copy: type vault.
    run_cleanup(late)
    rp.refresh_from_db()
    assert rp.type == "vault"
    assert engine.list_recovery_points(w.snapshot_store()) == []
    assert same_bytes(w.restore(w.vault_store(), rp.pk, -1), expected)


def run_cleanup(now):
    assert tasks.cleanup(now=now) == 1
    job = run(Job.objects.get(operation=Operation.CLEANUP, status=Status.QUEUED))
    assert job.status == Status.COMPLETED, job.error_message
    return job


def test_a_cleanup_is_not_enqueued_twice(tmp_path):
    w = World(tmp_path)
    run(w.backup_now())
    assert tasks.cleanup() == 1
    assert tasks.cleanup() == 0
    runner.request_cancel(Job.objects.get(operation=Operation.CLEANUP))
    assert tasks.cleanup() == 1
