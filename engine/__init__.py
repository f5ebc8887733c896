"""Lifeboat block-delta engine: content-addressed, encrypted, deduplicated disk backups.

Django-free. The job runner uses only the names exported here; see FORMAT.md for the on-disk
format. Typical use::

    kek = platform_kek()                       # or load_key_file(customer_key_path)
    store = init_store("/srv/vault", kek)      # once; later: open_store("/srv/vault", kek)
    res = backup(BackupRequest(store, [DiskSource(0, "/dev/vg/vm-disk0")], vm_name="web1"))
    restore(store, res.rp_id, {0: "/tmp/disk0.img"})
"""

from __future__ import annotations

import os

from .backends import ObjectTarget
from .backup import backup
from .errors import (
    Cancelled,
    CorruptionError,
    Damage,
    DiskNotFound,
    EngineError,
    KeyMismatch,
    KeyUnavailable,
    ParentMissing,
    RecoveryPointExists,
    RecoveryPointNotFound,
    SourceUnreadable,
    StoreBusy,
    StoreExists,
    StoreNotFound,
    StoreUnavailable,
    TargetChanged,
    TargetUnwritable,
    WrongKey,
)
from .keys import create_platform_kek, kek_fingerprint, load_key_file, parse_key_bytes, platform_kek
from .maint import (
    delete_recovery_point,
    gc,
    get_recovery_point,
    list_recovery_points,
    rewrap_keys,
    scrub,
    update_manifest_metadata,
    verify,
)
from .model import (
    KEEP,
    BackupRequest,
    BackupResult,
    CancelFn,
    DiskInfo,
    DiskSource,
    DiskStats,
    GcResult,
    Progress,
    ProgressFn,
    RecoveryPoint,
    RestoreResult,
    TransferResult,
    VerifyReport,
)
from .restore import DiskReader, open_disk, restore, restore_temp_files
from .store import DEFAULT_CHUNK_SIZE, DEFAULT_CODEC, Store
from .targets import RestoreTarget, open_directory, open_target_file
from .transfer import transfer


def init_store(
    location: str | os.PathLike[str],
    kek: bytes,
    *,
    codec: str = DEFAULT_CODEC,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    keys_from: str | os.PathLike[str] | Store | None = None,
    target: ObjectTarget | None = None,
) -> Store:
    """Create a store at a local path, s3://bucket/prefix or az://container/prefix (those
    need a target: endpoint and credentials). With keys_from (a vault store, or its path) the
    new store gets that vault's wrapped keys, so chunk ids match and one KEK governs both tiers
    (snapshot tier)."""
    return Store.init(
        location, kek, codec=codec, chunk_size=chunk_size, keys_from=keys_from, target=target
    )


def open_store(
    location: str | os.PathLike[str], kek: bytes, *, target: ObjectTarget | None = None
) -> Store:
    """Open a store with its KEK (StoreNotFound, KeyUnavailable, WrongKey, StoreUnavailable)."""
    return Store.open(location, kek, target=target)


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_CODEC",
    "KEEP",
    "BackupRequest",
    "BackupResult",
    "CancelFn",
    "Cancelled",
    "CorruptionError",
    "Damage",
    "DiskInfo",
    "DiskNotFound",
    "DiskReader",
    "DiskSource",
    "DiskStats",
    "EngineError",
    "GcResult",
    "KeyMismatch",
    "KeyUnavailable",
    "ObjectTarget",
    "ParentMissing",
    "Progress",
    "ProgressFn",
    "RecoveryPoint",
    "RecoveryPointExists",
    "RecoveryPointNotFound",
    "RestoreResult",
    "RestoreTarget",
    "SourceUnreadable",
    "Store",
    "StoreBusy",
    "StoreExists",
    "StoreNotFound",
    "StoreUnavailable",
    "TargetChanged",
    "TargetUnwritable",
    "TransferResult",
    "VerifyReport",
    "WrongKey",
    "backup",
    "create_platform_kek",
    "delete_recovery_point",
    "gc",
    "get_recovery_point",
    "init_store",
    "kek_fingerprint",
    "list_recovery_points",
    "load_key_file",
    "open_directory",
    "open_disk",
    "open_store",
    "open_target_file",
    "parse_key_bytes",
    "platform_kek",
    "restore",
    "restore_temp_files",
    "rewrap_keys",
    "scrub",
    "transfer",
    "update_manifest_metadata",
    "verify",
]
