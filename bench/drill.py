#!/usr/bin/env python3
"""Restore drill duration per GiB: the drill job's steps through the engine, on an ext4 image.

An ext4 image of --size, about 60% full of real files from /usr (`mkfs.ext4 -d`), is backed
up into a vault-tier store (codec zstd:1). Then the steps `jobs.drill` runs, each timed:
engine verify of the RP (every chunk decrypted, authenticated, its id recomputed), restore to
scratch (sync=False, as the drill does), opening the file system through `engine.fs`,
`e2fsck -fn` (`engine.fs.fsck.check_filesystem`) and reading 16 files spread by path end to
end. Seconds and seconds per GiB of the image (its apparent size), median of --runs runs,
warm page cache.

    .venv/bin/python bench/drill.py [--size 1G] [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, make_image, parse_size  # noqa: E402

sys.path.insert(0, str(REPO))
import engine  # noqa: E402
from engine import fs as efs  # noqa: E402
from engine.fs.fsck import check_filesystem  # noqa: E402

GIB = 1 << 30


def drill_once(store: engine.Store, rp_id: str, scratch: Path) -> dict[str, float]:
    t: dict[str, float] = {}
    start = time.perf_counter()
    report = engine.verify(store, [rp_id])
    assert report.ok
    t["verify"] = time.perf_counter() - start
    start = time.perf_counter()
    target = scratch / "disk.img"
    engine.restore(store, rp_id, {0: target}, sync=False)
    t["restore"] = time.perf_counter() - start
    start = time.perf_counter()
    with efs.FileByteSource(target) as source, efs.open_filesystem(source) as fs:
        fs_type = fs.fs_type
        t["open"] = time.perf_counter() - start
        start = time.perf_counter()
        result = check_filesystem(target, fs_type)
        assert result.ok, result.output
        t["fsck"] = time.perf_counter() - start
        start = time.perf_counter()
        files = sorted(
            (e for _, _, entries in fs.walk("/") for e in entries if e.kind == "file"),
            key=lambda e: e.path,
        )
        for e in files[:: max(1, len(files) // 16)][:16]:
            assert sum(len(b) for b in fs.read_file(e.path)) == e.size
        t["files"] = time.perf_counter() - start
    target.unlink()
    t["total"] = sum(t.values())
    return t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1G")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    size = parse_size(args.size)
    (REPO / "bench" / "work").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="drill-", dir=REPO / "bench" / "work"))
    try:
        image = work / "disk.img"
        make_image(image, size, 0.6, work / "staging")
        shutil.rmtree(work / "staging")
        kek = engine.create_platform_kek(work / "master.key")
        store = engine.init_store(work / "vault", kek, codec="zstd:1")
        res = engine.backup(
            engine.BackupRequest(store, [engine.DiskSource(0, str(image))], "bench")
        )
        runs = [drill_once(store, res.rp_id, work) for _ in range(args.runs)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    gib = size / GIB
    print(f"drill of one {args.size} ext4 image (60% full of /usr files), median of {args.runs}")
    print("| Step | Seconds | Seconds per GiB |")
    print("|---|---:|---:|")
    for step in ("verify", "restore", "open", "fsck", "files", "total"):
        s = statistics.median(r[step] for r in runs)
        print(f"| {step} | {s:.2f} | {s / gib:.2f} |")


if __name__ == "__main__":
    main()
