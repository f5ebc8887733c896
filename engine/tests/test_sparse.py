"""Holes and zero chunks, the changed-extents hint, sparse restore, random-access reads."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from engine import BackupRequest, DiskSource, Store, backup, open_disk, restore
from engine.formats import chunk_id as real_chunk_id
from engine.tests.tools import same_bytes

CS = 256 << 10
backup_mod = importlib.import_module("engine.backup")


def _sparse_disk(path: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(32 << 20)  # 128 chunks of 256 KiB, all holes ...
        f.seek(CS * 2)
        f.write(os.urandom(CS))  # ... chunk 2: data
        f.seek(CS * 5)
        f.write(bytes(CS * 3))  # chunks 5-7: written zeros (allocated, not holes)
        f.seek(CS * 10 + 100)
        f.write(b"tail data" * 100)  # chunk 10: partly data


def test_holes_and_zero_chunks_are_not_hashed_or_stored(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = tmp_path / "sparse.img"
    _sparse_disk(disk)
    calls: list[int] = []

    def counting_chunk_id(keys: object, data: bytes) -> bytes:
        calls.append(len(data))
        return real_chunk_id(keys, data)  # type: ignore[arg-type]

    monkeypatch.setattr(backup_mod, "chunk_id", counting_chunk_id)
    res = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="sparse"))
    d = res.disks[0]
    assert d.chunks_total == 128
    assert len(calls) == 2 == d.chunks_hashed  # only chunks 2 and 10
    assert d.chunks_new == 2
    assert d.chunks_zero == 126
    assert d.bytes_read == 5 * CS  # chunks 2, 5, 6, 7, 10: the holes are never read
    chunk_files = list(store.list_chunks())
    assert len(chunk_files) == 2

    out = tmp_path / "out.img"
    restore(store, res.rp_id, {0: out})
    assert same_bytes(disk, out)
    st = os.stat(out)
    assert st.st_size == 32 << 20
    assert st.st_blocks * 512 <= 3 * CS  # only the two data chunks are allocated


def test_changed_extents_hint_reads_only_hinted_chunks(tmp_path: Path, store: Store) -> None:
    disk = tmp_path / "d.img"
    with open(disk, "wb") as f:
        f.write(os.urandom(16 << 20))
    full = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm"))
    with open(disk, "r+b") as f:
        f.seek(CS * 7 + 10)
        f.write(b"changed!" * 10)
        f.seek(CS * 40 - 4)
        f.write(b"spanning")  # crosses the boundary of chunks 39 and 40
    hint = [(CS * 7 + 10, 80), (CS * 40 - 4, 8)]
    inc = backup(
        BackupRequest(
            store, [DiskSource(0, str(disk), changed_extents=hint)], vm_name="vm", parent=full.rp_id
        )
    )
    d = inc.disks[0]
    assert d.change_detection == "changed-extents"
    # A local store: only the changed extents are read, over the parent's chunks; an object
    # store: the three chunks whole (a parent chunk would cost a request each).
    assert d.bytes_read == (80 + 8 if store.is_local else 3 * CS)
    assert d.chunks_new == 3 and d.bytes_changed == 3 * CS
    out = tmp_path / "out.img"
    restore(store, inc.rp_id, {0: out})
    assert same_bytes(disk, out)

    # a full read of the same state finds the same three changed chunks
    again = backup(
        BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm", parent=full.rp_id)
    )
    assert again.disks[0].change_detection == "full-read"
    assert again.disks[0].bytes_changed == 3 * CS and again.disks[0].chunks_new == 0


def test_grown_disk_and_dedup_within_a_disk(tmp_path: Path, store: Store) -> None:
    disk = tmp_path / "d.img"
    block = os.urandom(CS)
    with open(disk, "wb") as f:
        f.write(block * 8)  # eight identical chunks: stored once
    full = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm"))
    assert full.disks[0].chunks_new == 1
    with open(disk, "ab") as f:
        f.write(os.urandom(CS + 123))
    inc = backup(
        BackupRequest(
            store, [DiskSource(0, str(disk), changed_extents=[])], vm_name="vm", parent=full.rp_id
        )
    )
    assert inc.disks[0].size == 9 * CS + 123
    assert inc.disks[0].bytes_read == CS + 123  # only the new tail, even with an empty hint
    out = tmp_path / "out.img"
    restore(store, inc.rp_id, {0: out})
    assert same_bytes(disk, out)


def test_reader_random_access_and_cache(tmp_path: Path, store: Store) -> None:
    disk = tmp_path / "d.img"
    _sparse_disk(disk)
    res = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm"))
    src = disk.read_bytes()
    with open_disk(store, res.rp_id, 0, cache_chunks=2) as rd:
        assert rd.size == len(src)
        assert rd.read_at(0, 1000) == src[:1000]
        assert rd.bytes_fetched == 0  # zero chunks cost nothing
        assert rd.read_at(CS * 2 - 10, 20) == src[CS * 2 - 10 : CS * 2 + 10]
        fetched = rd.bytes_fetched
        assert 0 < fetched < CS + 200
        assert rd.read_at(CS * 2 + 500, 100) == src[CS * 2 + 500 : CS * 2 + 600]
        assert rd.bytes_fetched == fetched  # cache hit
        rd.seek(CS * 10)
        assert rd.read(2000) == src[CS * 10 : CS * 10 + 2000]
        assert rd.tell() == CS * 10 + 2000
        rd.seek(-5, os.SEEK_END)
        assert rd.read() == src[-5:]
        assert rd.read_at(len(src) + 10, 5) == b""


def _hinted(store: Store, disk: Path, parent: str, hint: list[tuple[int, int]]) -> object:
    return backup(
        BackupRequest(
            store, [DiskSource(0, str(disk), changed_extents=hint)], vm_name="vm", parent=parent
        )
    )


def test_changed_extents_are_read_over_the_parents_chunks(tmp_path: Path, kek: bytes) -> None:
    """Scattered small writes: each changed chunk is its parent's chunk with the changed
    extents read over it (stored as a delta on it); a chunk that was zeros in the parent takes
    the extents over zeros; a chunk changed by more than OVERLAY_SHARE is read whole; and a
    parent chunk that cannot be read and checked is never built on."""
    from engine import init_store

    store = init_store(tmp_path / "snap", kek, chunk_size=CS)
    disk = tmp_path / "d.img"
    with open(disk, "wb") as f:
        f.write(os.urandom(16 * CS))
        f.truncate(24 * CS)  # chunks 16-23: a hole in the parent
    full = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm"))
    writes = {
        3 * CS + 4096: os.urandom(8192),  # chunk 3: two pages
        5 * CS + 100: os.urandom(50),  # chunk 5: part of a page
        5 * CS + CS // 2: os.urandom(4096),  # chunk 5 again
        9 * CS: os.urandom(CS * 3 // 4),  # chunk 9: three quarters, read whole
        18 * CS + 8192: os.urandom(4096),  # chunk 18: was a hole
    }
    with open(disk, "r+b") as f:
        for off, data in writes.items():
            f.seek(off)
            f.write(data)
    hint = [(off, len(data)) for off, data in writes.items()]
    inc = _hinted(store, disk, full.rp_id, hint)
    d = inc.disks[0]  # type: ignore[attr-defined]
    assert d.chunks_new == 4
    assert d.bytes_read == 8192 + 50 + 4096 + CS + 4096
    assert d.chunks_delta == 2  # chunks 3 and 5, on the parent's chunks read for them
    out = tmp_path / "out.img"
    restore(store, inc.rp_id, {0: out})  # type: ignore[attr-defined]
    assert same_bytes(disk, out)

    # The first backup's chunk 3 damaged, which the incremental's chunk 3 is a delta on: the
    # next incremental cannot read and check its parent's chunk 3, so it reads the chunk whole
    # (and stores it whole); the result is still right.
    parent3 = store.load_index(full.rp_id, store.read_manifest(full.rp_id)["disks"][0]).digest(3)
    path = store.chunk_path(parent3)
    blob = bytearray(path.read_bytes())
    blob[100] ^= 0xFF
    os.chmod(path, 0o600)
    path.write_bytes(bytes(blob))
    with open(disk, "r+b") as f:
        f.seek(3 * CS + 4096)
        f.write(os.urandom(8192))
    again = _hinted(store, disk, inc.rp_id, [(3 * CS + 4096, 8192)])  # type: ignore[attr-defined]
    assert again.disks[0].bytes_read == CS  # type: ignore[attr-defined]
    assert again.disks[0].chunks_delta == 0  # type: ignore[attr-defined]
    restore(store, again.rp_id, {0: out})  # type: ignore[attr-defined]
    assert same_bytes(disk, out)
