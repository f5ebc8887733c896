"""What makes restores run at disk speed: zero pages left as holes, writeback started early."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine import BackupRequest, DiskSource, Progress, Store, backup, restore
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
    ],
)
def test_write_data_leaves_zero_pages_as_holes(
    tmp_path: Path, layout: list[tuple[str, int]]
) -> None:
    data = b"".join(os.urandom(n) if kind == "data" else bytes(n) for kind, n in layout)
    out = tmp_path / "out.img"
    offset = 8 * PAGE
    fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, offset + len(data) + PAGE)
        write_data(fd, data, offset)
        os.fsync(fd)
        assert os.pread(fd, len(data), offset) == data
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
