"""Restore whole disks (sparse, verified, atomic rename) and random-access disk readers."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from .errors import CorruptionError, Damage, DiskNotFound, TargetUnwritable
from .formats import DELTA_OVERHEAD, ZERO_DIGEST, ChunkDamaged, DiskIndex, decode_chunk_into, zeros
from .model import CancelFn, ProgressFn, RestoreResult
from .pipeline import (
    AlignedBuffer,
    BufferPool,
    Throttle,
    default_threads,
    forget_cached,
    read_into,
    round_robin,
    run_bounded,
    write_behind,
)
from .store import Store
from .targets import (
    RestoreTarget,
    check_unchanged,
    convert_to_qcow2,
    create_temp,
    open_target_file,
    put_in_place,
)


def fetch_chunk(
    store: Store,
    cid: bytes,
    expected_len: int,
    where: tuple[str, int, int],
    read: Callable[[], bytes] | None = None,
) -> tuple[bytes, int]:
    """Read and fully verify one chunk; CorruptionError naming (rp, lun, offset) otherwise.
    Returns (plaintext, stored size). `read` returns the stored bytes when they are read
    elsewhere (a read-ahead); by default they are read from the store here."""
    with chunk_damage(cid, where):
        blob = read() if read is not None else store.get_chunk(cid)
        # The store's read path rebuilds a delta on its base (a missing base is damage).
        return store.read_chunk(cid, expected_len, blob), len(blob)
    raise AssertionError("unreachable")  # chunk_damage raises; mypy cannot tell


@contextlib.contextmanager
def chunk_damage(cid: bytes, where: tuple[str, int, int]) -> Iterator[None]:
    """Reading or checking chunk `cid` at `where` (rp, lun, offset) inside: a missing,
    unreadable or damaged chunk becomes a CorruptionError naming the place."""
    rp_id, lun, offset = where
    try:
        yield
        return
    except FileNotFoundError as e:
        reason = "missing"
        cause: Exception = e
    except ChunkDamaged as e:
        reason = str(e)
        cause = e
    except OSError as e:
        reason = f"unreadable: {e.strerror or e}"
        cause = e
    raise CorruptionError(
        f"chunk {cid.hex()[:16]} of rp {rp_id} lun {lun} at offset {offset}: {reason}",
        [Damage(rp_id, lun, offset, "chunk", reason, cid.hex())],
    ) from cause


def _disk_of(body: dict[str, Any], lun: int) -> dict[str, Any]:
    for d in body["disks"]:
        if int(d["lun"]) == lun:
            return dict(d)
    raise DiskNotFound(f"recovery point {body['rp_id']} has no disk with lun {lun}")


_MARKER = re.compile(r"[A-Za-z0-9_]{1,40}")
_TEMP_INFIX = ".lifeboat-restore-"


def _temp_prefix(name: str, marker: str) -> str:
    return f".{name}{_TEMP_INFIX}{marker + '-' if marker else ''}"


def restore_temp_files(target: str | os.PathLike[str], marker: str) -> list[Path]:
    """The temp files that restores given `marker` left beside `target` (a killed process
    cannot remove its own); only names of exactly that form, so another restore's are never
    included."""
    final = Path(target)
    pattern = re.compile(
        re.escape(_temp_prefix(final.name, _check_marker(marker))) + "[0-9a-f]{10}"
    )
    try:
        entries = list(os.scandir(final.parent))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(
        Path(e.path)
        for e in entries
        if pattern.fullmatch(e.name) and e.is_file(follow_symlinks=False)
    )


def _check_marker(marker: str) -> str:
    if marker and not _MARKER.fullmatch(marker):
        raise ValueError("a restore marker is 1-40 letters, digits or underscores")
    return marker


def restore(
    store: Store,
    rp_id: str,
    targets: Mapping[int, str | os.PathLike[str] | RestoreTarget],
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    *,
    sync: bool = True,
    threads: int | None = None,
    marker: str = "",
) -> RestoreResult:
    """Restore the disks of rp_id named in targets ({lun: target}) as sparse files.

    A target is a `RestoreTarget` (an open directory and a name, see `engine.targets`) or a
    path, whose directory is opened as given and whose existing file, if any, is replaced.
    Every chunk is decrypted, authenticated and its keyed id recomputed before it is written.
    Output goes to a temp file beside each target (`.<name>.lifeboat-restore-[<marker>-]<hex>`),
    put in place only when every disk restored completely and no target changed meanwhile
    (TargetChanged); on any error the temp files are removed and targets untouched. A `marker`
    names the caller's work in the temp names, so that what a killed process left is found
    again by `restore_temp_files`.
    """
    started = time.monotonic()
    _check_marker(marker)
    # Decode threads: the cores, and one more for a write that waits. Not more for an object
    # store: its requests are in flight on the read-ahead threads (READ_AHEAD_THREADS), and
    # 16 decode threads on 2 cores only took turns at the target's lock.
    threads = threads or default_threads() + 1
    with contextlib.ExitStack() as owned, store.operation("restore", rp_id=rp_id):
        disks = _disks_to_restore(store, rp_id, targets, owned)
        try:
            for disk in disks:
                disk.create_temp(marker)
            totals = _write_disks(store, rp_id, disks, progress, cancel, threads, sync)
            if sync:
                for disk in disks:
                    os.fsync(disk.fd)
                    forget_cached(disk.fd)
            for disk in disks:
                if disk.target.format == "qcow2":
                    disk.convert(marker)
            _put_in_place(disks, sync)
        finally:
            for disk in disks:
                disk.discard_temp()
    return RestoreResult(
        rp_id,
        {disk.lun: disk.target.shown for disk in disks},
        totals.bytes_written,
        totals.chunks_zero,
        time.monotonic() - started,
    )


@dataclass
class _DiskRestore:
    """One disk of a restore: its index, its target, and the temp file written beside it."""

    lun: int
    target: RestoreTarget
    index: DiskIndex
    temp: str = ""
    fd: int = -1  # the open temp file, once created
    placed: bool = False

    def create_temp(self, marker: str) -> None:
        check_unchanged(self.target)
        self.temp = _temp_prefix(self.target.name, marker) + uuid.uuid4().hex[:10]
        self.fd = create_temp(self.target, self.temp)
        os.ftruncate(self.fd, self.index.disk_size)

    def convert(self, marker: str) -> None:
        """Replace the raw temp file by its qcow2 conversion (a second temp file, named alike so
        that what a killed process leaves is found the same way)."""
        qcow2 = _temp_prefix(self.target.name, marker) + uuid.uuid4().hex[:10]
        new_fd = convert_to_qcow2(self.target.dir_fd, self.temp, qcow2)
        raw, raw_fd = self.temp, self.fd
        self.temp, self.fd = qcow2, new_fd
        with contextlib.suppress(OSError):
            os.close(raw_fd)
        with contextlib.suppress(OSError):
            os.unlink(raw, dir_fd=self.target.dir_fd)

    def discard_temp(self) -> None:
        """Close the temp file and, unless it was put in place, remove it."""
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            os.close(self.fd)
        if not self.placed:
            with contextlib.suppress(OSError):
                os.unlink(self.temp, dir_fd=self.target.dir_fd)


def _disks_to_restore(
    store: Store,
    rp_id: str,
    targets: Mapping[int, str | os.PathLike[str] | RestoreTarget],
    owned: contextlib.ExitStack,
) -> list[_DiskRestore]:
    body = store.read_manifest(rp_id)
    disks = []
    for lun, target in targets.items():
        disk = _disk_of(body, int(lun))
        if not isinstance(target, RestoreTarget):
            target = _path_target(target, owned)
        disks.append(_DiskRestore(int(lun), target, store.load_index(rp_id, disk)))
    return disks


class _Piece(NamedTuple):
    """A chunk's share of a restore: which disk, where it ends, its length, and whether it
    was written (zeros are not: the temp file is sparse)."""

    disk: int
    end: int
    length: int
    written: bool


PAGE = 4096
_ZERO_PAGE = bytes(PAGE)
# Chunk files are read ahead on threads of their own, so several reads are in flight while
# the decode threads (bounded by the cores) work: one read at a time left a cold restore
# waiting on the disk for half its time (bench/README.md, "Restore at disk speed"). Reading
# the 588 chunk files of a 1 GiB image cold took 0.96 s with 8 direct reads in flight and
# 0.80 s with 32; 16 gets most of that for half the buffers.
READ_AHEAD_THREADS = 16
# The restored bytes go through the page cache, and every this many bytes of a disk their
# writeback is started while the step before is waited for and dropped from the cache
# (pipeline.write_behind): the kernel keeps many writes in flight and the final fsync finds
# little left to do. Written with O_DIRECT instead, each write waited for the device on a
# decode thread: restores took 1.3-1.8x as long (bench/README.md, "Restore at disk speed").
WRITEBACK_STEP = 16 << 20


def write_data(fd: int, data: bytes | AlignedBuffer, offset: int) -> None:
    """Write `data` (bytes, or the first `length` bytes of a buffer) at `offset` of a new
    sparse file, leaving its zero pages as holes: they read as zeros already, and writing
    them would cost the disk what cp --sparse saves."""
    if isinstance(data, AlignedBuffer):
        raw: bytes | bytearray = data.raw
        base, n, view = data.start, data.length, data.view
    else:
        raw, base, n, view = data, 0, len(data), memoryview(data)
    pos = 0
    while pos < n:
        # startswith compares in place: no copy of the page, unlike a slice. Its end is
        # clipped to the data: a buffer's bytes past `length` are an older chunk's.
        while pos < n and raw.startswith(_ZERO_PAGE, base + pos, base + min(pos + PAGE, n)):
            pos += PAGE
        start = pos
        while pos < n and not raw.startswith(_ZERO_PAGE, base + pos, base + min(pos + PAGE, n)):
            pos += PAGE
        part = view[start : min(pos, n)]
        at = offset + start
        while part:
            done = os.pwrite(fd, part, at)
            part, at = part[done:], at + done


@dataclass
class _Totals:
    bytes_written: int = 0
    chunks_zero: int = 0


def _write_disks(
    store: Store,
    rp_id: str,
    disks: list[_DiskRestore],
    progress: ProgressFn | None,
    cancel: CancelFn | None,
    threads: int,
    sync: bool,
) -> _Totals:
    """Write every non-zero chunk of every disk into its temp file, the disks side by side.
    With `sync`, writeback starts behind the writes (see WRITEBACK_STEP)."""
    throttle = Throttle(progress, "restore", sum(d.index.disk_size for d in disks))
    totals = _Totals()
    kicked = [0] * len(disks)  # per disk: where writeback was last started up to
    started: list[tuple[int, int] | None] = [None] * len(disks)  # and that last range

    def write(n: int, i: int, stored: Future[AlignedBuffer | bytes]) -> _Piece:
        disk = disks[n]
        idx = disk.index
        off = i * idx.chunk_size
        ln = idx.chunk_len(i)
        out = _decoded(idx.chunk_size)
        _decode(store, idx.digest(i), ln, (rp_id, disk.lun, off), stored, pool, out)
        try:
            with write_locks[n]:
                write_data(disk.fd, out, off)
        except OSError as e:
            raise TargetUnwritable(f"write to restore target failed: {e.strerror}") from e
        return _Piece(n, off + ln, ln, True)

    def pieces(n: int) -> Iterator[Callable[[], _Piece] | _Piece]:
        idx = disks[n].index
        for i in range(idx.count):
            if idx.digest(i) == ZERO_DIGEST:
                ln = idx.chunk_len(i)
                yield _Piece(n, i * idx.chunk_size + ln, ln, False)
            else:
                # The read starts now, when the task is submitted (at most `window` ahead).
                yield partial(write, n, i, reader.submit(get, idx.digest(i)))

    def count(piece: _Piece) -> None:
        if piece.written:
            totals.bytes_written += piece.length
        else:
            totals.chunks_zero += 1
        throttle.add(piece.length)
        # Results come nearly in order (a zero chunk may overtake a chunk still being
        # written), so what lies before `end` is mostly written: start its writeback on a
        # thread of its own (it may wait for the disk). A head start only: the final fsync
        # still writes whatever it missed.
        n = piece.disk
        if sync and piece.end - kicked[n] >= WRITEBACK_STEP:
            step = (kicked[n], piece.end - kicked[n])
            flusher.submit(write_behind, disks[n].fd, step, started[n])
            started[n] = step
            kicked[n] = piece.end

    # Chunk files are read into buffers of this pool and decoded out of them (no copy); a
    # buffer goes back to the pool once its chunk is decrypted.
    pool = BufferPool(max(d.index.chunk_size for d in disks) + DELTA_OVERHEAD)
    # One writer per temp file at a time. The file system takes the file's lock for each
    # buffered write anyway, and its waiters spin for it on a core: a quarter of a restore's
    # CPU when copying into fresh page-cache pages is slow (bench/README.md, "Restore at disk
    # speed"). Waiting here, they sleep and leave the core to decoding.
    write_locks = [threading.Lock() for _ in disks]
    get = _chunk_getter(store, pool)
    reader = ThreadPoolExecutor(READ_AHEAD_THREADS, thread_name_prefix="lifeboat-read")
    flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lifeboat-writeback")
    try:
        run_bounded(
            round_robin([pieces(n) for n in range(len(disks))]),
            count,
            threads=threads,
            window=max(threads * 3, READ_AHEAD_THREADS * 2),
            cancel=cancel,
        )
    finally:
        # On an error the reads not yet started are dropped; writeback is waited for, so
        # it never touches a descriptor the caller is about to close.
        reader.shutdown(wait=True, cancel_futures=True)
        flusher.shutdown(wait=True)
    throttle.finish()
    return totals


def _chunk_getter(store: Store, pool: BufferPool) -> Callable[[bytes], AlignedBuffer | bytes]:
    """How a restore reads stored chunks: a local store's files each once, past the page cache,
    into a buffer of `pool` (pipeline.read_into); an object store's by request. A delta's
    bases are read ahead too (Store.prefetch_bases), on the read-ahead thread."""
    if not store.is_local:
        return store.prefetch_chunk

    def get(cid: bytes) -> AlignedBuffer | bytes:
        blob = read_into(store.chunk_path(cid), pool)
        store.prefetch_bases(blob.view[: blob.length] if isinstance(blob, AlignedBuffer) else blob)
        return blob

    return get


_decode_buffers = threading.local()


def _decoded(chunk_size: int) -> AlignedBuffer:
    """This thread's buffer for decoded chunks: written to the target from where it is."""
    buf: AlignedBuffer | None = getattr(_decode_buffers, "buf", None)
    if buf is None or buf.size < chunk_size:
        buf = _decode_buffers.buf = AlignedBuffer(max(chunk_size, 1 << 20))
    return buf


def _decode(
    store: Store,
    cid: bytes,
    length: int,
    where: tuple[str, int, int],
    stored: Future[AlignedBuffer | bytes],
    pool: BufferPool,
    out: AlignedBuffer,
) -> None:
    """Check and decode the chunk read by `stored` into `out` (its `length` bytes), giving the
    read buffer back to `pool`; CorruptionError naming `where` if it is damaged. A whole chunk
    is decrypted straight into `out`; a delta is rebuilt by the store on its base, then copied
    in."""
    with chunk_damage(cid, where):
        blob = stored.result()
        held = blob if isinstance(blob, AlignedBuffer) else None
        try:
            stored_bytes = blob.view[: blob.length] if isinstance(blob, AlignedBuffer) else blob
            if not decode_chunk_into(store.require_keys(), cid, stored_bytes, length, out.view):
                data = store.read_chunk(cid, length, bytes(stored_bytes))
                out.view[:length] = data
        finally:
            if held is not None:
                pool.give(held)
    out.length = length


def _put_in_place(disks: list[_DiskRestore], sync: bool) -> None:
    # Every target is checked before the first is put in place, so a changed one leaves none
    # of the restore's disks behind.
    for disk in disks:
        check_unchanged(disk.target)
    for disk in disks:
        put_in_place(disk.target, disk.temp)
        disk.placed = True
    if sync:
        for dir_fd in {disk.target.dir_fd for disk in disks}:
            os.fsync(dir_fd)


def _path_target(path: str | os.PathLike[str], owned: contextlib.ExitStack) -> RestoreTarget:
    """A target given as a path: its directory opened as given, an existing regular file
    there replaced (a symlink is refused, never followed)."""
    final = Path(path)
    try:
        dir_fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise TargetUnwritable(f"cannot open {final.parent}: {e.strerror}") from e
    owned.callback(os.close, dir_fd)
    replaces = None
    if os.path.lexists(final):
        replaces = open_target_file(dir_fd, final.name, str(final))
        owned.callback(os.close, replaces)
    return RestoreTarget(dir_fd, final.name, replaces, str(final))


class DiskReader:
    """Random-access, read-only view of one disk of a recovery point.

    File-like (read/seek/tell) plus read_at(offset, n). Chunks are fetched on demand, verified
    and kept in a small LRU cache; bytes_fetched counts stored bytes read from the store.
    """

    def __init__(self, store: Store, rp_id: str, lun: int, cache_chunks: int = 8) -> None:
        self.store = store
        self.rp_id = rp_id
        self.lun = lun
        self._op = store.operation("read", rp_id=rp_id)
        self._op.__enter__()
        try:
            body = store.read_manifest(rp_id)
            self.index = store.load_index(rp_id, _disk_of(body, lun))
        except BaseException:
            self._op.__exit__(None, None, None)
            raise
        self.size = self.index.disk_size
        self.cache: OrderedDict[int, bytes] = OrderedDict()
        self.cache_chunks = max(1, cache_chunks)
        self.bytes_fetched = 0
        self.chunks_fetched = 0
        self.pos = 0
        self.closed = False

    def _chunk(self, i: int) -> bytes:
        hit = self.cache.get(i)
        if hit is not None:
            self.cache.move_to_end(i)
            return hit
        ln = self.index.chunk_len(i)
        cid = self.index.digest(i)
        if cid == ZERO_DIGEST:
            data = zeros(ln)
        else:
            where = (self.rp_id, self.lun, i * self.index.chunk_size)
            data, stored = fetch_chunk(self.store, cid, ln, where)
            self.bytes_fetched += stored
            self.chunks_fetched += 1
        self.cache[i] = data
        if len(self.cache) > self.cache_chunks:
            self.cache.popitem(last=False)
        return data

    def read_at(self, offset: int, n: int) -> bytes:
        if self.closed:
            raise ValueError("reader is closed")
        if offset < 0 or n < 0:
            raise ValueError("negative offset or length")
        end = min(self.size, offset + n)
        cs = self.index.chunk_size
        parts = []
        pos = offset
        while pos < end:
            i = pos // cs
            data = self._chunk(i)
            start = pos - i * cs
            take = min(len(data) - start, end - pos)
            parts.append(data[start : start + take])
            pos += take
        return b"".join(parts)

    pread = read_at

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.pos
        data = self.read_at(self.pos, n)
        self.pos += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.cache.clear()
            self._op.__exit__(None, None, None)

    def __enter__(self) -> DiskReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_disk(store: Store, rp_id: str, lun: int, *, cache_chunks: int = 8) -> DiskReader:
    """Open a random-access reader over one disk of a recovery point (close it when done)."""
    return DiskReader(store, rp_id, lun, cache_chunks)
