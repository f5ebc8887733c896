"""Exceptions raised by the engine: one class per failure kind, all under EngineError."""

from __future__ import annotations

from dataclasses import dataclass


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class KeyUnavailable(EngineError):
    """A key-encryption key is missing, unreadable or malformed."""


class WrongKey(KeyUnavailable):
    """A key was readable but does not unwrap this store's keys."""


class KeyMismatch(EngineError):
    """Two stores do not share the same vault keys (transfer needs identical keys)."""


class StoreNotFound(EngineError):
    """No initialised store at the given path."""


class StoreUnavailable(EngineError):
    """The service holding a store (S3, Azure Blob) could not be reached or failed a request;
    the message names the store's location and the cause."""


class StoreExists(EngineError):
    """init_store was asked to create a store where one already exists."""


class RecoveryPointNotFound(EngineError):
    """The recovery point does not exist in this store."""


class RecoveryPointExists(EngineError):
    """A recovery point with this id is already committed in the store."""


class ParentMissing(EngineError):
    """The parent recovery point of an incremental backup is absent (or vanished)."""


class SourceUnreadable(EngineError):
    """A disk source could not be opened or read."""


class TargetUnwritable(EngineError):
    """A restore target could not be created or written."""


class TargetChanged(TargetUnwritable):
    """A restore target is no longer what its caller checked: a directory on its path became
    a symlink, or its name was taken by (or swapped for) another file."""


class Cancelled(EngineError):
    """The operation was cancelled by the caller; nothing was committed."""


class StoreBusy(EngineError):
    """The store lock could not be acquired in time."""


@dataclass(frozen=True)
class Damage:
    """One damaged item: where it is used (rp, lun, offset) and what is wrong."""

    rp_id: str | None
    lun: int | None
    offset: int | None
    kind: str  # "chunk", "index", "manifest"
    reason: str
    chunk_id: str | None = None

    def __str__(self) -> str:
        where = f"rp={self.rp_id} lun={self.lun} offset={self.offset}"
        cid = f" chunk={self.chunk_id}" if self.chunk_id else ""
        return f"{self.kind} damaged at {where}{cid}: {self.reason}"


class CorruptionError(EngineError):
    """Stored data failed a checksum, authentication or id check."""

    def __init__(self, message: str, details: list[Damage] | None = None) -> None:
        super().__init__(message)
        self.details: list[Damage] = list(details or [])

    def __str__(self) -> str:
        base = super().__str__()
        if not self.details:
            return base
        return base + "; " + "; ".join(str(d) for d in self.details[:5])


class DiskNotFound(RecoveryPointNotFound):
    """The recovery point has no disk with the requested LUN."""
