"""Backup: read disks, detect changes, store new chunks, commit indexes then the manifest."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from .errors import (
    CorruptionError,
    EngineError,
    ParentMissing,
    RecoveryPointExists,
    RecoveryPointNotFound,
    SourceUnreadable,
)
from .formats import ZERO_DIGEST, DiskIndex, chunk_id, encode_chunk, file_digest, is_zero
from .model import BackupRequest, BackupResult, CancelFn, DiskSource, DiskStats, ProgressFn
from .pipeline import (
    ExtentCursor,
    Throttle,
    data_extents,
    default_threads,
    normalise_extents,
    round_robin,
    run_bounded,
)
from .store import Syncer, iso, utcnow

# what a worker returns: (job, chunk number, digest, bytes read, bytes stored, kind, dir)
_Result = tuple["_DiskJob", int, bytes, int, int, str, Path | None]


@dataclass
class _DiskJob:
    src: DiskSource
    fd: int
    size: int
    chunk_size: int
    parent: DiskIndex | None
    method: str
    digests: bytearray
    holes: list[tuple[int, int]]
    hint: list[tuple[int, int]] | None
    bytes_read: int = 0
    bytes_changed: int = 0
    bytes_stored: int = 0
    chunks_new: int = 0
    chunks_zero: int = 0
    chunks_hashed: int = 0
    dirs: set[Path] = field(default_factory=set)

    @property
    def count(self) -> int:
        return DiskIndex.chunks_for(self.size, self.chunk_size)

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
        )


def _open_source(src: DiskSource) -> tuple[int, int]:
    try:
        fd = os.open(src.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise SourceUnreadable(f"disk lun {src.lun}: cannot open {src.path}: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            size = st.st_size
        elif stat.S_ISBLK(st.st_mode):
            size = os.lseek(fd, 0, os.SEEK_END)
        else:
            raise SourceUnreadable(f"disk lun {src.lun}: {src.path} is not a file or block device")
    except BaseException:
        os.close(fd)
        raise
    return fd, size


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
    t_created = utcnow()
    rp_id = req.rp_id or str(uuid.uuid4())
    if req.rp_id is not None:
        try:
            rp_id = str(uuid.UUID(req.rp_id))
        except ValueError as e:
            raise EngineError(f"rp_id {req.rp_id!r} is not a UUID") from e
    luns = [d.lun for d in req.disks]
    if not req.disks or len(set(luns)) != len(luns):
        raise EngineError("a backup needs at least one disk and distinct LUNs")
    threads = threads or default_threads()

    with store.operation("backup", rp_id=rp_id, parent=req.parent):
        if store.has_manifest(rp_id):
            raise RecoveryPointExists(f"recovery point {rp_id} already exists")
        parent_body: dict[str, Any] | None = None
        if req.parent is not None:
            try:
                parent_body = store.read_manifest(req.parent)
            except RecoveryPointNotFound as e:
                raise ParentMissing(f"parent recovery point {req.parent} not found") from e
        parent_disks = {int(d["lun"]): d for d in (parent_body or {}).get("disks", [])}

        jobs: list[_DiskJob] = []
        stack = contextlib.ExitStack()
        try:
            for src in req.disks:
                fd, size = _open_source(src)
                pdisk = parent_disks.get(src.lun)
                pidx = None
                if pdisk is not None and req.parent is not None:
                    try:
                        pidx = store.load_index(req.parent, pdisk)
                    except CorruptionError:
                        pidx = None  # a damaged parent index: fall back to reading everything
                cs = pidx.chunk_size if pidx is not None else store.chunk_size
                try:
                    holes = data_extents(fd, size)
                except OSError as e:
                    os.close(fd)
                    raise SourceUnreadable(f"disk lun {src.lun}: {e}") from e
                hint = None
                if pidx is None:
                    method = "full"
                elif src.changed_extents is not None:
                    method = "changed-extents"
                    hint = normalise_extents(src.changed_extents, size)
                else:
                    method = "full-read"
                n = DiskIndex.chunks_for(size, cs)
                jobs.append(
                    _DiskJob(src, fd, size, cs, pidx, method, bytearray(n * 32), holes, hint)
                )

            syncer = stack.enter_context(Syncer())
            claimed: set[bytes] = set()
            claim_lock = threading.Lock()

            def work(job: _DiskJob, i: int, off: int, ln: int) -> _Result:
                try:
                    data = os.pread(job.fd, ln, off)
                except OSError as e:
                    raise SourceUnreadable(
                        f"disk lun {job.src.lun}: read at {off} failed: {e.strerror}"
                    ) from e
                if len(data) != ln:
                    raise SourceUnreadable(
                        f"disk lun {job.src.lun}: short read at {off} (source shrank?)"
                    )
                if is_zero(data):
                    return (job, i, ZERO_DIGEST, ln, 0, "zero", None)
                cid = chunk_id(keys, data)
                if job.parent is not None and i < job.parent.count and job.parent.digest(i) == cid:
                    return (job, i, cid, ln, 0, "same", None)
                with claim_lock:
                    if cid in claimed:
                        return (job, i, cid, ln, 0, "dup", None)
                    claimed.add(cid)
                if store.has_chunk(cid):
                    return (job, i, cid, ln, 0, "dup", None)
                blob = encode_chunk(keys, cid, data, store.codec)
                d = store.put_chunk(cid, blob, syncer)
                return (job, i, cid, ln, len(blob), "new", d)

            def plan(job: _DiskJob) -> Iterator[Callable[[], _Result] | _Result]:
                data_cur = ExtentCursor(job.holes)
                hint_cur = ExtentCursor(job.hint) if job.hint is not None else None
                cs = job.chunk_size
                p = job.parent
                for i in range(job.count):
                    off = i * cs
                    ln = min(cs, job.size - off)
                    if not data_cur.overlaps(off, off + ln):
                        yield (job, i, ZERO_DIGEST, 0, 0, "hole", None)
                    elif (
                        hint_cur is not None
                        and p is not None
                        and i < p.count
                        and p.chunk_len(i) == ln
                        and not hint_cur.overlaps(off, off + ln)
                    ):
                        yield (job, i, p.digest(i), 0, 0, "reused", None)
                    else:
                        yield partial(work, job, i, off, ln)

            throttle = Throttle(progress, "backup", sum(j.size for j in jobs))

            def on_result(r: _Result) -> None:
                job, i, digest, nread, nstored, kind, d = r
                ln = min(job.chunk_size, job.size - i * job.chunk_size)
                job.digests[i * 32 : i * 32 + 32] = digest
                job.bytes_read += nread
                if kind in ("zero", "hole"):
                    job.chunks_zero += 1
                if kind in ("same", "dup", "new"):
                    job.chunks_hashed += 1
                p = job.parent
                if digest != (p.digest(i) if p is not None and i < p.count else ZERO_DIGEST):
                    job.bytes_changed += ln
                if kind == "new":
                    job.chunks_new += 1
                    job.bytes_stored += nstored
                    if d is not None:
                        job.dirs.add(d)
                throttle.add(ln, job.src.lun)

            run_bounded(
                round_robin([plan(j) for j in jobs]),
                on_result,
                threads=threads,
                window=threads * 3,
                cancel=cancel,
            )
            throttle.finish()
            syncer.wait()
        finally:
            stack.close()
            for j in jobs:
                os.close(j.fd)

        # commit: chunks are durable, then indexes, then (last) the manifest
        try:
            store.sync_dirs(set().union(*(j.dirs for j in jobs)))
            disks_json = []
            for j in jobs:
                data = DiskIndex(j.chunk_size, j.size, j.digests).to_bytes()
                store.write_index(rp_id, j.src.lun, data)
                disks_json.append(
                    {
                        "lun": j.src.lun,
                        "size": j.size,
                        "chunk_size": j.chunk_size,
                        "chunks": j.count,
                        "index_blake3": file_digest(data),
                        "source_path": str(j.src.path),
                        **{k: v for k, v in j.stats().to_json().items() if k not in _SKIP},
                    }
                )
            if req.parent is not None and not store.has_manifest(req.parent):
                raise ParentMissing(f"parent recovery point {req.parent} vanished during backup")
            body = {
                "rp_id": rp_id,
                "vm_name": req.vm_name,
                "created": iso(t_created),
                "completed": iso(utcnow()),
                "parent": req.parent,
                "consistency": req.consistency,
                "retain_until": iso(req.retain_until),
                "tags": list(req.tags),
                "labels": {str(k): str(v) for k, v in req.labels.items()},
                "vault_key_id": keys.vault_key_id,
                "codec": str(store.codec),
                "disks": disks_json,
            }
            store.commit_manifest(rp_id, body, replace=False)
        except BaseException:
            if not store.has_manifest(rp_id):
                with contextlib.suppress(OSError):
                    shutil.rmtree(store.index_dir(rp_id))
            raise
    return BackupResult(rp_id, req.parent, [j.stats() for j in jobs], time.monotonic() - started)


_SKIP = {"lun", "size", "chunk_size", "chunks_total"}
