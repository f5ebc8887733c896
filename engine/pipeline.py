"""Bounded parallel execution and extent arithmetic shared by the operations."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from .errors import Cancelled
from .model import CancelFn, Progress, ProgressFn

T = TypeVar("T")


def default_threads() -> int:
    env = os.environ.get("LIFEBOAT_ENGINE_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return max(2, min(8, os.cpu_count() or 2))


_heap_kept = False


def keep_heap() -> None:
    """Keep freed chunk buffers on the heap instead of handing them back to the kernel.

    glibc serves 1 MiB buffers with mmap (or trims the heap after each free), so every chunk
    faulted fresh, zeroed pages in: about 3 page faults per KiB restored, which cost more than
    decrypting and hashing (bench/README.md, "Restore"). The pipeline is bounded, so what is
    kept is the memory it already peaked at. A no-op where glibc's mallopt is missing."""
    global _heap_kept
    if _heap_kept:
        return
    _heap_kept = True
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 64 << 20)
    libc.mallopt(m_trim_threshold, 256 << 20)


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing [offset, offset + length) of a file to disk without waiting for it, so a
    later fsync finds little left to do. Best effort: a no-op where the kernel or the file
    system lacks sync_file_range (the fsync still writes everything)."""
    if _sync_file_range is not None and length > 0:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


_SYNC_FILE_RANGE_WAIT_BEFORE, _SYNC_FILE_RANGE_WAIT_AFTER = 1, 4


def write_behind(fd: int, start: tuple[int, int], written: tuple[int, int] | None) -> None:
    """Start writing the range `start` (offset, length) of a file to disk, and wait for the
    earlier range `written`, whose writeback was started before, to be on disk and drop it
    from the page cache: a file written once (a restored disk) then streams through a
    bounded part of the cache while the kernel keeps many writes in flight. Best effort, like
    start_writeback: the final fsync writes whatever this missed."""
    start_writeback(fd, *start)
    if written is None or _sync_file_range is None or written[1] <= 0:
        return
    flags = _SYNC_FILE_RANGE_WAIT_BEFORE | _SYNC_FILE_RANGE_WRITE | _SYNC_FILE_RANGE_WAIT_AFTER
    if _sync_file_range(fd, written[0], written[1], flags) == 0:
        os.posix_fadvise(fd, written[0], written[1], os.POSIX_FADV_DONTNEED)


def forget_cached(fd: int) -> None:
    """Drop a file that was written once and synced from the page cache (its pages are clean:
    nothing is lost), so a restore leaves the cache to what the machine was using."""
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


_DIRECT_ALIGN = 4096  # O_DIRECT wants buffer, offset and length aligned to the device's block
_buffers = threading.local()


class AlignedBuffer:
    """`size` bytes at a page-aligned address inside a bytearray. O_DIRECT reads fill it as it
    is (no bounce copy), and the bytearray's own methods scan it in place (`startswith` with
    offsets), which a memoryview cannot do at C speed."""

    def __init__(self, size: int) -> None:
        self.raw = bytearray(size + _DIRECT_ALIGN)
        address = ctypes.addressof(ctypes.c_char.from_buffer(self.raw))
        self.start = -address % _DIRECT_ALIGN  # where the aligned bytes begin in `raw`
        self.size = size
        self.view = memoryview(self.raw)[self.start : self.start + size]
        self.length = 0  # how many bytes it holds now


class BufferPool:
    """Aligned buffers of one size handed from thread to thread (a chunk file read on one
    thread, decoded on another). Buffers are made when none is free and kept for reuse: the
    callers bound how many are out at once."""

    def __init__(self, size: int) -> None:
        self.size = -(-size // _DIRECT_ALIGN) * _DIRECT_ALIGN
        self._free: list[AlignedBuffer] = []
        self._lock = threading.Lock()

    def take(self) -> AlignedBuffer:
        with self._lock:
            if self._free:
                return self._free.pop()
        return AlignedBuffer(self.size)

    def give(self, buf: AlignedBuffer) -> None:
        buf.length = 0
        with self._lock:
            self._free.append(buf)


def _thread_buffer(size: int) -> AlignedBuffer:
    """This thread's aligned buffer of at least `size` bytes (kept: fresh pages for every
    chunk would be faulted in and zeroed, see keep_heap)."""
    buf: AlignedBuffer | None = getattr(_buffers, "buf", None)
    if buf is None or buf.size < size:
        buf = _buffers.buf = AlignedBuffer(max(-(-size // _DIRECT_ALIGN) * _DIRECT_ALIGN, 2 << 20))
    return buf


def read_into(path: str | os.PathLike[str], pool: BufferPool) -> AlignedBuffer | bytes:
    """The bytes of a file that is read once (a chunk file during a restore), in a buffer of
    `pool` (give it back when done), or as bytes when the file is larger than the pool's
    buffers.

    Read through the page cache when all of it is there (a restore right after the backup);
    otherwise with O_DIRECT straight into the aligned buffer, which spares the kernel filling
    the page cache with bytes nobody reads again and copying them out of it (about 40% of the
    CPU time of a cold read, bench/README.md "Restore at disk speed"). Falls back to a plain
    read where the file system refuses O_DIRECT or the kernel cannot tell what is cached."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size > pool.size:
            buf = _thread_buffer(size)
            return bytes(buf.view[: _read_file(fd, size, buf)])
        buf = pool.take()
        try:
            buf.length = _read_file(fd, size, buf)
        except BaseException:
            pool.give(buf)
            raise
        return buf
    finally:
        os.close(fd)


def _read_file(fd: int, size: int, buf: AlignedBuffer) -> int:
    """Read the open file of `size` bytes into `buf` (at least `size` rounded up to 4 KiB);
    returns how many bytes were read (fewer when the file shrank)."""
    end = -(-size // _DIRECT_ALIGN) * _DIRECT_ALIGN
    cached = _cached_pages(fd)
    direct = cached is not None and cached < end // _DIRECT_ALIGN and _set_direct(fd)
    view = buf.view
    pos = 0
    while pos < size:
        try:
            n = os.preadv(fd, [view[pos:end]], pos)
        except OSError as e:
            if not direct or e.errno != errno.EINVAL:
                raise
            # An unaligned position (after a short read) or a refusal: go on
            # through the page cache.
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
            direct = False
            continue
        if n == 0:
            break  # shorter than it was: the caller sees it truncated
        pos += n
    return min(pos, size)


def _set_direct(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
    except OSError:
        return False
    return True


class _CacheStat(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("cache", "dirty", "writeback", "evicted", "recently_evicted")
    ]


class _CacheStatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


# cachestat(2), Linux 6.5+: how many of a file's pages are in the page cache, without reading
# anything (a read with RWF_NOWAIT would start reading ahead what is missing).
_SYS_CACHESTAT = 451 if os.uname().machine in ("x86_64", "aarch64") else None
_libc = ctypes.CDLL(None, use_errno=True)


def _cached_pages(fd: int) -> int | None:
    """Pages of the file in the page cache; None where the kernel cannot say."""
    if _SYS_CACHESTAT is None:
        return None
    rng, st = _CacheStatRange(0, 0), _CacheStat()  # len 0: to the end of the file
    if _libc.syscall(_SYS_CACHESTAT, fd, ctypes.byref(rng), ctypes.byref(st), 0) != 0:
        return None
    return int(st.cache)


def run_bounded(
    tasks: Iterable[Callable[[], T] | T],
    on_result: Callable[[T], None],
    *,
    threads: int,
    window: int,
    cancel: CancelFn | None,
) -> None:
    """Run callables from `tasks` on a pool, at most `window` in flight; non-callables are
    passed straight to on_result. Results are handled in submission order on this thread.
    Checks `cancel` before every submission; on any error waits for in-flight work."""
    keep_heap()
    pending: deque[Future[T]] = deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lifeboat") as pool:
        try:
            for task in tasks:
                if cancel is not None and cancel():
                    raise Cancelled("operation cancelled")
                if callable(task):
                    pending.append(pool.submit(task))
                    while len(pending) >= window:
                        on_result(pending.popleft().result())
                else:
                    while pending and pending[0].done():
                        on_result(pending.popleft().result())
                    on_result(task)
            while pending:
                on_result(pending.popleft().result())
        except BaseException:
            for f in pending:
                f.cancel()
            raise


def round_robin(iterators: Sequence[Iterator[T]]) -> Iterator[T]:
    """Interleave several iterators so disks progress in parallel."""
    live = deque(iterators)
    while live:
        it = live.popleft()
        try:
            yield next(it)
        except StopIteration:
            continue
        live.append(it)


class Throttle:
    """Calls a progress callback at most every `interval` seconds (and always on finish).

    With `disks` (bytes to do per lun) it also counts each disk's bytes, so every call says
    how far each disk is, not only the one whose chunk came last."""

    def __init__(
        self,
        fn: ProgressFn | None,
        phase: str,
        total: int,
        interval: float = 0.1,
        disks: dict[int, int] | None = None,
    ):
        self.fn = fn
        self.phase = phase
        self.total = total
        self.done = 0
        self.interval = interval
        self.last = 0.0
        self.disk_totals = dict(disks or {})
        self.disk_done = dict.fromkeys(self.disk_totals, 0)

    def add(self, n: int, lun: int | None = None) -> None:
        self.done += n
        if lun is not None and lun in self.disk_done:
            self.disk_done[lun] += n
        if self.fn is None:
            return
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.fn(Progress(self.phase, self.done, self.total, lun, self._disks()))

    def finish(self) -> None:
        if self.fn is not None:
            self.fn(Progress(self.phase, self.done, self.total, None, self._disks()))

    def _disks(self) -> tuple[tuple[int, int, int], ...]:
        return tuple((lun, self.disk_done[lun], t) for lun, t in sorted(self.disk_totals.items()))


def normalise_extents(extents: Iterable[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """(offset, length) pairs -> sorted, merged, clipped (start, end) pairs."""
    spans = sorted((max(0, o), min(limit, o + n)) for o, n in extents if n > 0)
    out: list[tuple[int, int]] = []
    for s, e in spans:
        if s >= e:
            continue
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """Data (non-hole) extents of an open file as (start, end) pairs, via SEEK_DATA/SEEK_HOLE.
    Falls back to the whole range where the file system or device does not support it."""
    out: list[tuple[int, int]] = []
    off = 0
    try:
        while off < size:
            try:
                start = os.lseek(fd, off, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # no more data
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            if end > start:
                out.append((start, end))
            off = end
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTTY, errno.ESPIPE):
            return [(0, size)] if size else []
        raise
    return out


class ExtentCursor:
    """Answers 'does [start, end) overlap any extent?' for monotonically increasing queries."""

    def __init__(self, extents: list[tuple[int, int]]) -> None:
        self.extents = extents
        self.i = 0

    def overlaps(self, start: int, end: int) -> bool:
        ex = self.extents
        while self.i < len(ex) and ex[self.i][1] <= start:
            self.i += 1
        return self.i < len(ex) and ex[self.i][0] < end

    def within(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of the extents inside [start, end), clipped to it (same monotonic
        queries as overlaps)."""
        self.overlaps(start, end)
        out = []
        j = self.i
        ex = self.extents
        while j < len(ex) and ex[j][0] < end:
            out.append((max(ex[j][0], start), min(ex[j][1], end)))
            j += 1
        return out
