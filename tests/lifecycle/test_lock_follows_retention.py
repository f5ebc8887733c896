"""S3 Object Lock follows a retention that moved later: a policy change that extends the
expiry of a locked vault's recovery points queues an extend_locks job, which extends the
locks of their manifests, indexes and chunks in the vault store and the secondary copy (both
on object-lock buckets of a moto server, real requests). A transfer or a replication made
after the extension locks its copy to the new date; each RP records the date its copies
carry, and the periodic sweep re-queues the job when one was lost. moto's
GetObjectRetention is unreliable: locks are read with head_object."""

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from engine.tests.objservers import (  # noqa: F401  (session fixture)
    S3_CREDS,
    moto_server,
    new_bucket,
    s3_client,
)
from jobs import locks, schedules, tasks
from jobs.backup_queue import TAKE_SNAPSHOT, TRANSFER
from jobs.locks import short_locks
from jobs.models import Job, Operation, Status
from jobs.runner import create_job
from tests.backups.conftest import run
from tests.lifecycle.conftest import DomainOps, needs_e2fsprogs
from vaults.models import Immutability, RecoveryPoint, Replication, StorageTarget
from vaults.stores import store_retain_until

pytestmark = [needs_e2fsprogs]


def _lock(s3: Any, location: str, key: str) -> datetime:
    bucket, prefix = location.removeprefix("s3://").split("/", 1)
    head = s3.head_object(Bucket=bucket, Key=f"{prefix}/{key}")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    until: datetime = head["ObjectLockRetainUntilDate"]
    return until


def _keys(rp: RecoveryPoint) -> list[str]:
    return [f"manifests/{rp.pk}.json", f"indexes/{rp.pk}/-1.idx"]


@pytest.fixture
def locked_lab(lab, monkeypatch, moto_server):  # noqa: F811
    monkeypatch.setenv("T_LOCK_S3_ID", S3_CREDS["access_key_id"])
    monkeypatch.setenv("T_LOCK_S3_SECRET", S3_CREDS["secret_access_key"])
    s3 = StorageTarget.objects.create(
        name="moto-lock",
        kind="s3",
        endpoint=moto_server.endpoint,
        region="us-east-1",
        path_style=True,
        object_lock=True,
        credentials_env={"access_key_id": "T_LOCK_S3_ID", "secret_access_key": "T_LOCK_S3_SECRET"},
    )
    v = lab.vault
    v.store_location = f"s3://{new_bucket(moto_server.endpoint, object_lock=True)}/vault"
    v.storage_target = s3
    v.secondary_location = f"s3://{new_bucket(moto_server.endpoint, object_lock=True)}/copy"
    v.secondary_target = s3
    v.immutability = Immutability.LOCKED
    v.save()
    return lab


def test_extending_retention_extends_the_locks_in_both_copies(locked_lab, moto_server):  # noqa: F811
    lab, vault = locked_lab, locked_lab.vault
    s3 = s3_client(moto_server.endpoint)
    item = lab.protect("web")
    slot = timezone.now().replace(hour=2, minute=0, second=0, microsecond=0) - timedelta(days=1)
    rp = lab.scheduled_backup(item, slot)
    assert rp.in_vault_tier
    replicate = run(Job.objects.get(operation=Operation.REPLICATE))
    assert replicate.status == Status.COMPLETED, replicate.error_message
    first = store_retain_until(vault, rp.expires_at)
    places = (vault.store_location, vault.secondary_location)
    for where in places:
        for key in _keys(rp):
            assert first <= _lock(s3, where, key) < first + timedelta(days=1)

    assert DomainOps().edit_policy(lab.policy, lab.contributor, {"daily": {"days": 90}}) == ("ok",)
    rp.refresh_from_db()
    later = store_retain_until(vault, rp.expires_at)
    assert later > first + timedelta(days=50)
    job = Job.objects.get(operation=Operation.EXTEND_LOCKS)
    assert job.vault == vault and job.params["rps"] == [str(rp.pk)]
    job = run(job)
    assert job.status == Status.COMPLETED, (job.error_message, job.warnings)
    assert job.result == {"recovery_points": 1, "locks_extended": 2}
    for where in places:
        for key in _keys(rp):
            assert _lock(s3, where, key) >= later, (where, key)

    # Run again: every lock already reaches its date, nothing is rewritten.
    again = run(
        create_job(operation=Operation.EXTEND_LOCKS, vault=vault, item=item, params=job.params)
    )
    assert again.status == Status.COMPLETED, again.error_message
    assert again.result == {"recovery_points": 1, "locks_extended": 0}


def test_a_vault_without_object_lock_queues_no_job(lab):
    item = lab.protect("web")
    slot = timezone.now().replace(hour=2, minute=0, second=0, microsecond=0) - timedelta(days=1)
    lab.scheduled_backup(item, slot)
    assert DomainOps().edit_policy(lab.policy, lab.contributor, {"daily": {"days": 90}}) == ("ok",)
    assert not Job.objects.filter(operation=Operation.EXTEND_LOCKS).exists()


# -- new copies and the sweep --------------------------------------------------------------------


def _chunk_keys(s3: Any, location: str) -> list[str]:
    bucket, prefix = location.removeprefix("s3://").split("/", 1)
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/chunks/")
    return [o["Key"].removeprefix(f"{prefix}/") for o in listing.get("Contents", [])]


def _assert_locked(s3: Any, location: str, rp: RecoveryPoint, until: datetime) -> None:
    chunks = _chunk_keys(s3, location)
    assert chunks
    for key in _keys(rp) + chunks:
        assert _lock(s3, location, key) >= until, (location, key)


def _yesterday() -> datetime:
    return timezone.now().replace(hour=2, minute=0, second=0, microsecond=0) - timedelta(days=1)


def _extend_retention(lab, rp: RecoveryPoint) -> datetime:
    """The policy keeps daily RPs 90 days instead of 30: the RP's new stores' date."""
    first = store_retain_until(lab.vault, rp.expires_at)
    assert DomainOps().edit_policy(lab.policy, lab.contributor, {"daily": {"days": 90}}) == ("ok",)
    rp.refresh_from_db()
    later = store_retain_until(lab.vault, rp.expires_at)
    assert later > first + timedelta(days=50)
    return later


def test_a_transfer_after_retention_was_extended_locks_to_the_new_date(
    locked_lab,
    moto_server,  # noqa: F811
    settings,
):
    lab, vault = locked_lab, locked_lab.vault
    s3 = s3_client(moto_server.endpoint)
    item = lab.protect("web")
    # The backup's transfer fails: the RP waits in the snapshot tier with the old date.
    settings.LIFEBOAT = {**settings.LIFEBOAT, "FAIL_TRANSFERS": True}
    backup = run(
        create_job(
            operation=Operation.BACKUP,
            vault=vault,
            item=item,
            params={"slot": _yesterday().isoformat()},
            subtasks=[TAKE_SNAPSHOT, TRANSFER],
        )
    )
    assert backup.status == Status.COMPLETED_WITH_WARNINGS, backup.error_message
    rp = RecoveryPoint.objects.get()
    assert not rp.in_vault_tier and rp.transfer_due

    later = _extend_retention(lab, rp)
    # The extend_locks job queued by the change finds nothing in the vault store yet.
    job = run(Job.objects.get(operation=Operation.EXTEND_LOCKS))
    assert job.result == {"recovery_points": 1, "locks_extended": 0}

    settings.LIFEBOAT = {**settings.LIFEBOAT, "FAIL_TRANSFERS": False}
    transfer = run(create_job(operation=Operation.TRANSFER, vault=vault, params={"rp": str(rp.pk)}))
    assert transfer.status == Status.COMPLETED, (transfer.error_message, transfer.warnings)
    rp.refresh_from_db()
    assert rp.in_vault_tier and rp.vault_locked_until == later
    _assert_locked(s3, vault.store_location, rp, later)
    assert not short_locks(vault).exists()


def test_a_replication_after_retention_was_extended_locks_to_the_new_date(
    locked_lab,
    moto_server,  # noqa: F811
):
    lab, vault = locked_lab, locked_lab.vault
    s3 = s3_client(moto_server.endpoint)
    rp = lab.scheduled_backup(lab.protect("web"), _yesterday())
    assert rp.in_vault_tier and rp.replication == Replication.PENDING
    first = store_retain_until(vault, rp.expires_at)
    assert rp.vault_locked_until == first

    later = _extend_retention(lab, rp)
    job = run(Job.objects.get(operation=Operation.EXTEND_LOCKS))
    assert job.result == {"recovery_points": 1, "locks_extended": 1}  # the vault store only
    rp.refresh_from_db()
    assert rp.vault_locked_until == later and rp.secondary_locked_until is None

    replicate = run(Job.objects.get(operation=Operation.REPLICATE))
    assert replicate.status == Status.COMPLETED, (replicate.error_message, replicate.warnings)
    rp.refresh_from_db()
    assert rp.replication == Replication.REPLICATED and rp.secondary_locked_until == later
    _assert_locked(s3, vault.secondary_location, rp, later)
    assert not short_locks(vault).exists()


@pytest.mark.parametrize("lost", ["deleted", "failed"])
def test_the_sweep_requeues_a_lost_extend_locks_job(locked_lab, moto_server, lost):  # noqa: F811
    lab, vault = locked_lab, locked_lab.vault
    s3 = s3_client(moto_server.endpoint)
    rp = lab.scheduled_backup(lab.protect("web"), _yesterday())
    assert run(Job.objects.get(operation=Operation.REPLICATE)).status == Status.COMPLETED
    rp.refresh_from_db()
    first = store_retain_until(vault, rp.expires_at)
    assert rp.vault_locked_until == rp.secondary_locked_until == first
    assert locks.queue_short_locks() == 0  # every lock reaches its date

    later = _extend_retention(lab, rp)
    queued = Job.objects.get(operation=Operation.EXTEND_LOCKS)
    # While that job is unfinished the sweep leaves the vault alone: one job per vault.
    assert locks.queue_short_locks() == 0
    if lost == "deleted":
        queued.delete()
    else:
        Job.objects.filter(pk=queued.pk).update(status=Status.FAILED, error_code="worker_lost")
    assert list(short_locks(vault)) == [rp]

    assert any(p.func == "jobs.tasks.lock_sweep" for p in schedules.PERIODIC)
    assert tasks.lock_sweep() == 1
    assert locks.queue_short_locks() == 0
    job = Job.objects.get(operation=Operation.EXTEND_LOCKS, status=Status.QUEUED)
    assert job.vault == vault and job.params["rps"] == [str(rp.pk)]
    job = run(job)
    assert job.status == Status.COMPLETED, (job.error_message, job.warnings)
    assert job.result == {"recovery_points": 1, "locks_extended": 2}
    rp.refresh_from_db()
    assert rp.vault_locked_until == rp.secondary_locked_until == later
    for where in (vault.store_location, vault.secondary_location):
        _assert_locked(s3, where, rp, later)
    assert tasks.lock_sweep() == 0


def test_the_sweep_records_locks_it_finds_long_enough(locked_lab, moto_server):  # noqa: F811
    """RPs copied before their lock was recorded: one job reads each date, extends nothing."""
    lab, vault = locked_lab, locked_lab.vault
    rp = lab.scheduled_backup(lab.protect("web"), _yesterday())
    RecoveryPoint.objects.filter(pk=rp.pk).update(vault_locked_until=None)
    assert locks.queue_short_locks() == 1
    job = run(Job.objects.get(operation=Operation.EXTEND_LOCKS))
    assert job.result == {"recovery_points": 1, "locks_extended": 0}
    rp.refresh_from_db()
    assert rp.vault_locked_until == store_retain_until(vault, rp.expires_at)
    assert locks.queue_short_locks() == 0


def test_the_sweep_ignores_vaults_without_object_lock(lab):
    lab.scheduled_backup(lab.protect("web"), _yesterday())
    assert locks.queue_short_locks() == 0
