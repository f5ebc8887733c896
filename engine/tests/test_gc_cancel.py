"""Cancel, parent vanishing mid-backup, GC grace window and in-flight protection."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine import (
    BackupRequest,
    Cancelled,
    DiskSource,
    ParentMissing,
    Progress,
    Store,
    StoreBusy,
    backup,
    delete_recovery_point,
    gc,
    list_recovery_points,
    restore,
    verify,
)
from engine.tests.tools import gc_aged, same_bytes


def _disk(tmp_path: Path, name: str = "d.img", mib: int = 8) -> Path:
    p = tmp_path / name
    p.write_bytes(os.urandom(mib << 20))
    return p


def test_cancel_leaves_no_rp_and_gc_sweeps_the_orphans(tmp_path: Path, store: Store) -> None:
    disk = _disk(tmp_path)
    keep = backup(
        BackupRequest(store, [DiskSource(0, str(_disk(tmp_path, "k.img", 2)))], vm_name="k")
    )
    checks = [0]

    def cancel() -> bool:
        checks[0] += 1
        return checks[0] > 10

    with pytest.raises(Cancelled):
        backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm"), cancel=cancel)
    assert [rp.rp_id for rp in list_recovery_points(store)] == [keep.rp_id]
    assert list(store.list_index_dirs()) == [keep.rp_id]
    assert store.leases() == []
    orphans = len(list(store.list_chunks())) - keep.chunks_new
    assert orphans > 0

    # fresh orphans are inside the grace window
    res = gc(store, grace_seconds=3600)
    assert res.chunks_swept == 0 and res.chunks_in_grace == orphans
    res = gc_aged(store, 7200, 3600)
    assert res.chunks_swept == orphans and res.chunks_live == keep.chunks_new
    assert verify(store).ok
    out = tmp_path / "out.img"
    restore(store, keep.rp_id, {0: out})
    assert same_bytes(tmp_path / "k.img", out)


def test_gc_waits_for_in_flight_operations(tmp_path: Path, store: Store) -> None:
    with store.operation("backup"):
        assert len(store.leases()) == 1
        with pytest.raises(StoreBusy):
            gc(store, 0, wait_seconds=0.2)
    assert gc(store, 0, wait_seconds=0.2).chunks_swept == 0


def test_incremental_refuses_to_commit_when_parent_vanishes(tmp_path: Path, store: Store) -> None:
    disk = _disk(tmp_path)
    parent = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm")).rp_id
    deleted = [False]

    def progress(p: Progress) -> None:
        if not deleted[0] and p.bytes_done > 0:
            delete_recovery_point(store, parent)
            deleted[0] = True

    with pytest.raises(ParentMissing):
        backup(
            BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm", parent=parent),
            progress=progress,
        )
    assert deleted[0]
    assert list_recovery_points(store) == []
    assert list(store.list_index_dirs()) == []


def test_gc_keeps_everything_referenced_after_deletes(tmp_path: Path, store: Store) -> None:
    a_img = _disk(tmp_path, "a.img", 4)
    b_img = tmp_path / "b.img"
    b_img.write_bytes(a_img.read_bytes()[: 2 << 20] + os.urandom(2 << 20))  # shares half
    a = backup(BackupRequest(store, [DiskSource(0, str(a_img))], vm_name="a")).rp_id
    b = backup(BackupRequest(store, [DiskSource(0, str(b_img))], vm_name="b")).rp_id
    delete_recovery_point(store, a)
    res = gc_aged(store, 100, 10)
    assert res.chunks_swept == 8  # a's private half; the shared half stays
    assert verify(store).ok
    out = tmp_path / "out.img"
    restore(store, b, {0: out})
    assert same_bytes(b_img, out)
