"""Helpers for engine tests: system tools, ext4 images, CLI subprocesses."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import GcResult, Store, gc
from engine.backends import target_to_env

REPO = Path(__file__).resolve().parents[2]
SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def require_tool(name: str) -> str:
    """Path of a system tool. Missing: skip, or fail when $LIFEBOAT_REQUIRE_ALL is set."""
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))
    if found:
        return found
    msg = f"system tool {name!r} is not installed"
    if os.environ.get("LIFEBOAT_REQUIRE_ALL"):
        pytest.fail(f"{msg} and LIFEBOAT_REQUIRE_ALL is set")
    pytest.skip(msg)


def stage_files(dest: Path, nbytes: int, seed: int = 0) -> Path:
    """Fill dest with about nbytes of real files copied from /usr/share, plus some random data."""
    dest.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(seed)
    total = 0
    budget = int(nbytes * 0.8)
    roots = ["/usr/share/doc", "/usr/share/common-licenses", "/usr/share/perl5", "/usr/share/man"]
    n = 0
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for fn in sorted(filenames):
                src = Path(dirpath) / fn
                if src.is_symlink() or not src.is_file():
                    continue
                size = src.stat().st_size
                if size == 0 or size > 4 << 20 or total + size > budget:
                    continue
                rel = src.relative_to("/usr/share")
                out = dest / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                try:
                    shutil.copyfile(src, out)
                except OSError:
                    continue
                total += size
                n += 1
            if total >= budget:
                break
        if total >= budget:
            break
    rest = max(0, nbytes - total)
    (dest / "random").mkdir(exist_ok=True)
    while rest > 0:
        size = min(rest, rnd.randint(64 << 10, 2 << 20))
        (dest / "random" / f"r{rest}.bin").write_bytes(rnd.randbytes(size))
        rest -= size
    return dest


def make_ext4(image: Path, size_mib: int, staging: Path) -> Path:
    mkfs = require_tool("mkfs.ext4")
    subprocess.run(
        [mkfs, "-q", "-F", "-b", "4096", "-d", str(staging), str(image), f"{size_mib}M"],
        check=True,
        capture_output=True,
        env={**os.environ, "MKE2FS_DEVICE_SECTSIZE": "512", "E2FSPROGS_FAKE_TIME": "1700000000"},
    )
    return image


def debugfs_write(image: Path, local: Path, name: str) -> None:
    debugfs = require_tool("debugfs")
    out = subprocess.run(
        [debugfs, "-w", "-R", f"write {local} {name}", str(image)],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "error" not in out.stderr.lower() or "Allocated" in out.stderr, out.stderr


def e2fsck_clean(image: Path) -> None:
    e2fsck = require_tool("e2fsck")
    r = subprocess.run([e2fsck, "-fn", str(image)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def same_bytes(a: Path, b: Path) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)]).returncode == 0


def engine_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine", *args]


def run_engine(
    *args: str, key_file: Path | None = None, check: bool = True, store: Store | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI; with `store`, its object-store endpoint and credentials go in the env."""
    pre = ["--key-file", str(key_file)] if key_file else []
    r = subprocess.run(
        engine_cmd(*pre, *args), cwd=REPO, capture_output=True, text=True, env=engine_env(store)
    )
    if check and r.returncode != 0:
        raise AssertionError(f"engine {args} failed ({r.returncode}): {r.stderr}")
    return r


def engine_env(store: Store | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if store is not None and store.target is not None:
        env.update(target_to_env(store.location, store.target))
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def flip_object(store: Store, key: str, pos: int) -> None:
    """Flip one bit of a stored object (bit rot), wherever the store lives."""
    data = bytearray(store.backend.get(key))
    data[pos % len(data)] ^= 0x01
    store.backend.put(key, bytes(data))


def object_size(store: Store, key: str) -> int:
    return len(store.backend.get(key))


def gc_aged(store: Store, age: float, grace: float) -> GcResult:
    """GC as if every chunk were `age` seconds older: local files get an older mtime; object
    stores cannot be back-dated, so the grace window moves instead (the same comparison)."""
    if store.path is None:
        return gc(store, grace_seconds=grace - age, wait_seconds=5)
    old = time.time() - age
    for path in store.iter_chunk_files():
        os.utime(path, (old, old))
    return gc(store, grace_seconds=grace)


def make_ntfs(
    image: Path, size_mib: int, files: dict[str, bytes], *, partition_start: int = 0
) -> Path:
    """A whole-disk NTFS image by `mkntfs` (no mount: the file is formatted as it is) holding
    `files` written by `ntfscp`, which also goes through no mount. `partition_start`: the
    sector the volume will start at on its disk (the boot sector records it)."""
    mkntfs, ntfscp = require_tool("mkntfs"), require_tool("ntfscp")
    with open(image, "wb") as f:
        f.truncate(size_mib << 20)
    subprocess.run(
        [mkntfs, "-F", "-f", "-Q", "-L", "drill", "-p", str(partition_start), str(image)],
        check=True,
        capture_output=True,
    )
    for name, data in files.items():
        local = image.with_name(f"{image.name}.{name.strip('/').replace('/', '_')}")
        local.write_bytes(data)
        subprocess.run([ntfscp, str(image), str(local), name], check=True, capture_output=True)
        local.unlink()
    return image


def make_partitioned_ntfs(image: Path, size_mib: int, files: dict[str, bytes]) -> int:
    """A disk with an MBR and one NTFS partition (type 7, from 1 MiB to the end, as Windows
    lays out a data disk) holding `files`; returns the partition's offset in bytes. The
    volume is made by make_ntfs in a file of its own and copied in: no loop device, no root."""
    sfdisk = require_tool("sfdisk")
    offset = 1 << 20
    part = image.with_name(f"{image.name}.part")
    make_ntfs(part, size_mib - 1, files, partition_start=offset // 512)
    with open(image, "wb") as f:
        f.truncate(size_mib << 20)
    subprocess.run(
        [sfdisk, "-q", str(image)], input=b"start=2048, type=7\n", check=True, capture_output=True
    )
    with open(image, "r+b") as out:
        out.seek(offset)
        out.write(part.read_bytes())
    part.unlink()
    return offset


def ntfs_zero_boot_sector(image: Path, offset: int = 0) -> None:
    """The damage The Sleuth Kit cannot see past: the first sector of the volume at `offset`,
    NTFS's boot sector, zeroed (its backup in the volume's last sector stays)."""
    with open(image, "r+b") as f:
        f.seek(offset)
        f.write(bytes(512))


def ntfs_break_mft(image: Path, offset: int = 0) -> None:
    """The $MFT's first record loses its FILE magic, where the boot sector of the volume at
    `offset` says it starts."""
    with open(image, "r+b") as f:
        f.seek(offset)
        boot = f.read(512)
        cluster = int.from_bytes(boot[11:13], "little") * boot[13]
        f.seek(offset + int.from_bytes(boot[0x30:0x38], "little") * cluster)
        assert f.read(4) == b"FILE"
        f.seek(-4, os.SEEK_CUR)
        f.write(b"BAAD")
