"""The engine's parts of restore drills and the ransomware signal: a file system's own checker
on real images (ext4 by `mkfs.ext4 -d`, FAT by `mkfs.vfat` inside an MBR partition), and the
figures an incremental reports about its new data."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import engine
from engine import fs as efs
from engine.entropy import entropy, judge
from engine.fs.fsck import Signature, check_filesystem, signature
from engine.tests.tools import (
    make_ntfs,
    make_partitioned_ntfs,
    ntfs_break_mft,
    ntfs_zero_boot_sector,
    require_tool,
)

MIB = 1 << 20


def ext4(tmp_path: Path, name: str = "disk.img") -> Path:
    staging = tmp_path / "staging"
    (staging / "docs").mkdir(parents=True)
    (staging / "docs" / "a.txt").write_bytes(b"hello drill\n" * 5000)
    image = tmp_path / name
    subprocess.run(
        [require_tool("mkfs.ext4"), "-q", "-F", "-d", str(staging), str(image), "16M"],
        check=True,
        capture_output=True,
    )
    return image


def test_e2fsck_passes_a_clean_ext4_and_fails_a_damaged_one(tmp_path: Path) -> None:
    require_tool("e2fsck")
    image = ext4(tmp_path)
    result = check_filesystem(image, "ext4")
    assert (result.command, result.ok, result.exit_code) == ("e2fsck -fn", True, 0)
    subprocess.run(
        [require_tool("debugfs"), "-w", "-R", "sif /docs/a.txt links_count 7", str(image)],
        check=True,
        capture_output=True,
    )
    result = check_filesystem(image, "ext4")
    assert result.ok is False and result.exit_code == 4
    assert "ref count" in result.output


def test_fsck_vfat_checks_a_fat_partition_copied_out(tmp_path: Path) -> None:
    mkfs = require_tool("mkfs.vfat")
    require_tool("fsck.vfat")
    require_tool("sfdisk")
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(40 * MIB)
    subprocess.run(
        [require_tool("sfdisk"), "-q", str(disk)], input=b"start=2048, type=c\n", check=True
    )
    part = tmp_path / "part.img"
    with open(part, "wb") as f:
        f.truncate(40 * MIB - MIB)
    subprocess.run([mkfs, "-F", "32", str(part)], check=True, capture_output=True)
    with open(disk, "r+b") as out:
        out.seek(MIB)
        out.write(part.read_bytes())
    with efs.FileByteSource(disk) as source:
        (p,) = efs.list_partitions(source)
        with efs.open_filesystem(source, p.index) as fs:
            fs_type = fs.fs_type
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result = check_filesystem(disk, fs_type, offset=p.start, length=p.length, scratch=scratch)
    assert result.ok is True and result.command == "fsck.vfat -n", result.output
    assert not any(scratch.iterdir())  # the copy of the partition is gone


def test_a_type_without_a_checker_is_not_checked(tmp_path: Path) -> None:
    result = check_filesystem(tmp_path / "x.img", "iso9660")
    assert result.ok is None and "no checker" in result.output


def test_incrementals_report_how_their_new_data_compresses(tmp_path: Path) -> None:
    kek = engine.create_platform_kek(tmp_path / "kek" / "master.key")
    store = engine.init_store(tmp_path / "store", kek, codec="none")
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.write(b"\0" * 16 * MIB)

    def backup(parent: str | None) -> engine.BackupResult:
        return engine.backup(
            engine.BackupRequest(store, [engine.DiskSource(0, str(image))], "vm", parent=parent)
        )

    full = backup(None)
    (stats,) = full.disks
    assert stats.bytes_new_incompressible == 0 and stats.entropy is None  # fulls: not judged
    with open(image, "r+b") as f:
        f.seek(2 * MIB)
        f.write(b"a plain line of a log file\n" * (2 * MIB // 27))
    text = backup(full.rp_id)
    (stats,) = text.disks
    assert stats.chunks_changed == 2 and stats.bytes_new == 2 * MIB
    assert stats.bytes_new_incompressible < 0.05 * stats.bytes_new
    assert stats.entropy is not None and stats.entropy < 5
    with open(image, "r+b") as f:
        f.seek(8 * MIB)
        f.write(os.urandom(4 * MIB))
    rand = backup(text.rp_id)
    (stats,) = rand.disks
    assert stats.chunks_changed == 4 and stats.bytes_new_incompressible >= 0.99 * stats.bytes_new
    assert stats.entropy is not None and stats.entropy > 7.9


def test_entropy_of_known_data() -> None:
    assert entropy(b"") == 0.0 and entropy(b"a" * 100) == 0.0
    assert abs(entropy(bytes(range(256)) * 16) - 8.0) < 1e-9
    small, bits = judge(b"\0" * 8192 + b"ab" * 2048)
    assert bits == 1.0 and small < 200  # the window starts at the data, not the zeros


def test_ntfsfix_and_the_signature_find_a_damaged_ntfs(tmp_path: Path) -> None:
    require_tool("ntfsfix")
    clean = make_ntfs(tmp_path / "ntfs.img", 8, {"/hello.txt": b"hello ntfs\n"})
    assert signature(clean) == Signature("ntfs", "boot sector")
    result = check_filesystem(clean, "ntfs")
    assert (result.command, result.ok, result.exit_code) == ("ntfsfix -n", True, 0), result.output
    with efs.FileByteSource(clean) as source, efs.open_filesystem(source, None) as fs:
        assert fs.fs_type == "ntfs"
    # A zeroed boot sector: the reader sees no file system, the backup boot sector names it
    # and ntfsfix finds the damage.
    no_boot = tmp_path / "no-boot.img"
    no_boot.write_bytes(clean.read_bytes())
    ntfs_zero_boot_sector(no_boot)
    with efs.FileByteSource(no_boot) as source:
        with pytest.raises(efs.UnsupportedFilesystem):
            efs.open_filesystem(source, None)
    assert signature(no_boot) == Signature(
        "ntfs", "backup boot sector (the first sector is not one)"
    )
    result = check_filesystem(no_boot, "ntfs")
    assert result.ok is False and result.exit_code == 1 and "boot" in result.output.lower()
    # A broken $MFT record: ntfsfix refuses the volume.
    no_mft = tmp_path / "no-mft.img"
    no_mft.write_bytes(clean.read_bytes())
    ntfs_break_mft(no_mft)
    result = check_filesystem(no_mft, "ntfs")
    assert result.ok is False and "MFT" in result.output
    # Nothing to name: a disk of zeros, and ext4 by its superblock.
    zeros = tmp_path / "zeros.img"
    zeros.write_bytes(bytes(1 << 20))
    assert signature(zeros) is None
    assert signature(ext4(tmp_path)) == Signature("ext4", "superblock")


def test_a_partitioned_ntfs_is_found_read_and_checked_in_its_partition(tmp_path: Path) -> None:
    require_tool("ntfsfix")
    files = {"/hello.txt": b"hello partitioned ntfs\n"}
    disk = tmp_path / "disk.img"
    offset = make_partitioned_ntfs(disk, 16, files)
    with efs.FileByteSource(disk) as source:
        (p,) = efs.list_partitions(source)
        assert (p.scheme, p.start, p.length) == ("mbr", offset, (15 << 20))
        with efs.open_filesystem(source, p.index) as fs:
            assert fs.fs_type == "ntfs"
            assert b"".join(fs.read_file("/hello.txt")) == files["/hello.txt"]
    assert signature(disk, offset=p.start, length=p.length) == Signature("ntfs", "boot sector")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result = check_filesystem(disk, "ntfs", offset=p.start, length=p.length, scratch=scratch)
    assert (result.command, result.ok) == ("ntfsfix -n", True), result.output
    # The partition's boot sector zeroed: its backup, in the partition's last sector (not the
    # disk's), names the type, and ntfsfix on the partition finds the damage.
    ntfs_zero_boot_sector(disk, offset)
    assert signature(disk, offset=p.start, length=p.length) == Signature(
        "ntfs", "backup boot sector (the first sector is not one)"
    )
    result = check_filesystem(disk, "ntfs", offset=p.start, length=p.length, scratch=scratch)
    assert result.ok is False and "boot" in result.output.lower()
    assert not any(scratch.iterdir())
