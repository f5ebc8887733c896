#!/usr/bin/env python3
"""Choose the default chunk size: backup speed, incremental bytes added, index size per TiB.

Same image recipe as engine_vs_peers.py (ext4 about 60% full of /usr files, then a 2% churn
of new files written with debugfs). Median of --runs.

    .venv/bin/python bench/chunk_size.py [--size 1G] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, churn, dir_bytes, human, make_image, parse_size  # noqa: E402

sys.path.insert(0, str(REPO))
from engine import BackupRequest, DiskSource, backup, init_store, restore  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="1G")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default=str(REPO / "bench" / "work" / "chunk-size"))
    args = ap.parse_args()
    size = parse_size(args.size)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base, churned = work / "base.img", work / "churned.img"
    make_image(base, size, 0.6, work / "staging")
    shutil.rmtree(work / "staging")
    subprocess.run(["cp", "--sparse=always", str(base), str(churned)], check=True)
    churn_bytes = churn(churned, int(size * 0.02), work / "churn")
    kek = os.urandom(32)
    rows = []
    for shift in range(18, 23):
        cs = 1 << shift
        full_t, inc_t, rest_t, added, stored = [], [], [], [], []
        for _ in range(args.runs):
            store_dir = work / "store"
            shutil.rmtree(store_dir, ignore_errors=True)
            store = init_store(store_dir, kek, chunk_size=cs)
            t0 = time.monotonic()
            full = backup(BackupRequest(store, [DiskSource(0, str(base))], vm_name="b"))
            full_t.append(time.monotonic() - t0)
            before = dir_bytes(store_dir)
            t0 = time.monotonic()
            inc = backup(
                BackupRequest(store, [DiskSource(0, str(churned))], vm_name="b", parent=full.rp_id)
            )
            inc_t.append(time.monotonic() - t0)
            after = dir_bytes(store_dir)
            added.append(after - before)
            stored.append(after)
            out = work / "out.img"
            t0 = time.monotonic()
            restore(store, inc.rp_id, {0: out}, sync=False)
            rest_t.append(time.monotonic() - t0)
            out.unlink()
        index_per_tib = ((1 << 40) // cs) * 32 + 72
        rows.append(
            f"| {human(cs)} | {statistics.median(full_t):.2f} s | {statistics.median(inc_t):.2f} s "
            f"| {statistics.median(rest_t):.2f} s | {human(statistics.median(stored))} "
            f"| {human(statistics.median(added))} ({statistics.median(added) / churn_bytes:.2f} x) "
            f"| {human(index_per_tib)} |"
        )
        print(rows[-1], file=sys.stderr)
    shutil.rmtree(work)
    print(
        f"Image {human(size)} ext4 60% full, churn {human(churn_bytes)}; median of {args.runs}.\n"
    )
    print(
        "| chunk | full backup | incremental | restore | stored | added by incr. | index per TiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
