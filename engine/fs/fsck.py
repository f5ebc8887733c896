"""A file system's own checker, run read-only on a restored disk image (restore drills).

The Sleuth Kit opens a file system that is badly damaged inside (it reads what it needs), so
a drill also asks the file system's own tools: ``e2fsck -fn`` for ext2/3/4, ``fsck.vfat -n``
for FAT, ``ntfsfix -n`` for NTFS. All three only read (``-n``: answer "no" to every repair).
A file system inside a partition is copied out to a file of its own first, since the FAT and
NTFS tools take no offset. No checker for a type, or its tool not installed, is said so
(``ok is None``) rather than passed.

Where the file-level reader cannot open a file system (a damaged NTFS boot sector leaves The
Sleuth Kit nothing to recognise), ``signature`` still names its type from what the on-disk
format leaves elsewhere - NTFS's backup boot sector in the last sector of the volume, ext's
superblock magic, FAT's boot sector - so the file system's own checker runs all the same.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# fs type (as engine.fs names it) → the read-only check command (the image path is appended).
CHECKERS: dict[str, list[str]] = {
    "ext2": ["e2fsck", "-fn"],
    "ext3": ["e2fsck", "-fn"],
    "ext4": ["e2fsck", "-fn"],
    "fat12": ["fsck.vfat", "-n"],
    "fat16": ["fsck.vfat", "-n"],
    "fat32": ["fsck.vfat", "-n"],
    "ntfs": ["ntfsfix", "-n"],
}
# Where the tools live on Debian and Ubuntu when /sbin is not on PATH (a service account).
_SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
CHECK_TIMEOUT_SECONDS = 1800
_OUTPUT_TAIL = 2000


@dataclass(frozen=True)
class FsckResult:
    """`ok`: True clean, False damaged, None not checked (`output` says why)."""

    command: str
    ok: bool | None
    exit_code: int | None
    output: str


@dataclass(frozen=True)
class Signature:
    """A file system's type as its on-disk signature names it, and where it was found."""

    fs_type: str
    where: str


_NTFS_OEM = b"NTFS    "
_EXT_MAGIC = b"\x53\xef"  # s_magic 0xEF53, little-endian, at 56 of the superblock at 1024
_SECTOR = 512


def _ext_type(superblock: bytes) -> str:
    compat, incompat = (int.from_bytes(superblock[o : o + 4], "little") for o in (92, 96))
    if incompat & 0x40:  # extents
        return "ext4"
    return "ext3" if compat & 0x4 else "ext2"  # has_journal


def _boot_sector_type(sector: bytes) -> str | None:
    if sector[3:11] == _NTFS_OEM:
        return "ntfs"
    if sector[510:512] == b"\x55\xaa":
        if sector[82:87] == b"FAT32":
            return "fat32"
        if sector[54:59] in (b"FAT12", b"FAT16"):
            return sector[54:59].decode().lower()
    return None


def signature(image: Path, *, offset: int = 0, length: int | None = None) -> Signature | None:
    """The type the signatures of the file system at `offset` of `image` name, or None."""
    size = image.stat().st_size - offset if length is None else length
    if size < _SECTOR:
        return None
    with open(image, "rb") as f:
        head = os.pread(f.fileno(), 2048, offset)
        fs_type = _boot_sector_type(head[:_SECTOR])
        if fs_type is not None:
            return Signature(fs_type, "boot sector")
        if head[1024 + 56 : 1024 + 58] == _EXT_MAGIC:
            return Signature(_ext_type(head[1024:2048]), "superblock")
        # NTFS keeps a copy of its boot sector in the volume's last sector.
        tail = os.pread(f.fileno(), _SECTOR, offset + size - _SECTOR)
        if tail[3:11] == _NTFS_OEM:
            return Signature("ntfs", "backup boot sector (the first sector is not one)")
    return None


def find_checker(fs_type: str) -> list[str] | None:
    """The check command for `fs_type` with its tool's full path, or None."""
    argv = CHECKERS.get(fs_type)
    if argv is None:
        return None
    tool = shutil.which(argv[0]) or next(
        (str(Path(d) / argv[0]) for d in _SBIN if os.access(Path(d) / argv[0], os.X_OK)), None
    )
    return [tool, *argv[1:]] if tool else None


def copy_range(src: Path, dst: Path, offset: int, length: int) -> None:
    """Copy `length` bytes of `src` from `offset` into a new file `dst` (sparse where the
    kernel can)."""
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        done = 0
        while done < length:
            n = os.copy_file_range(fin.fileno(), fout.fileno(), length - done, offset + done)
            if n == 0:
                break
            done += n


def check_filesystem(
    image: Path,
    fs_type: str,
    *,
    offset: int = 0,
    length: int | None = None,
    scratch: Path | None = None,
    timeout: float = CHECK_TIMEOUT_SECONDS,
) -> FsckResult:
    """Run the checker of `fs_type` on the file system at `offset` of `image`.

    A file system inside a partition (`offset` > 0) is copied to `scratch` first and that
    copy is removed afterwards."""
    argv = find_checker(fs_type)
    name = " ".join(CHECKERS.get(fs_type, []))
    if argv is None:
        why = (
            f"no checker for {fs_type}"
            if fs_type not in CHECKERS
            else f"{CHECKERS[fs_type][0]} is not installed"
        )
        return FsckResult(name, None, None, why)
    target = image
    if offset or length is not None:
        if scratch is None:
            raise ValueError("a file system inside a partition needs a scratch folder")
        target = scratch / f"{image.name}.part-{offset}"
        copy_range(image, target, offset, length if length is not None else image.stat().st_size)
    try:
        r = subprocess.run(
            [*argv, str(target)],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return FsckResult(name, False, None, f"{name} did not finish within {timeout:.0f} s")
    finally:
        if target != image:
            target.unlink(missing_ok=True)
    output = (r.stdout + r.stderr).strip()[-_OUTPUT_TAIL:]
    return FsckResult(name, r.returncode == 0, r.returncode, output)
