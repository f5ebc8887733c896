#!/usr/bin/env python3
"""Exact space accounting: its cost, and its proof on a real store.

An ext4 image about 60% full of /usr files is backed up once, then again after each of
--rps - 1 rounds of churn (random 64 KiB regions overwritten, --churn of the image per round).
Then, oldest first, each recovery point's reported unique bytes are compared with what deleting
it and collecting garbage frees (stored chunk bytes before minus after), re-measuring after
each deletion, and the time one accounting of the whole store takes is shown.

    .venv/bin/python bench/accounting.py [--size 256M] [--rps 8] [--churn 0.02]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, human, make_image, parse_size  # noqa: E402

sys.path.insert(0, str(REPO))
from engine import (  # noqa: E402
    BackupRequest,
    DiskSource,
    backup,
    delete_recovery_point,
    gc,
    init_store,
)
from engine.accounting import IndexCache, store_accounting  # noqa: E402
from engine.stats import store_stats  # noqa: E402

REGION = 64 << 10


def overwrite(image: Path, fraction: float, rnd: random.Random) -> None:
    size = image.stat().st_size
    with open(image, "r+b") as f:
        for _ in range(max(1, int(size * fraction) // REGION)):
            f.seek(rnd.randrange(0, size - REGION) // 4096 * 4096)
            f.write(rnd.randbytes(REGION))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="256M")
    ap.add_argument("--rps", type=int, default=8)
    ap.add_argument("--churn", type=float, default=0.02)
    args = ap.parse_args()
    size = parse_size(args.size)
    rnd = random.Random(7)
    work = Path(tempfile.mkdtemp(prefix="lb-accounting-"))
    try:
        image = work / "disk.img"
        make_image(image, size, 0.6, work / "staging")
        store = init_store(work / "store", os.urandom(32))
        rps: list[str] = []
        for n in range(args.rps):
            if n:
                overwrite(image, args.churn, rnd)
            request = BackupRequest(
                store, [DiskSource(0, str(image))], vm_name="vm", parent=rps[-1] if rps else None
            )
            rps.append(backup(request).rp_id)
        chunks = store_stats(store.location).chunks
        started = time.perf_counter()
        store_accounting(store.location)
        seconds = time.perf_counter() - started
        print(f"image {human(size)}, {args.rps} recovery points, {chunks} chunks stored")
        print(f"one accounting of the store: {seconds:.3f} s ({chunks / seconds:,.0f} chunks/s)")
        # After one more backup: a full recount against one with the cache of the earlier ones
        # (what a worker's refresh after a backup does); CPU seconds, median of 5, and both
        # must agree exactly.
        cache = IndexCache()
        store_accounting(store.location, cache=cache)
        seen = set(store.backend.list("indexes/"))
        overwrite(image, args.churn, rnd)
        request = BackupRequest(store, [DiskSource(0, str(image))], vm_name="vm", parent=rps[-1])
        rps.append(backup(request).rp_id)
        full_cpu, cached_cpu = [], []
        for _ in range(5):
            t = time.process_time()
            full = store_accounting(store.location)
            full_cpu.append(time.process_time() - t)
            cache.keep_only(store.backend.location, seen)  # as it was before the backup
            t = time.process_time()
            cached = store_accounting(store.location, cache=cache)
            cached_cpu.append(time.process_time() - t)
            if (cached.points, cached.groups) != (full.points, full.groups):
                print("the cached accounting differs from a full recount")
                return 1
        full_s, cached_s = statistics.median(full_cpu), statistics.median(cached_cpu)
        print(
            f"after one more backup: full recount {full_s:.3f} CPU s ({full.index_reads} indexes"
            f" read), with the index cache {cached_s:.3f} CPU s ({cached.index_reads} read):"
            f" {full_s / max(cached_s, 1e-9):.1f}x; figures equal"
        )
        print()
        header = f"{'rp':>3} {'unique (reported)':>18} {'freed by delete+GC':>19} {'diff':>6} {'shared':>10}"
        print(header)
        print("-" * len(header))
        worst = 0
        for n, rp in enumerate(rps):
            use = store_accounting(store.location).points[rp]
            before = store_stats(store.location).stored_bytes
            delete_recovery_point(store, rp)
            gc(store, grace_seconds=0)
            freed = before - store_stats(store.location).stored_bytes
            worst = max(worst, abs(freed - use.unique_bytes))
            print(
                f"{n + 1:>3} {use.unique_bytes:>18,} {freed:>19,} "
                f"{freed - use.unique_bytes:>6} {human(use.shared_bytes):>10}"
            )
        print(f"\nlargest difference: {worst} bytes")
        return 0 if worst == 0 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
