"""Public request/result types of the engine API."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from .errors import Damage

if TYPE_CHECKING:
    from .store import Store


class SourceReader(Protocol):
    """A disk read somewhere other than a local file (an NBD export).  ``pread`` is safe to
    call from several threads at once; ``data_extents`` lists (start, end) of the ranges
    that hold data (the rest reads as zeros)."""

    def size(self) -> int: ...

    def pread(self, length: int, offset: int) -> bytes: ...

    def data_extents(self) -> list[tuple[int, int]]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class DiskSource:
    """One disk to back up: a file or block device, with an optional changed-extents hint.

    changed_extents, if given, lists every (offset, length) range written since the parent
    recovery point; chunks outside them are taken from the parent's index without reading.
    ``reader``, when set, opens the disk instead of ``path`` (an NBD export); ``path`` then
    only names it in the manifest.
    """

    lun: int
    path: str
    changed_extents: Sequence[tuple[int, int]] | None = None
    reader: Callable[[], SourceReader] | None = None


@dataclass
class BackupRequest:
    store: Store
    disks: list[DiskSource]
    vm_name: str
    parent: str | None = None
    consistency: str = "crash"
    tags: list[str] = field(default_factory=list)
    retain_until: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)
    rp_id: str | None = None


@dataclass(frozen=True)
class Progress:
    phase: str  # "backup", "restore", "transfer", "verify", "scrub"
    bytes_done: int
    bytes_total: int
    lun: int | None = None
    # Each disk's (lun, bytes done, bytes total) so far, when the phase knows them: the
    # callback is throttled, so the last chunk's lun alone cannot say how far each disk is.
    disks: tuple[tuple[int, int, int], ...] = ()


ProgressFn = Callable[[Progress], None]
CancelFn = Callable[[], bool]


@dataclass(frozen=True)
class DiskStats:
    lun: int
    size: int
    chunk_size: int
    change_detection: str  # "full", "full-read" or "changed-extents"
    bytes_read: int
    bytes_changed: int
    bytes_stored: int
    chunks_total: int
    chunks_new: int
    chunks_zero: int
    chunks_hashed: int
    chunks_delta: int = 0  # of chunks_new, those stored as deltas on the parent's chunk
    bytes_saved: int = 0  # plaintext bytes of those chunks not stored (length - stored size)
    # The ransomware signal's figures (engine.entropy): chunks whose digest differs from the
    # parent's; raw bytes of the new chunks, and what of them zstd-1 could not compress away
    # (incrementals only); the mean entropy of new chunks' windows in bits per byte (None: no
    # new chunk judged).
    chunks_changed: int = 0
    bytes_new: int = 0
    bytes_new_incompressible: int = 0
    entropy: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class BackupResult:
    rp_id: str
    parent: str | None
    disks: list[DiskStats]
    duration: float

    @property
    def bytes_read(self) -> int:
        return sum(d.bytes_read for d in self.disks)

    @property
    def bytes_changed(self) -> int:
        return sum(d.bytes_changed for d in self.disks)

    @property
    def bytes_stored(self) -> int:
        return sum(d.bytes_stored for d in self.disks)

    @property
    def chunks_new(self) -> int:
        return sum(d.chunks_new for d in self.disks)

    @property
    def chunks_delta(self) -> int:
        return sum(d.chunks_delta for d in self.disks)

    @property
    def bytes_saved(self) -> int:
        return sum(d.bytes_saved for d in self.disks)


@dataclass(frozen=True)
class DiskInfo:
    lun: int
    size: int
    chunk_size: int
    chunks: int
    index_blake3: str
    change_detection: str
    bytes_read: int
    bytes_changed: int
    bytes_stored: int
    chunks_new: int


@dataclass(frozen=True)
class RecoveryPoint:
    """A committed recovery point, as its manifest describes it."""

    rp_id: str
    vm_name: str
    created: datetime
    completed: datetime
    parent: str | None
    consistency: str
    retain_until: datetime | None
    tags: list[str]
    labels: dict[str, str]
    disks: list[DiskInfo]
    vault_key_id: str

    @property
    def size(self) -> int:
        return sum(d.size for d in self.disks)


@dataclass(frozen=True)
class RestoreResult:
    rp_id: str
    targets: dict[int, str]
    bytes_written: int
    chunks_zero: int
    duration: float


@dataclass(frozen=True)
class TransferResult:
    rp_id: str
    chunks_copied: int
    bytes_copied: int
    chunks_present: int
    already_present: bool
    duration: float
    # Plaintext bytes of the chunks the destination already held: what it did not need.
    bytes_present: int = 0
    chunks_delta: int = 0  # of chunks_copied, those moved as deltas


@dataclass(frozen=True)
class VerifyReport:
    rps_checked: list[str]
    chunks_checked: int
    damage: list[Damage]
    keyed: bool
    duration: float

    @property
    def ok(self) -> bool:
        return not self.damage


@dataclass(frozen=True)
class GcResult:
    chunks_live: int
    chunks_swept: int
    bytes_swept: int
    chunks_in_grace: int
    temp_files_removed: int
    index_dirs_removed: int
    leases_cleared: int
    duration: float


class Keep(enum.Enum):
    """Sentinel: leave a manifest field unchanged."""

    KEEP = 0


KEEP = Keep.KEEP
