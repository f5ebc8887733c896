"""What makes restores run at disk speed: zero pages left as holes, writeback started early,
chunk files read once past the page cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine import BackupRequest, DiskSource, Progress, Store, backup, restore
from engine.pipeline import (
    AlignedBuffer,
    BufferPool,
    _cached_pages,
    read_into,
    write_behind,
)
from engine.restore import PAGE, WRITEBACK_STEP, write_data
from engine.tests.tools import same_bytes

CS = 256 << 10


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


@pytest.mark.parametrize(
    "layout",
    [
        [("data", 3 * PAGE)],  # no zero page
        [("zero", 4 * PAGE)],  # nothing to write
        [("zero", PAGE), ("data", 2 * PAGE), ("zero", 3 * PAGE), ("data", PAGE)],
        [("data", PAGE), ("zero", 2 * PAGE), ("data", 100)],  # partial last page
        [("data", PAGE), ("zero", PAGE + 100)],  # a zero partial last page
        # long runs of data, with and without a partial last page
        [("data", 17 * PAGE), ("zero", 2 * PAGE), ("data", 16 * PAGE), ("zero", PAGE)],
        [("zero", 3 * PAGE), ("data", 20 * PAGE + 100)],
    ],
)
@pytest.mark.parametrize("source", ["bytes", "aligned"])
def test_write_data_leaves_zero_pages_as_holes(
    tmp_path: Path, layout: list[tuple[str, int]], source: str
) -> None:
    data = b"".join(os.urandom(n) if kind == "data" else bytes(n) for kind, n in layout)
    given: bytes | AlignedBuffer = data
    if source == "aligned":
        # A reused decode buffer: what lies past `length` is an older chunk's, never written.
        given = AlignedBuffer(len(data) + 3 * PAGE)
        given.view[:] = os.urandom(given.size)
        given.view[: len(data)] = data
        given.length = len(data)
    out = tmp_path / "out.img"
    offset = 8 * PAGE
    fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, offset + len(data) + PAGE)
        write_data(fd, given, offset)
        os.fsync(fd)
        assert os.pread(fd, len(data), offset) == data
        assert os.pread(fd, offset, 0) == bytes(offset)
        assert os.pread(fd, PAGE, offset + len(data)) == bytes(PAGE)
    finally:
        os.close(fd)
    data_pages = sum(
        1 for o in range(0, len(data), PAGE) if data[o : o + PAGE] != bytes(len(data[o : o + PAGE]))
    )
    # Only the pages with data take room (the partial last page counts as one).
    assert _allocated(out) <= (data_pages + (1 if len(data) % PAGE else 0)) * PAGE


def test_zero_pages_inside_chunks_stay_holes(tmp_path: Path, store: Store) -> None:
    disk = tmp_path / "small-extents.img"
    size = 8 << 20
    with open(disk, "wb") as f:
        f.truncate(size)
        for off in range(0, size, 64 << 10):  # every chunk holds data, mostly zeros
            f.seek(off + PAGE)
            f.write(os.urandom(PAGE))
    res = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="small"))
    assert res.disks[0].chunks_zero == 0
    out = tmp_path / "out.img"
    result = restore(store, res.rp_id, {0: out})
    assert same_bytes(disk, out)
    assert result.bytes_written == size  # counted per chunk, as before
    assert _allocated(out) <= size // 8  # 4 KiB of every 64 KiB, not the whole chunks


def test_synced_restore_past_several_writeback_steps(tmp_path: Path, kek: bytes) -> None:
    from engine import init_store

    store = init_store(tmp_path / "vault", kek, chunk_size=1 << 20)
    disk = tmp_path / "disk.img"
    size = 2 * WRITEBACK_STEP + (3 << 20) + 5000  # not a whole number of chunks or pages
    with open(disk, "wb") as f:
        f.truncate(size)
        for off in range(0, size - (1 << 20), 3 << 20):
            f.seek(off)
            f.write(os.urandom(1 << 20))
        f.seek(size - 5000)
        f.write(os.urandom(4000))
    res = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="big"))
    seen: list[Progress] = []
    out = tmp_path / "out.img"
    restore(store, res.rp_id, {0: out}, seen.append, sync=True)
    assert same_bytes(disk, out)
    assert os.stat(out).st_size == size
    assert seen[-1].bytes_done == seen[-1].bytes_total == size
    assert [p.name for p in tmp_path.iterdir() if "lifeboat-restore" in p.name] == []


def _evict(path: Path) -> None:
    """Drop a file's pages from the page cache (written back first: dirty pages stay)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _cached(path: Path) -> int | None:
    """Pages of a file in the page cache (cachestat(2)); None where the kernel cannot say."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return _cached_pages(fd)
    finally:
        os.close(fd)


def test_write_behind_drops_what_is_written_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "out.img"
    step = 4 << 20
    data = os.urandom(3 * step)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if _cached_pages(fd) is None:
            pytest.skip("the kernel cannot tell what is cached (no cachestat)")
        os.pwrite(fd, data, 0)
        assert _cached_pages(fd) == 3 * step // PAGE  # all just written, in the cache
        write_behind(fd, (step, step), None)  # started only: nothing dropped yet
        assert _cached_pages(fd) == 3 * step // PAGE
        write_behind(fd, (2 * step, step), (0, step))  # the first step waited for, dropped
        assert _cached_pages(fd) == 2 * step // PAGE
        write_behind(fd, (3 * step, 0), (step, 2 * step))
        assert _cached_pages(fd) == 0
        assert os.pread(fd, len(data), 0) == data  # what was dropped was on the disk
    finally:
        os.close(fd)


def _direct_io(path: Path) -> bool:
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_DIRECT))
    except OSError:
        return False
    return True


@pytest.mark.parametrize("size", [0, 1, PAGE - 1, PAGE, PAGE + 1, 1 << 20, (1 << 20) + 123])
def test_read_into_cached_cold_and_partly_cached(tmp_path: Path, size: int) -> None:
    path = tmp_path / "chunk"
    data = os.urandom(size)
    path.write_bytes(data)
    pool = BufferPool(1 << 20)

    def read() -> bytes:
        got = read_into(path, pool)
        if isinstance(got, bytes):
            assert size > pool.size  # larger than the pool's buffers: plain bytes
            return got
        out = bytes(got.view[: got.length])
        pool.give(got)
        assert pool.take() is got  # handed back, then reused
        pool.give(got)
        return out

    assert read() == data  # all in the page cache: read from there
    _evict(path)
    assert read() == data  # cold
    if _direct_io(path) and _cached(path) is not None:
        assert _cached(path) == 0  # read past the page cache, not into it
    assert read() == data  # again: still all there
    with open(path, "rb") as f:
        f.read(PAGE)  # the first page (and what the kernel reads ahead) cached
    assert read() == data


def test_aligned_buffer_is_page_aligned() -> None:
    import ctypes

    for size in (PAGE, 1 << 20, 3 * PAGE + 5):
        buf = AlignedBuffer(size)
        address = ctypes.addressof(ctypes.c_char.from_buffer(buf.view))
        assert address % PAGE == 0 and len(buf.view) == size


def test_restore_from_cold_chunk_files(tmp_path: Path, kek: bytes) -> None:
    from engine import init_store

    store = init_store(tmp_path / "vault", kek, chunk_size=256 << 10)
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.write(os.urandom(3 << 20))
        f.write(b"text " * (1 << 18))
        f.truncate(6 << 20)
    res = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="cold"))
    chunks = list(store.iter_chunk_files())
    assert len(chunks) >= 12
    for path in chunks:
        _evict(path)
    out = tmp_path / "out.img"
    restore(store, res.rp_id, {0: out}, sync=True)
    if _direct_io(chunks[0]) and _cached(chunks[0]) is not None:
        assert [_cached(p) for p in chunks] == [0] * len(chunks)
        # and the restored disk, synced, is left out of it (write_behind, forget_cached)
        assert _cached(out) == 0
    assert same_bytes(disk, out)


def test_one_writer_per_target_file_at_a_time(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decode threads take turns at each temp file (the kernel would make them spin for
    its lock), while the disks of a restore are still written side by side."""
    import sys
    import threading
    import time

    restore_module = sys.modules["engine.restore"]  # engine.restore is also the function

    disks = {}
    for lun in (0, 1):
        disks[lun] = tmp_path / f"disk{lun}.img"
        disks[lun].write_bytes(os.urandom(24 * (256 << 10)))
    res = backup(
        BackupRequest(store, [DiskSource(lun, str(p)) for lun, p in disks.items()], vm_name="w")
    )
    guard = threading.Lock()
    writing: dict[int, int] = {}
    most = {"per file": 0, "files": 0}
    real = restore_module.write_data

    def watched(fd: int, data: object, offset: int) -> None:
        with guard:
            writing[fd] = writing.get(fd, 0) + 1
            most["per file"] = max(most["per file"], writing[fd])
            most["files"] = max(most["files"], sum(1 for n in writing.values() if n))
        time.sleep(0.01)  # long enough for another thread to arrive meanwhile
        try:
            real(fd, data, offset)  # type: ignore[arg-type]
        finally:
            with guard:
                writing[fd] -= 1

    monkeypatch.setattr(restore_module, "write_data", watched)
    outs = {lun: tmp_path / f"out{lun}.img" for lun in disks}
    restore(store, res.rp_id, outs, threads=8)
    for lun in disks:
        assert same_bytes(disks[lun], outs[lun])
    assert most["per file"] == 1
    assert most["files"] == 2
