"""Disks read through a SourceReader (an NBD export in production) instead of a file."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from engine import BackupRequest, DiskSource, SourceUnreadable, Store, backup, restore
from engine.model import SourceReader

CS = 256 << 10


class MemoryReader:
    """A disk held in memory; data extents as given; counts reads and closes."""

    def __init__(self, data: bytes, extents: list[tuple[int, int]] | None = None) -> None:
        self.data = data
        self.extents = extents if extents is not None else [(0, len(data))]
        self.reads: list[tuple[int, int]] = []
        self.closed = 0
        self.threads: set[int] = set()
        self.lock = threading.Lock()
        self.fail_at: int | None = None

    def size(self) -> int:
        return len(self.data)

    def pread(self, length: int, offset: int) -> bytes:
        with self.lock:
            self.reads.append((offset, length))
            self.threads.add(threading.get_ident())
        if self.fail_at is not None and offset <= self.fail_at < offset + length:
            raise RuntimeError("export went away")
        return self.data[offset : offset + length]

    def data_extents(self) -> list[tuple[int, int]]:
        return list(self.extents)

    def close(self) -> None:
        self.closed += 1


def _disk(chunks: int) -> bytearray:
    data = bytearray(chunks * CS)
    for n in (1, 4, 9):
        data[n * CS : (n + 1) * CS] = os.urandom(CS)
    return data


def _opener(reader: MemoryReader) -> DiskSource:
    def open_reader() -> SourceReader:
        return reader

    return DiskSource(0, "nbd://vda", reader=open_reader)


def test_reader_disk_backs_up_and_restores(tmp_path: Path, store: Store) -> None:
    data = _disk(12)
    reader = MemoryReader(bytes(data), [(CS, 2 * CS), (4 * CS, 10 * CS)])
    res = backup(BackupRequest(store, [_opener(reader)], vm_name="mem"), threads=3)
    d = res.disks[0]
    assert d.size == len(data) and d.change_detection == "full"
    # Only the data extents are read: chunk 1 and chunks 4..9; the rest are holes.
    assert sorted(o // CS for o, _ in reader.reads) == [1, 4, 5, 6, 7, 8, 9]
    assert d.bytes_read == 7 * CS
    assert reader.closed == 1
    out = tmp_path / "out.img"
    restore(store, res.rp_id, {0: out})
    assert out.read_bytes() == bytes(data)


def test_reader_disk_with_changed_extents_reads_only_them(tmp_path: Path, store: Store) -> None:
    data = _disk(12)
    first = backup(BackupRequest(store, [_opener(MemoryReader(bytes(data)))], vm_name="mem"))
    data[9 * CS + 10 : 9 * CS + 20] = b"x" * 10
    reader = MemoryReader(bytes(data))
    src = DiskSource(0, "nbd://vda", changed_extents=[(9 * CS + 10, 10)], reader=lambda: reader)
    res = backup(BackupRequest(store, [src], vm_name="mem", parent=first.rp_id))
    assert [o // CS for o, _ in reader.reads] == [9]
    assert res.disks[0].change_detection == "changed-extents"
    out = tmp_path / "out.img"
    restore(store, res.rp_id, {0: out})
    assert out.read_bytes() == bytes(data)


def test_reader_errors_name_the_lun(store: Store) -> None:
    reader = MemoryReader(bytes(_disk(12)))
    reader.fail_at = 4 * CS
    with pytest.raises(SourceUnreadable, match=r"disk lun 0: read at \d+ failed: export went"):
        backup(BackupRequest(store, [_opener(reader)], vm_name="mem"))
    assert reader.closed == 1

    def refuse() -> SourceReader:
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(SourceUnreadable, match="disk lun 3: open failed: Connection refused"):
        backup(BackupRequest(store, [DiskSource(3, "nbd://vdb", reader=refuse)], vm_name="m"))


def test_file_disk_still_reads_the_file(tmp_path: Path, store: Store) -> None:
    disk = tmp_path / "d.img"
    disk.write_bytes(bytes(_disk(12)))
    res = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="file"))
    assert res.disks[0].size == 12 * CS
    with pytest.raises(SourceUnreadable, match="cannot open"):
        backup(BackupRequest(store, [DiskSource(0, str(tmp_path / "gone"))], vm_name="file"))
