"""A file system's own checker, run read-only on a restored disk image (restore drills).

The Sleuth Kit opens a file system that is badly damaged inside (it reads what it needs), so
a drill also asks the file system's own tools: ``e2fsck -fn`` for ext2/3/4, ``fsck.vfat -n``
for FAT, ``ntfsfix -n`` for NTFS. All three only read (``-n``: answer "no" to every repair).
A file system inside a partition is copied out to a file of its own first, since the FAT and
NTFS tools take no offset. No checker for a type, or its tool not installed, is said so
(``ok is None``) rather than passed.
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
