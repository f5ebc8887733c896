"""S3 Object Lock follows a retention that moved later: a policy change that extends the
expiry of a locked vault's recovery points queues an extend_locks job, which extends the
locks of their manifests, indexes and chunks in the vault store and the secondary copy (both
on object-lock buckets of a moto server, real requests). moto's GetObjectRetention is
unreliable: locks are read with head_object."""

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
from jobs.models import Job, Operation, Status
from jobs.runner import create_job
from tests.backups.conftest import run
from tests.lifecycle.conftest import DomainOps, needs_e2fsprogs
from vaults.models import Immutability, RecoveryPoint, StorageTarget
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
