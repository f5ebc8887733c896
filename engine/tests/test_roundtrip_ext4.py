"""Round trips on real ext4 images: full, incremental after debugfs writes, via a transfer."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from engine import (
    BackupRequest,
    DiskSource,
    Store,
    backup,
    open_disk,
    restore,
    transfer,
    verify,
)
from engine.tests.tools import debugfs_write, e2fsck_clean, same_bytes


def test_full_incremental_and_transfer_restore_byte_identical(
    tmp_path: Path, store: Store, make_other_store: Callable[..., Store], ext4_image: Path
) -> None:
    e2fsck_clean(ext4_image)
    full = backup(BackupRequest(store, [DiskSource(0, str(ext4_image))], vm_name="web1"))
    assert full.disks[0].change_detection == "full"
    out = tmp_path / "restored-full.img"
    restore(store, full.rp_id, {0: out})
    assert same_bytes(ext4_image, out)
    e2fsck_clean(out)
    full_copy = tmp_path / "full-source.img"
    os.replace(out, full_copy)

    # write new files into the file system with debugfs, then back up incrementally
    for n in range(3):
        local = tmp_path / f"new{n}.bin"
        local.write_bytes(os.urandom(300_000 + n * 1000))
        debugfs_write(ext4_image, local, f"new{n}.bin")
    e2fsck_clean(ext4_image)
    inc = backup(
        BackupRequest(store, [DiskSource(0, str(ext4_image))], vm_name="web1", parent=full.rp_id)
    )
    d = inc.disks[0]
    assert d.change_detection == "full-read"
    assert 900_000 <= d.bytes_changed <= 12 * store.chunk_size
    assert d.chunks_new <= d.bytes_changed // store.chunk_size + 1
    out2 = tmp_path / "restored-inc.img"
    restore(store, inc.rp_id, {0: out2})
    assert same_bytes(ext4_image, out2)
    e2fsck_clean(out2)
    # the full recovery point is still the old image
    restore(store, full.rp_id, {0: out})
    assert same_bytes(full_copy, out)

    # transfer both into a second store of another kind (local -> s3 -> azure -> local)
    second = make_other_store("second", codec="none", keys_from=store)
    t1 = transfer(store, second, full.rp_id)
    t2 = transfer(store, second, inc.rp_id)
    assert t1.chunks_copied > 0 and t2.chunks_present > 0
    assert t2.chunks_copied <= d.chunks_new
    assert transfer(store, second, inc.rp_id).already_present
    out3 = tmp_path / "restored-second.img"
    restore(second, inc.rp_id, {0: out3})
    assert same_bytes(ext4_image, out3)
    e2fsck_clean(out3)
    assert verify(second).ok and verify(store).ok

    # file-level access later: random reads match the image
    with open_disk(second, inc.rp_id, 0) as rd, open(ext4_image, "rb") as src:
        for off in (0, 1024, 5 << 20, (32 << 20) - 100):
            src.seek(off)
            rd.seek(off)
            assert rd.read(4096) == src.read(4096)
        assert rd.bytes_fetched > 0


def test_two_disks_in_parallel_and_selected_restore(
    tmp_path: Path, store: Store, ext4_image: Path
) -> None:
    disk1 = tmp_path / "data.img"
    with open(disk1, "wb") as f:
        f.truncate(8 << 20)
        f.seek(3 << 20)
        f.write(os.urandom(1 << 20))
    res = backup(
        BackupRequest(
            store,
            [DiskSource(0, str(ext4_image)), DiskSource(3, str(disk1))],
            vm_name="db1",
        )
    )
    assert sorted(d.lun for d in res.disks) == [0, 3]
    only = tmp_path / "only-lun3.img"
    restore(store, res.rp_id, {3: only})
    assert same_bytes(disk1, only)
    assert not (tmp_path / "restored-0.img").exists()
