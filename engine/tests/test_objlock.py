"""S3 Object Lock follows retention: chunks reused by a later recovery point, and recovery points
whose retention is extended, get locks that reach the later date (moto server, real requests).

moto's GetObjectRetention is unreliable: locks are read with head_object."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine import (
    BackupRequest,
    DiskSource,
    Store,
    backup,
    gc,
    init_store,
    open_store,
    transfer,
    update_manifest_metadata,
    verify,
)
from engine.backends.objects import ObjectBackend
from engine.formats import ZERO_DIGEST
from engine.store import chunk_key, index_key, manifest_key
from engine.tests.objservers import Server, new_bucket, s3_client, s3_target

CHUNK = 256 << 10


def _days(n: int) -> datetime:
    return (datetime.now(UTC) + timedelta(days=n)).replace(microsecond=0)


def _locked_store(
    srv: Server, kek: bytes, keys_from: Store | None = None
) -> tuple[Store, str, Any]:
    bucket = new_bucket(srv.endpoint, object_lock=True)
    target = s3_target(srv.endpoint, object_lock=True)
    location = f"s3://{bucket}/vault"
    store = init_store(location, kek, target=target, chunk_size=CHUNK, keys_from=keys_from)
    return store, bucket, s3_client(srv.endpoint)


def _chunk_keys(store: Store, rp_id: str) -> list[str]:
    keys = []
    for disk in store.read_manifest(rp_id)["disks"]:
        idx = store.load_index(rp_id, disk)
        for i in range(idx.count):
            if idx.digest(i) != ZERO_DIGEST:
                keys.append(chunk_key(idx.digest(i)))
    return sorted(set(keys))


def _lock(s3: Any, bucket: str, key: str) -> datetime:
    head = s3.head_object(Bucket=bucket, Key=f"vault/{key}")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    until: datetime = head["ObjectLockRetainUntilDate"]
    return until


def _backend(store: Store) -> ObjectBackend:
    assert isinstance(store.backend, ObjectBackend)
    return store.backend


def test_reused_chunks_get_the_later_lock_and_an_unchanged_ledger_costs_nothing(
    tmp_path: Path, moto_server: Server, kek: bytes
) -> None:
    store, bucket, s3 = _locked_store(moto_server, kek)
    disk = tmp_path / "d.img"
    disk.write_bytes(os.urandom(1 << 20))
    first, later = _days(2), _days(40)

    rp1 = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm", retain_until=first))
    keys = _chunk_keys(store, rp1.rp_id)
    assert len(keys) == 4
    assert all(first <= _lock(s3, bucket, k) < later for k in keys)
    versions = {k: s3.head_object(Bucket=bucket, Key=f"vault/{k}")["VersionId"] for k in keys}

    # A second RP of the same data stores nothing new ("dup"): its chunks' locks reach its date.
    rp2 = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm", retain_until=later))
    assert rp2.disks[0].chunks_new == 0
    assert _chunk_keys(store, rp2.rp_id) == keys
    assert all(_lock(s3, bucket, k) >= later for k in keys)
    assert _backend(store).retention_requests() == 4
    # Extended in place: the versions holding the data are the ones locked, none was added.
    for k in keys:
        assert s3.head_object(Bucket=bucket, Key=f"vault/{k}")["VersionId"] == versions[k]
        with pytest.raises(Exception) as ei:
            s3.delete_object(Bucket=bucket, Key=f"vault/{k}", VersionId=versions[k])
        assert "AccessDenied" in str(ei.value) or "locked" in str(ei.value).lower()

    # The same date again, and an earlier one, from a fresh handle (the ledger is read from
    # the store): no retention request, no HEAD per chunk.
    again = open_store(store.location, kek, target=store.target)
    before = _backend(again).requests()
    for until in (later, first):
        backup(BackupRequest(again, [DiskSource(0, str(disk))], vm_name="vm", retain_until=until))
    assert _backend(again).retention_requests() == 0
    per_backup = (_backend(again).requests() - before) / 2
    assert per_backup < 25, per_backup  # lease, listings, index and manifest: not per chunk
    assert all(_lock(s3, bucket, k) >= later for k in keys)  # never shortened
    assert verify(again).ok


def test_a_lost_ledger_is_read_back_from_the_locks(
    tmp_path: Path, moto_server: Server, kek: bytes
) -> None:
    store, bucket, s3 = _locked_store(moto_server, kek)
    disk = tmp_path / "d.img"
    disk.write_bytes(os.urandom(1 << 20))
    later = _days(40)
    backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm", retain_until=later))
    parts = [i.key for i in store.backend.list("locks/")]
    assert parts
    store.backend.delete_many(parts)

    again = open_store(store.location, kek, target=store.target)
    rp = backup(
        BackupRequest(again, [DiskSource(0, str(disk))], vm_name="vm", retain_until=_days(10))
    )
    # Each lock was read (HEAD) and found long enough: nothing extended, the ledger rebuilt.
    assert _backend(again).retention_requests() == 0
    assert [i.key for i in again.backend.list("locks/")]
    keys = _chunk_keys(again, rp.rp_id)
    assert all(_lock(s3, bucket, k) >= later for k in keys)


def test_extending_an_rp_extends_its_manifest_indexes_and_chunks(
    tmp_path: Path, moto_server: Server, kek: bytes
) -> None:
    store, bucket, s3 = _locked_store(moto_server, kek)
    disk = tmp_path / "d.img"
    disk.write_bytes(os.urandom(1 << 20) + bytes(CHUNK))  # a zero chunk: nothing to lock
    first, later = _days(2), _days(60)
    rp = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm", retain_until=first))
    keys = _chunk_keys(store, rp.rp_id)
    versions = {k: s3.head_object(Bucket=bucket, Key=f"vault/{k}")["VersionId"] for k in keys}

    update_manifest_metadata(store, rp.rp_id, retain_until=later)
    objects = [*keys, index_key(rp.rp_id, 0), manifest_key(rp.rp_id)]
    assert all(_lock(s3, bucket, k) >= later for k in objects)
    assert store.read_manifest(rp.rp_id)["retain_until"].startswith(later.date().isoformat())
    for k in keys:
        with pytest.raises(Exception) as ei:
            s3.delete_object(Bucket=bucket, Key=f"vault/{k}", VersionId=versions[k])
        assert "AccessDenied" in str(ei.value) or "locked" in str(ei.value).lower()

    # A shorter date later is recorded in the manifest but shortens no lock.
    update_manifest_metadata(store, rp.rp_id, retain_until=first)
    assert all(_lock(s3, bucket, k) >= later for k in [*keys, index_key(rp.rp_id, 0)])


def test_a_transfer_extends_the_locks_of_chunks_the_vault_already_has(
    tmp_path: Path, moto_server: Server, kek: bytes
) -> None:
    src = init_store(tmp_path / "snap", kek, chunk_size=CHUNK)
    dst, bucket, s3 = _locked_store(moto_server, kek, keys_from=src)
    disk = tmp_path / "d.img"
    disk.write_bytes(os.urandom(1 << 20))
    first, later = _days(2), _days(40)
    rp1 = backup(BackupRequest(src, [DiskSource(0, str(disk))], vm_name="vm", retain_until=first))
    transfer(src, dst, rp1.rp_id)
    rp2 = backup(
        BackupRequest(
            src, [DiskSource(0, str(disk))], vm_name="vm", parent=rp1.rp_id, retain_until=later
        )
    )
    result = transfer(src, dst, rp2.rp_id)
    assert result.chunks_copied == 0 and result.chunks_present == 4
    assert all(_lock(s3, bucket, k) >= later for k in _chunk_keys(dst, rp2.rp_id))


def test_gc_keeps_the_ledger_to_live_chunks(
    tmp_path: Path, moto_server: Server, kek: bytes
) -> None:
    from engine import delete_recovery_point

    store, bucket, s3 = _locked_store(moto_server, kek)
    disk = tmp_path / "d.img"
    disk.write_bytes(os.urandom(1 << 20))
    rp1 = backup(
        BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm", retain_until=_days(40))
    )
    gone = _chunk_keys(store, rp1.rp_id)
    disk.write_bytes(os.urandom(1 << 20))
    rp2 = backup(
        BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm", retain_until=_days(2))
    )
    delete_recovery_point(store, rp1.rp_id)
    assert gc(store, grace_seconds=0).chunks_swept == 4

    # The ledger names only rp2's chunks now: rp1's, if ever stored again, are read afresh.
    again = open_store(store.location, kek, target=store.target)
    with again.operation("check"):
        known = again._read_lock_ledger()
    assert {chunk_key(bytes.fromhex(h)) for h in known} == set(_chunk_keys(store, rp2.rp_id))
    assert not set(gone) & {chunk_key(bytes.fromhex(h)) for h in known}
