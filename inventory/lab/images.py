"""Real ext4 disk images for the lab, made and changed without root (e2fsprogs only).

* ``make_image`` -- ``mkfs.ext4 -d STAGING`` from a staging directory of real files plus the
  preallocated ring file ``/lab/ring.dat`` (filled with the ring's non-zero "unwritten"
  pattern: ``mkfs -d`` turns all-zero blocks into holes, and a ring needs real blocks).
* ``churn_image`` -- new files written into the image with ``debugfs -w`` (the caller pauses
  the VM's writer first), the oldest churn files removed when space runs short.
* ``fsck`` / ``list_dir`` -- ``e2fsck -fn`` and ``debugfs ls`` for checks and tests.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from inventory.lab.ring import RING_PATH, blank_ring, find_tool

RING_BYTES = 2 << 20
CHURN_DIR = "/churn"
CHURN_FILE_BYTES = 256 << 10
BLOCK_SIZE = 4096
TOOLS = ("mkfs.ext4", "debugfs", "e2fsck", "dumpe2fs")


class LabToolMissing(RuntimeError):
    """mkfs.ext4, debugfs or e2fsck is not installed."""


def missing_tools() -> list[str]:
    out = []
    for name in TOOLS:
        try:
            find_tool(name)
        except Exception:
            out.append(name)
    return out


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        raise LabToolMissing(
            f"the demo lab needs {', '.join(missing)} from e2fsprogs "
            f"(Debian/Ubuntu: apt-get install e2fsprogs); they make and change the lab's "
            f"ext4 disk images without root"
        )


def _run(argv: list[str], *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def make_image(
    path: Path,
    size_mib: int,
    label: str,
    files: Mapping[str, bytes],
    *,
    ring_bytes: int = RING_BYTES,
) -> None:
    """Create ``path``: an ext4 image of ``size_mib`` MiB holding ``files`` and the ring.

    ``files`` maps absolute paths inside the file system to contents.  The image appears
    atomically (built under a temporary name, then renamed).
    """
    require_tools()
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        for name, data in {**files, RING_PATH: blank_ring(ring_bytes)}.items():
            target = staging / name.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        with open(tmp, "wb") as f:
            f.truncate(size_mib << 20)
        r = _run(
            [
                find_tool("mkfs.ext4"),
                "-q",
                "-F",
                "-b",
                str(BLOCK_SIZE),
                "-L",
                label[:16],
                "-d",
                str(staging),
                str(tmp),
            ]
        )
        if r.returncode != 0:
            raise RuntimeError(f"mkfs.ext4 failed for {path}: {r.stderr.strip()}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)


def fsck(path: Path) -> tuple[bool, str]:
    """``e2fsck -fn``: (clean, output)."""
    r = _run([find_tool("e2fsck"), "-fn", str(path)])
    return r.returncode == 0, (r.stdout + r.stderr).strip()


@dataclass(frozen=True)
class Entry:
    name: str
    size: int


_LS_RE = re.compile(r"^\s*\d+\s+\d+\s+\(\d+\)\s+\d+\s+\d+\s+(\d+)\s+\S+\s+\S+\s+(.+?)\s*$")


def list_dir(path: Path, directory: str) -> list[Entry] | None:
    """Regular entries of ``directory`` in the image (``debugfs ls -l``); None if it is absent."""
    r = _run([find_tool("debugfs"), "-R", f"ls -l {directory}", str(path)])
    if "File not found" in r.stderr or r.returncode != 0:
        return None
    out = []
    for line in r.stdout.splitlines():
        m = _LS_RE.match(line)
        if m and m.group(2) not in (".", ".."):
            out.append(Entry(m.group(2), int(m.group(1))))
    return out


def free_bytes(path: Path) -> int:
    r = _run([find_tool("dumpe2fs"), "-h", str(path)])
    blocks = re.search(r"^Free blocks:\s+(\d+)", r.stdout, re.M)
    size = re.search(r"^Block size:\s+(\d+)", r.stdout, re.M)
    if r.returncode != 0 or not blocks or not size:
        raise RuntimeError(f"dumpe2fs -h {path} failed: {r.stderr.strip()}")
    return int(blocks.group(1)) * int(size.group(1))


@dataclass
class ChurnResult:
    image: Path
    written: list[str] = field(default_factory=list)  # paths inside the file system
    removed: list[str] = field(default_factory=list)
    bytes_written: int = 0


def churn_image(path: Path, mib: float, *, tag: str | None = None) -> ChurnResult:
    """Write ``mib`` MiB of new random files under /churn in the image (``debugfs -w``).

    Files are 256 KiB each, named ``<tag>-<n>.bin`` (tag: UTC time).  When the image would
    drop below a quarter free, the oldest churn files are removed first.  The caller makes
    sure nothing else writes the image meanwhile (the lab pauses the VM's writer).
    """
    require_tools()
    total = max(1, int(mib * (1 << 20)))
    sizes = [CHURN_FILE_BYTES] * (total // CHURN_FILE_BYTES)
    if total % CHURN_FILE_BYTES:
        sizes.append(total % CHURN_FILE_BYTES)
    tag = tag or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    result = ChurnResult(path)
    image_size = path.stat().st_size
    existing = sorted(list_dir(path, CHURN_DIR) or [], key=lambda e: e.name)
    free = free_bytes(path)
    reserve = image_size // 4 + total
    commands: list[str] = []
    while free < reserve and existing:
        old = existing.pop(0)
        commands.append(f"rm {CHURN_DIR}/{old.name}")
        result.removed.append(f"{CHURN_DIR}/{old.name}")
        free += old.size
    if free < total + (64 << 10):
        raise RuntimeError(
            f"{path} has only {free >> 10} KiB free; churn of {total >> 10} KiB does not fit"
        )
    taken = {e.name for e in existing}
    with tempfile.TemporaryDirectory(prefix="lab-churn-") as tmpdir:
        commands.append(f"mkdir {CHURN_DIR}")
        rng = random.Random()
        for i, size in enumerate(sizes):
            name = f"{tag}-{i}.bin"
            n = 1
            while name in taken:
                name = f"{tag}-{i}.{n}.bin"
                n += 1
            local = Path(tmpdir) / name
            local.write_bytes(rng.randbytes(size))
            commands.append(f"write {local} {CHURN_DIR}/{name}")
            result.written.append(f"{CHURN_DIR}/{name}")
            result.bytes_written += size
        script = Path(tmpdir) / "commands"
        script.write_text("\n".join(commands) + "\n")
        r = _run([find_tool("debugfs"), "-w", "-f", str(script), str(path)], timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"debugfs -w failed on {path}: {r.stderr.strip()}")
    present = {f"{CHURN_DIR}/{e.name}": e.size for e in list_dir(path, CHURN_DIR) or []}
    missing = [n for n, s in zip(result.written, sizes, strict=True) if present.get(n) != s]
    if missing:
        errors = [ln for ln in r.stderr.splitlines() if ln.strip() and "debugfs" not in ln]
        raise RuntimeError(
            f"debugfs did not write {', '.join(missing)} into {path}: "
            f"{'; '.join(errors[-3:]) or 'no error reported'}"
        )
    return result
