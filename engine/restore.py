"""Restore whole disks (sparse, verified, atomic rename) and random-access disk readers."""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

from .errors import CorruptionError, Damage, DiskNotFound, TargetUnwritable
from .formats import ZERO_DIGEST, ChunkDamaged, DiskIndex, decode_chunk, zeros
from .model import CancelFn, ProgressFn, RestoreResult
from .pipeline import Throttle, default_threads, round_robin, run_bounded
from .store import Store
from .targets import (
    RestoreTarget,
    check_unchanged,
    create_temp,
    open_target_file,
    put_in_place,
)


def fetch_chunk(
    store: Store, cid: bytes, expected_len: int, where: tuple[str, int, int]
) -> tuple[bytes, int]:
    """Read and fully verify one chunk; CorruptionError naming (rp, lun, offset) otherwise.
    Returns (plaintext, stored size)."""
    keys = store.require_keys()
    rp_id, lun, offset = where
    try:
        blob = store.get_chunk(cid)
        return decode_chunk(keys, cid, blob, expected_len), len(blob)
    except FileNotFoundError as e:
        reason = "missing"
        cause: Exception = e
    except ChunkDamaged as e:
        reason = str(e)
        cause = e
    except OSError as e:
        reason = f"unreadable: {e.strerror}"
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
    threads = threads or default_threads() + 1  # one more: writes to the target may block
    with contextlib.ExitStack() as owned, store.operation("restore", rp_id=rp_id):
        body = store.read_manifest(rp_id)
        plan: list[tuple[int, RestoreTarget, DiskIndex]] = []
        for lun, target in targets.items():
            disk = _disk_of(body, int(lun))
            if not isinstance(target, RestoreTarget):
                target = _path_target(target, owned)
            plan.append((int(lun), target, store.load_index(rp_id, disk)))
        temps: list[tuple[RestoreTarget, str, int]] = []  # (target, temp name, fd)
        placed = 0
        try:
            for _lun, target, idx in plan:
                check_unchanged(target)
                tmp = _temp_prefix(target.name, marker) + uuid.uuid4().hex[:10]
                temps.append((target, tmp, create_temp(target, tmp)))
                os.ftruncate(temps[-1][2], idx.disk_size)
            throttle = Throttle(progress, "restore", sum(p[2].disk_size for p in plan))
            written = [0]
            zero_chunks = [0]

            def work(fd: int, lun: int, idx: DiskIndex, i: int) -> tuple[int, int]:
                off = i * idx.chunk_size
                ln = idx.chunk_len(i)
                data, _ = fetch_chunk(store, idx.digest(i), ln, (rp_id, lun, off))
                try:
                    os.pwrite(fd, data, off)
                except OSError as e:
                    raise TargetUnwritable(f"write to restore target failed: {e.strerror}") from e
                return ln, 1

            def tasks(fd: int, lun: int, idx: DiskIndex) -> Iterator[Any]:
                for i in range(idx.count):
                    if idx.digest(i) == ZERO_DIGEST:
                        yield (idx.chunk_len(i), 0)
                    else:
                        yield partial(work, fd, lun, idx, i)

            def on_result(r: tuple[int, int]) -> None:
                ln, real = r
                if real:
                    written[0] += ln
                else:
                    zero_chunks[0] += 1
                throttle.add(ln)

            gens: list[Iterator[Callable[[], tuple[int, int]] | tuple[int, int]]] = [
                tasks(t[2], p[0], p[2]) for t, p in zip(temps, plan, strict=True)
            ]
            run_bounded(
                round_robin(gens), on_result, threads=threads, window=threads * 3, cancel=cancel
            )
            throttle.finish()
            if sync:
                for _target, _tmp, fd in temps:
                    os.fsync(fd)
            # Every target is checked before the first is put in place, so a changed one
            # leaves none of the restore's disks behind.
            for target, _tmp, _fd in temps:
                check_unchanged(target)
            for target, tmp, _fd in temps:
                put_in_place(target, tmp)
                placed += 1
            if sync:
                for dir_fd in {t.dir_fd for t, _tmp, _fd in temps}:
                    os.fsync(dir_fd)
        finally:
            for i, (target, tmp, fd) in enumerate(temps):
                with contextlib.suppress(OSError):
                    os.close(fd)
                if i >= placed:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=target.dir_fd)
    return RestoreResult(
        rp_id,
        {lun: target.shown for lun, target, _ in plan},
        written[0],
        zero_chunks[0],
        time.monotonic() - started,
    )


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
