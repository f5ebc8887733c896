"""A restore's temp file carries its caller's marker, so a killed restore's file is found again
by exactly that marker and no other."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine import BackupRequest, DiskSource, Progress, Store, backup, restore, restore_temp_files


def test_marked_temp_file_is_found_by_its_marker_only(tmp_path: Path, store: Store) -> None:
    disk = tmp_path / "d.img"
    disk.write_bytes(os.urandom(2 << 20))
    rp_id = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm")).rp_id
    target = tmp_path / "out" / "vm-os.img"
    target.parent.mkdir()
    # Files a killed restore of another job, or of an unmarked caller, would have left.
    other = target.parent / f".{target.name}.lifeboat-restore-job71-0123456789"
    unmarked = target.parent / f".{target.name}.lifeboat-restore-0123456789"
    other.write_bytes(b"x")
    unmarked.write_bytes(b"x")
    seen: list[list[Path]] = []

    def progress(p: Progress) -> None:
        seen.append(restore_temp_files(target, "job7"))

    restore(store, rp_id, {0: target}, progress=progress, marker="job7")

    assert target.read_bytes() == disk.read_bytes()
    during = [found for found in seen if found]
    assert during and all(
        len(found) == 1 and found[0].name.startswith(f".{target.name}.lifeboat-restore-job7-")
        for found in during
    )
    assert restore_temp_files(target, "job7") == []
    assert restore_temp_files(target, "job71") == [other]
    assert sorted(p.name for p in target.parent.iterdir()) == sorted(
        [target.name, other.name, unmarked.name]
    )


@pytest.mark.parametrize("marker", ["../x", "a/b", "x" * 41, "job 7"])
def test_a_marker_cannot_leave_the_target_folder(tmp_path: Path, store: Store, marker: str) -> None:
    with pytest.raises(ValueError):
        restore_temp_files(tmp_path / "t.img", marker)
    with pytest.raises(ValueError):
        restore(store, "00000000-0000-0000-0000-000000000000", {}, marker=marker)
