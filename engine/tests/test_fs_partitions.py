"""File-level recovery on FAT, NTFS, MBR and GPT disks, and on a 4 GiB (sparse) disk.

Partitioned disks are built without root: sfdisk writes the table into an image file and each
file system is made in its own image (mkfs.ext4 -d, mkfs.vfat + mcopy) and dd'ed into place.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from engine.fs import (
    CountingSource,
    FileByteSource,
    FileSystem,
    PathNotFound,
    UnsupportedFilesystem,
    list_partitions,
    open_filesystem,
)
from engine.tests.test_fs import build_tree, mkfs_ext4
from engine.tests.tools import require_tool

MIB = 1 << 20
SECTOR = 512


# --------------------------------------------------------------------------- builders


def small_tree(root: Path) -> Path:
    """A FAT-friendly tree (no symlinks, no sparse file)."""
    (root / "Ordner mit Grüßen" / "tief").mkdir(parents=True)
    (root / "Ordner mit Grüßen" / "tief" / "notiz.txt").write_bytes(b"tief unten\n")
    (root / "Grüße und Küsse.txt").write_text("Grüße\n", encoding="utf-8")
    (root / "日本語.txt").write_text("日本語\n", encoding="utf-8")
    (root / "data.bin").write_bytes(os.urandom(MIB + 12345))
    (root / "UPPER.TXT").write_bytes(b"short name\n")
    (root / "empty").mkdir()
    return root


def mkfs_vfat(image: Path, src: Path, size_mib: int) -> Path:
    mkfs = require_tool("mkfs.vfat")
    mcopy = require_tool("mcopy")
    image.unlink(missing_ok=True)
    subprocess.run(
        # FAT16 named, not left to mkfs.vfat's size rule: the tests expect one exact type.
        [mkfs, "-C", "-F", "16", "-n", "LIFEBOAT", str(image), str(size_mib * 1024)],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C.UTF-8"}
    for item in sorted(src.iterdir()):
        subprocess.run(
            [mcopy, "-s", "-m", "-i", str(image), str(item), "::/"],
            check=True,
            capture_output=True,
            env=env,
        )
    return image


def sfdisk(disk: Path, script: str) -> None:
    tool = require_tool("sfdisk")
    subprocess.run(
        [tool, "-q", str(disk)], input=script, text=True, check=True, capture_output=True
    )


def dd_into(disk: Path, part_image: Path, start_sector: int) -> None:
    assert start_sector * SECTOR % MIB == 0
    subprocess.run(
        [
            "dd",
            f"if={part_image}",
            f"of={disk}",
            "bs=1M",
            f"seek={start_sector * SECTOR // MIB}",
            "conv=notrunc",
            "status=none",
        ],
        check=True,
    )


def assert_same_tree(fs: FileSystem, src: Path, top: str = "/") -> None:
    """Every file and folder of src is in fs with the same size and bytes, and nothing else."""
    seen: set[str] = set()
    for dirpath, dirs, files in fs.walk(top):
        for e in dirs + files:
            rel = e.path[len(top) :].lstrip("/") if top != "/" else e.path.lstrip("/")
            if rel == "lost+found":
                continue
            seen.add(rel)
            local = src / rel
            assert os.path.lexists(local), (dirpath, e)
            if e.kind == "file":
                assert e.size == local.stat().st_size, e
                assert b"".join(fs.read_file(e.path)) == local.read_bytes(), e
            elif e.kind == "dir":
                assert local.is_dir() and not local.is_symlink(), e
            else:
                assert e.kind == "symlink" and os.readlink(local) == e.target, e
        dirs[:] = [d for d in dirs if d.name != "lost+found"]
    assert seen == {str(p.relative_to(src)) for p in src.rglob("*")}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def fat_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fat-src")
    return small_tree(root)


@pytest.fixture(scope="module")
def ext_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tree(tmp_path_factory.mktemp("ext-src") / "root")


@pytest.fixture(scope="module")
def fat_image(tmp_path_factory: pytest.TempPathFactory, fat_src: Path) -> Path:
    return mkfs_vfat(tmp_path_factory.mktemp("fat") / "fat.img", fat_src, 16)


@pytest.fixture(scope="module")
def part_images(
    tmp_path_factory: pytest.TempPathFactory, ext_src: Path, fat_image: Path
) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("parts")
    ext_a = mkfs_ext4(d / "a.img", ext_src, 16)
    ext_b = mkfs_ext4(d / "b.img", ext_src / "docs", 8)
    return ext_a, fat_image, ext_b


# ext4 16 MiB at 1 MiB, FAT 16 MiB at 17 MiB, ext4 8 MiB at 34 MiB (a logical partition on MBR)
P1, P2, P3 = 2048, 34816, 69632


@pytest.fixture(scope="module")
def mbr_disk(tmp_path_factory: pytest.TempPathFactory, part_images: tuple[Path, ...]) -> Path:
    disk = tmp_path_factory.mktemp("mbr") / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(48 * MIB)
    sfdisk(
        disk,
        "label: dos\n"
        f"start={P1}, size=32768, type=83\n"
        f"start={P2}, size=32768, type=e\n"
        f"start={P3 - 2048}, size=20480, type=5\n"
        f"start={P3}, size=16384, type=83\n",
    )
    for img, start in zip(part_images, (P1, P2, P3), strict=True):
        dd_into(disk, img, start)
    return disk


@pytest.fixture(scope="module")
def gpt_disk(tmp_path_factory: pytest.TempPathFactory, part_images: tuple[Path, ...]) -> Path:
    disk = tmp_path_factory.mktemp("gpt") / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(48 * MIB)
    sfdisk(
        disk,
        "label: gpt\n"
        f'start={P1}, size=32768, type=L, name="linux root"\n'
        f'start={P2}, size=32768, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name="Daten"\n'
        f"start={P3}, size=16384, type=L\n",
    )
    for img, start in zip(part_images, (P1, P2, P3), strict=True):
        dd_into(disk, img, start)
    return disk


# --------------------------------------------------------------------------- FAT


def test_fat_whole_disk(fat_image: Path, fat_src: Path) -> None:
    src = FileByteSource(fat_image)
    assert list_partitions(src) == []
    fs = open_filesystem(src, None)
    assert fs.fs_type == "fat16"
    root = fs.listdir("/")
    # the volume label and TSK's virtual $MBR/$FAT1/$FAT2/$OrphanFiles are not listed
    assert [e.name for e in root] == [
        "empty",
        "Ordner mit Grüßen",
        "data.bin",
        "Grüße und Küsse.txt",
        "UPPER.TXT",
        "日本語.txt",
    ]
    assert all(e.mtime is not None and e.mtime.tzinfo is not None for e in root)
    assert_same_tree(fs, fat_src)
    with pytest.raises(PathNotFound):
        fs.stat("/$FAT1")
    with pytest.raises(PathNotFound):
        fs.listdir("/../Ordner mit Grüßen")


# --------------------------------------------------------------------------- MBR / GPT


def test_mbr_partitions(mbr_disk: Path, ext_src: Path, fat_src: Path) -> None:
    src = FileByteSource(mbr_disk)
    parts = list_partitions(src)
    assert [(p.index, p.start, p.length, p.fs_type, p.scheme) for p in parts] == [
        (0, P1 * SECTOR, 16 * MIB, "ext4", "mbr"),
        (1, P2 * SECTOR, 16 * MIB, "fat16", "mbr"),
        (2, P3 * SECTOR, 8 * MIB, "ext4", "mbr"),
    ]
    assert "0x83" in parts[0].description and "0x0e" in parts[1].description.lower()
    assert_same_tree(open_filesystem(src, 0), ext_src)
    assert_same_tree(open_filesystem(src, 1), fat_src)
    assert_same_tree(open_filesystem(src, 2), ext_src / "docs")


def test_gpt_partitions(gpt_disk: Path, ext_src: Path, fat_src: Path) -> None:
    src = FileByteSource(gpt_disk)
    parts = list_partitions(src)
    assert [(p.start, p.length, p.description, p.scheme) for p in parts] == [
        (P1 * SECTOR, 16 * MIB, "linux root", "gpt"),
        (P2 * SECTOR, 16 * MIB, "Daten", "gpt"),
        (P3 * SECTOR, 8 * MIB, "gpt partition 3", "gpt"),
    ]
    assert [p.fs_type for p in parts] == ["ext4", "fat16", "ext4"]
    fat = open_filesystem(src, 1)
    assert fat.partition == parts[1]
    assert b"".join(fat.read_file("/Ordner mit Grüßen/tief/notiz.txt")) == b"tief unten\n"
    ext = open_filesystem(src, 0)
    assert b"".join(ext.read_file("/docs/big.bin")) == (ext_src / "docs/big.bin").read_bytes()
    assert_same_tree(open_filesystem(src, 2), ext_src / "docs")


def test_partitioned_disk_needs_a_partition(mbr_disk: Path, gpt_disk: Path) -> None:
    for disk in (mbr_disk, gpt_disk):
        with pytest.raises(UnsupportedFilesystem, match="partition table"):
            open_filesystem(FileByteSource(disk), None)


def test_partition_without_a_filesystem(tmp_path: Path) -> None:
    disk = tmp_path / "blank.img"
    with open(disk, "wb") as f:
        f.truncate(8 * MIB)
    sfdisk(disk, "label: gpt\nstart=2048, size=8192, type=L\n")
    parts = list_partitions(FileByteSource(disk))
    assert len(parts) == 1 and parts[0].fs_type is None
    with pytest.raises(UnsupportedFilesystem, match="partition 0"):
        open_filesystem(FileByteSource(disk), 0)


# --------------------------------------------------------------------------- NTFS


def test_ntfs_empty_volume(tmp_path: Path) -> None:
    mkntfs = require_tool("mkntfs")
    img = tmp_path / "ntfs.img"
    with open(img, "wb") as f:
        f.truncate(16 * MIB)
    subprocess.run(
        [mkntfs, "-F", "-Q", "-q", "-L", "Lifeboat", str(img)], check=True, capture_output=True
    )
    src = FileByteSource(img)
    assert list_partitions(src) == []
    fs = open_filesystem(src)
    assert fs.fs_type == "ntfs"
    assert fs.listdir("/") == []  # $MFT, $Bitmap, ... are hidden by default
    shown = {e.name for e in open_filesystem(src, show_metadata=True).listdir("/")}
    assert {"$MFT", "$Bitmap", "$Extend"} <= shown
    assert fs.stat("/$MFT").kind == "file"
    with pytest.raises(PathNotFound):
        fs.stat("/Windows")


# --------------------------------------------------------------------------- a 4 GiB disk


def test_first_listing_of_a_4_gib_disk_is_fast_and_cheap(tmp_path: Path, ext_src: Path) -> None:
    """A GPT disk whose ext4 partition fills 4 GiB (sparse on the host: a few MiB)."""
    mkfs = require_tool("mkfs.ext4")
    disk = tmp_path / "big.img"
    with open(disk, "wb") as f:
        f.truncate(4 << 30)
    sfdisk(disk, "label: gpt\nstart=2048, type=L\n")
    subprocess.run(
        [
            mkfs,
            "-q",
            "-F",
            "-E",
            f"offset={MIB},lazy_itable_init=1,lazy_journal_init=1,nodiscard",
            "-d",
            str(ext_src),
            str(disk),
            "4000M",
        ],
        check=True,
        capture_output=True,
    )
    src = CountingSource(FileByteSource(disk))
    t0 = time.perf_counter()
    parts = list_partitions(src)
    fs = open_filesystem(src, parts[0].index)
    names = [e.name for e in fs.listdir("/")]
    elapsed = time.perf_counter() - t0
    assert "docs" in names and "日本語.txt" in names
    assert parts[0].fs_type == "ext4" and parts[0].length > 3 << 30
    assert elapsed < 1.0, elapsed
    assert src.bytes_read < src.size // 200, src.bytes_read  # < 0.5 % of the disk
    big = b"".join(fs.read_file("/docs/big.bin"))
    assert big == (ext_src / "docs" / "big.bin").read_bytes()
