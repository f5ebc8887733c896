"""Backup: read disks, detect changes, store new chunks, commit indexes then the manifest."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

from .delta import DeltaMaker
from .entropy import judge
from .errors import (
    CorruptionError,
    EngineError,
    ParentMissing,
    RecoveryPointExists,
    RecoveryPointNotFound,
    SourceUnreadable,
)
from .formats import ZERO_DIGEST, ChunkDamaged, DiskIndex, chunk_id, file_digest, is_zero
from .keys import KeySet
from .model import (
    BackupRequest,
    BackupResult,
    CancelFn,
    DiskSource,
    DiskStats,
    ProgressFn,
    SourceReader,
)
from .pipeline import (
    ExtentCursor,
    Throttle,
    data_extents,
    default_threads,
    normalise_extents,
    round_robin,
    run_bounded,
)
from .store import Store, Syncer, Uploader, iso, utcnow

# What became of one chunk: "hole" (not read: no data there), "reused" (not read: outside the
# changed-extents hint, the parent's chunk stands), "zero" (read, all zeros), "same" (read,
# as in the parent), "dup" (read, already in the store or claimed by another chunk of this
# backup), "new" (read and written to the store).
_T = TypeVar("_T")

ChunkKind = Literal["hole", "reused", "zero", "same", "dup", "new"]

# A changed chunk of an incremental with a changed-extents hint is built from its parent's
# chunk (read from the store, checked against its id) with only the changed extents read from
# the source over it, when those are at most this share of the chunk: 64 KiB writes scattered
# over a disk dirty 1 MiB chunks that are mostly as they were, and reading the whole chunk
# from the source (NBD, from a running VM) was the incremental's cost (bench/README.md,
# "Changed-block tracking"). It trusts the hint as far as skipping an unchanged chunk already
# does: the parent's bytes stand wherever the hint says nothing changed.
OVERLAY_SHARE = 0.5

# Manifest disk fields that the disk entry itself already names (not repeated from the stats).
_DISK_FIELDS = {"lun", "size", "chunk_size", "chunks_total"}
# The ransomware signal's figures go to the caller only (the catalog keeps them), not the
# manifest.
_SIGNAL_FIELDS = {"chunks_changed", "bytes_new", "bytes_new_incompressible", "entropy"}


@dataclass
class _DiskBackup:
    """One disk of a backup: the open source, what the parent holds, and the running totals."""

    src: DiskSource
    source: SourceReader
    size: int
    chunk_size: int
    parent: DiskIndex | None
    method: str
    data: list[tuple[int, int]]  # (start, end) of the source's data extents; the rest is holes
    hint: list[tuple[int, int]] | None  # (start, end) changed since the parent, if known
    digests: bytearray = field(init=False)
    bytes_read: int = 0
    bytes_changed: int = 0
    bytes_stored: int = 0
    chunks_new: int = 0
    chunks_zero: int = 0
    chunks_hashed: int = 0
    chunks_delta: int = 0
    bytes_saved: int = 0
    chunks_changed: int = 0
    bytes_new: int = 0
    bytes_new_incompressible: int = 0
    entropy_total: float = 0.0
    entropy_samples: int = 0
    dirs: set[Path] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.digests = bytearray(self.count * 32)

    @property
    def count(self) -> int:
        return DiskIndex.chunks_for(self.size, self.chunk_size)

    def chunk_len(self, number: int) -> int:
        return min(self.chunk_size, self.size - number * self.chunk_size)

    def parent_digest(self, number: int) -> bytes | None:
        """The parent's digest of this chunk, None where the parent has no such chunk."""
        p = self.parent
        return p.digest(number) if p is not None and number < p.count else None

    def record(self, chunk: _Chunk) -> None:
        self.digests[chunk.number * 32 : chunk.number * 32 + 32] = chunk.digest
        self.bytes_read += chunk.bytes_read
        if chunk.kind in ("zero", "hole"):
            self.chunks_zero += 1
        if chunk.kind in ("same", "dup", "new"):
            self.chunks_hashed += 1
        before = self.parent_digest(chunk.number)
        if chunk.digest != (ZERO_DIGEST if before is None else before):
            self.bytes_changed += self.chunk_len(chunk.number)
            self.chunks_changed += 1
        if chunk.kind == "new":
            self.chunks_new += 1
            self.bytes_stored += chunk.bytes_stored
            if chunk.saved is not None:
                self.chunks_delta += 1
                self.bytes_saved += chunk.saved
            self.bytes_new += self.chunk_len(chunk.number)
            self.bytes_new_incompressible += chunk.incompressible
            if chunk.entropy is not None:
                self.entropy_total += chunk.entropy
                self.entropy_samples += 1
            if chunk.chunk_dir is not None:
                self.dirs.add(chunk.chunk_dir)

    def stats(self) -> DiskStats:
        return DiskStats(
            lun=self.src.lun,
            size=self.size,
            chunk_size=self.chunk_size,
            change_detection=self.method,
            bytes_read=self.bytes_read,
            bytes_changed=self.bytes_changed,
            bytes_stored=self.bytes_stored,
            chunks_total=self.count,
            chunks_new=self.chunks_new,
            chunks_zero=self.chunks_zero,
            chunks_hashed=self.chunks_hashed,
            chunks_delta=self.chunks_delta,
            bytes_saved=self.bytes_saved,
            chunks_changed=self.chunks_changed,
            bytes_new=self.bytes_new,
            bytes_new_incompressible=self.bytes_new_incompressible,
            entropy=(
                round(self.entropy_total / self.entropy_samples, 4)
                if self.entropy_samples
                else None
            ),
        )


class _Chunk(NamedTuple):
    """What became of chunk `number` of `disk`."""

    disk: _DiskBackup
    number: int
    digest: bytes
    bytes_read: int
    bytes_stored: int
    kind: ChunkKind
    chunk_dir: Path | None = None  # where a new chunk file went: synced before the commit
    saved: int | None = None  # stored as a delta: the plaintext bytes that saved
    # New chunks of an incremental, for the ransomware signal (engine.entropy): its bytes left
    # after zstd-1; the entropy of its window in bits per byte (None: not judged).
    incompressible: int = 0
    entropy: float | None = None


def backup(
    req: BackupRequest,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    *,
    threads: int | None = None,
) -> BackupResult:
    """Back up req.disks into req.store as a new recovery point and return its statistics.

    With req.parent, each chunk is compared with the parent's index (or, for disks with a
    changed-extents hint, only the hinted extents are read). Nothing becomes visible until the
    manifest is committed; on error or cancel no recovery point exists.
    """
    store = req.store
    keys = store.require_keys()
    started = time.monotonic()
    created = utcnow()
    rp_id = _rp_id(req)
    _check_disks(req)
    threads = threads or default_threads()

    with store.operation("backup", rp_id=rp_id, parent=req.parent):
        if store.has_manifest(rp_id):
            raise RecoveryPointExists(f"recovery point {rp_id} already exists")
        parent_disks = _parent_disks(store, req.parent)
        disks: list[_DiskBackup] = []
        try:
            for src in req.disks:
                disks.append(_open_disk(store, src, req.parent, parent_disks.get(src.lun)))
            _store_chunks(store, keys, disks, progress, cancel, threads, req.retain_until)
        finally:
            for disk in disks:
                _close(disk)
        _commit(store, keys, req, rp_id, created, disks)
    return BackupResult(rp_id, req.parent, [d.stats() for d in disks], time.monotonic() - started)


def _rp_id(req: BackupRequest) -> str:
    """The preset recovery point id in its canonical form, or a new one."""
    if req.rp_id is None:
        return str(uuid.uuid4())
    try:
        return str(uuid.UUID(req.rp_id))
    except ValueError as e:
        raise EngineError(f"rp_id {req.rp_id!r} is not a UUID") from e


def _check_disks(req: BackupRequest) -> None:
    luns = [d.lun for d in req.disks]
    if not req.disks or len(set(luns)) != len(luns):
        raise EngineError("a backup needs at least one disk and distinct LUNs")


def _parent_disks(store: Store, parent: str | None) -> dict[int, dict[str, Any]]:
    """The parent's manifest disk entries by LUN (none for a full backup)."""
    if parent is None:
        return {}
    try:
        body = store.read_manifest(parent)
    except RecoveryPointNotFound as e:
        raise ParentMissing(f"parent recovery point {parent} not found") from e
    return {int(d["lun"]): d for d in body.get("disks", [])}


def _open_disk(
    store: Store, src: DiskSource, parent: str | None, parent_disk: dict[str, Any] | None
) -> _DiskBackup:
    """Open a source disk and decide how its changes are found: against the parent's index,
    if there is a readable one, reading only the hinted extents when a hint is given."""
    source = _open_source(src)
    try:
        size = _reader_call(src, "size", source.size)
        pidx = _parent_index(store, parent, parent_disk)
        data = _reader_call(src, "data extents", source.data_extents)
    except BaseException:
        _close_quietly(source)
        raise
    hint = None
    if pidx is None:
        method = "full"
    elif src.changed_extents is not None:
        method = "changed-extents"
        hint = normalise_extents(src.changed_extents, size)
    else:
        method = "full-read"
    chunk_size = pidx.chunk_size if pidx is not None else store.chunk_size
    return _DiskBackup(src, source, size, chunk_size, pidx, method, data, hint)


def _open_source(src: DiskSource) -> SourceReader:
    """The disk's reader: the source's own (an NBD export) or the file or block device."""
    if src.reader is None:
        return FileReader.open(src.lun, src.path)
    return _reader_call(src, "open", src.reader)


def _reader_call(src: DiskSource, what: str, call: Callable[[], _T]) -> _T:
    """Run a reader call; any failure of a reader becomes SourceUnreadable naming the LUN."""
    try:
        return call()
    except SourceUnreadable:
        raise
    except Exception as e:
        raise SourceUnreadable(f"disk lun {src.lun}: {what} failed: {_why(e)}") from e


def _why(e: BaseException) -> str:
    return e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__


def _close(disk: _DiskBackup) -> None:
    _reader_call(disk.src, "close", disk.source.close)


def _close_quietly(source: SourceReader) -> None:
    with contextlib.suppress(Exception):
        source.close()


class FileReader:
    """A disk file or block device read through one descriptor (pread is thread-safe)."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self._size = size

    @classmethod
    def open(cls, lun: int, path: str) -> FileReader:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            raise SourceUnreadable(f"disk lun {lun}: cannot open {path}: {e.strerror}") from e
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                size = st.st_size
            elif stat.S_ISBLK(st.st_mode):
                size = os.lseek(fd, 0, os.SEEK_END)
            else:
                raise SourceUnreadable(f"disk lun {lun}: {path} is not a file or block device")
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, size)

    def size(self) -> int:
        return self._size

    def pread(self, length: int, offset: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def data_extents(self) -> list[tuple[int, int]]:
        return data_extents(self.fd, self._size)

    def close(self) -> None:
        os.close(self.fd)


def _parent_index(
    store: Store, parent: str | None, parent_disk: dict[str, Any] | None
) -> DiskIndex | None:
    if parent is None or parent_disk is None:
        return None
    try:
        return store.load_index(parent, parent_disk)
    except CorruptionError:
        return None  # a damaged parent index: fall back to reading everything


def _store_chunks(
    store: Store,
    keys: KeySet,
    disks: list[_DiskBackup],
    progress: ProgressFn | None,
    cancel: CancelFn | None,
    threads: int,
    retain_until: datetime | None,
) -> None:
    """Read every disk's chunks on `threads` threads, the disks side by side, storing the new
    ones; returns when every new chunk is durable."""
    throttle = Throttle(
        progress, "backup", sum(d.size for d in disks), disks={d.src.lun: d.size for d in disks}
    )

    def record(chunk: _Chunk) -> None:
        chunk.disk.record(chunk)
        throttle.add(chunk.disk.chunk_len(chunk.number), chunk.disk.src.lun)

    with store.syncer() as syncer:
        reader = _ChunkReader(store, keys, syncer, retain_until)
        run_bounded(
            round_robin([_plan(d, reader.read) for d in disks]),
            record,
            threads=threads,
            window=threads * 3,
            cancel=cancel,
        )
        throttle.finish()
        syncer.wait()


def _plan(
    disk: _DiskBackup, read: Callable[..., _Chunk]
) -> Iterator[Callable[[], _Chunk] | _Chunk]:
    """Each chunk of a disk in order: settled without reading (a hole, or outside the hint and
    as long as the parent's), or a read for the pool."""
    data = ExtentCursor(disk.data)
    hint = ExtentCursor(disk.hint) if disk.hint is not None else None
    p = disk.parent
    for number in range(disk.count):
        off = number * disk.chunk_size
        ln = disk.chunk_len(number)
        if not data.overlaps(off, off + ln):
            yield _Chunk(disk, number, ZERO_DIGEST, 0, 0, "hole")
        elif hint is not None and p is not None and number < p.count and p.chunk_len(number) == ln:
            # The hint speaks for this chunk: the parent has one of the same length.
            if hint.overlaps(off, off + ln):
                yield partial(read, disk, number, off, ln, hint.within(off, off + ln))
            else:
                yield _Chunk(disk, number, p.digest(number), 0, 0, "reused")
        else:
            yield partial(read, disk, number, off, ln)


class _ChunkReader:
    """Reads, identifies and stores chunks on the pool's threads. A chunk id seen twice in one
    backup (on any disk) is stored once: the first thread to claim it writes it."""

    def __init__(
        self,
        store: Store,
        keys: KeySet,
        syncer: Syncer | Uploader,
        retain_until: datetime | None,
    ) -> None:
        self.store = store
        self.keys = keys
        self.syncer = syncer
        self.retain_until = retain_until
        self.claimed: set[bytes] = set()
        self.claim_lock = threading.Lock()
        self.framer = DeltaMaker(store, keys)

    def read(
        self,
        disk: _DiskBackup,
        number: int,
        off: int,
        ln: int,
        changed: list[tuple[int, int]] | None = None,
    ) -> _Chunk:
        """Read, identify and store chunk `number`. `changed`: the hint's extents inside it,
        when the parent has a chunk of the same length there (see OVERLAY_SHARE)."""
        parent = disk.parent_digest(number)
        built = self._overlaid(disk, off, ln, parent, changed) if changed is not None else None
        if built is not None:
            data, got, parent_read = built
        else:
            data, got, parent_read = _pread(disk, off, ln), ln, None
        if is_zero(data):
            return _Chunk(disk, number, ZERO_DIGEST, got, 0, "zero")
        cid = chunk_id(self.keys, data)
        if parent == cid:
            return _Chunk(disk, number, cid, got, 0, "same")
        if not self._claim(cid) or self.store.has_chunk(cid):
            return _Chunk(disk, number, cid, got, 0, "dup")
        framed = self.framer.encode(cid, data, parent, parent_read)
        chunk_dir = self.store.put_chunk(
            cid, framed.blob, self.syncer, retain_until=self.retain_until
        )
        saved = framed.saved if framed.delta else None
        stored = len(framed.blob)
        if disk.parent is None:  # a full backup: the signal judges incrementals only
            return _Chunk(disk, number, cid, got, stored, "new", chunk_dir, saved)
        flat, bits = judge(data)
        return _Chunk(disk, number, cid, got, stored, "new", chunk_dir, saved, flat, bits)

    def _overlaid(
        self,
        disk: _DiskBackup,
        off: int,
        ln: int,
        parent: bytes | None,
        changed: list[tuple[int, int]],
    ) -> tuple[bytes, int, tuple[bytes, bytes] | None] | None:
        """(the chunk, bytes read from the source, the parent chunk's stored bytes and
        plaintext, or None where it was zeros) built as the parent's chunk with the changed
        extents read over it; None where a whole read is the better way: too much changed, a
        store not on this machine (each parent chunk a request), or a parent chunk that cannot
        be read whole and checked."""
        got = sum(end - start for start, end in changed)
        if parent is None or not self.store.is_local or got > OVERLAY_SHARE * ln:
            return None
        parent_read = None
        if parent == ZERO_DIGEST:
            buf = bytearray(ln)  # zeros (or a hole) in the parent: nothing to read
        else:
            try:
                blob = self.store.get_chunk(parent)
                parent_read = (blob, self.store.read_chunk(parent, ln, blob))
            except (OSError, ChunkDamaged):
                return None  # read whole instead; verify reports a damaged parent chunk
            buf = bytearray(parent_read[1])
        for start, end in changed:
            buf[start - off : end - off] = _pread(disk, start, end - start)
        return bytes(buf), got, parent_read

    def _claim(self, cid: bytes) -> bool:
        with self.claim_lock:
            if cid in self.claimed:
                return False
            self.claimed.add(cid)
            return True


def _pread(disk: _DiskBackup, off: int, ln: int) -> bytes:
    data = _reader_call(disk.src, f"read at {off}", partial(disk.source.pread, ln, off))
    if len(data) != ln:
        raise SourceUnreadable(f"disk lun {disk.src.lun}: short read at {off} (source shrank?)")
    return data


def _commit(
    store: Store,
    keys: KeySet,
    req: BackupRequest,
    rp_id: str,
    created: datetime,
    disks: list[_DiskBackup],
) -> None:
    """Make the recovery point visible: chunks are durable, then the indexes are written, then
    (last) the manifest. On failure nothing of it is left but chunks, which GC sweeps."""
    try:
        store.sync_dirs(set().union(*(d.dirs for d in disks)))
        # Chunks this backup found in the store keep the lock of the backup that stored them:
        # it must last as long as this recovery point (before anything references them).
        if store.enforces_retention:
            store.hold_chunks(_referenced(disks), req.retain_until)
        entries = [_write_index(store, rp_id, d, req.retain_until) for d in disks]
        if req.parent is not None and not store.has_manifest(req.parent):
            raise ParentMissing(f"parent recovery point {req.parent} vanished during backup")
        body = {
            "rp_id": rp_id,
            "vm_name": req.vm_name,
            "created": iso(created),
            "completed": iso(utcnow()),
            "parent": req.parent,
            "consistency": req.consistency,
            "retain_until": iso(req.retain_until),
            "tags": list(req.tags),
            "labels": {str(k): str(v) for k, v in req.labels.items()},
            "vault_key_id": keys.vault_key_id,
            "codec": str(store.codec),
            "disks": entries,
        }
        store.commit_manifest(rp_id, body, replace=False)
    except BaseException:
        with contextlib.suppress(Exception):
            if not store.has_manifest(rp_id):
                store.remove_indexes(rp_id)
        raise


def _referenced(disks: list[_DiskBackup]) -> set[bytes]:
    """The distinct stored chunks the recovery point's disks reference."""
    out: set[bytes] = set()
    for disk in disks:
        d = bytes(disk.digests)
        out.update(d[i : i + 32] for i in range(0, len(d), 32))
    out.discard(ZERO_DIGEST)
    return out


def _write_index(
    store: Store, rp_id: str, disk: _DiskBackup, retain_until: datetime | None
) -> dict[str, Any]:
    """Write a disk's index; return its manifest entry."""
    data = DiskIndex(disk.chunk_size, disk.size, disk.digests).to_bytes()
    store.write_index(rp_id, disk.src.lun, data, retain_until=retain_until)
    skip = _DISK_FIELDS | _SIGNAL_FIELDS
    stats = {k: v for k, v in disk.stats().to_json().items() if k not in skip}
    return {
        "lun": disk.src.lun,
        "size": disk.size,
        "chunk_size": disk.chunk_size,
        "chunks": disk.count,
        "index_blake3": file_digest(data),
        "source_path": str(disk.src.path),
        **stats,
    }
