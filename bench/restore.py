#!/usr/bin/env python3
"""Restore speed of the two tiers versus cp, and time to the first listed directory.

One ext4 image (default 4 GiB, about 60% full of real files from /usr, built with
`mkfs.ext4 -d` as in engine_vs_peers.py) is backed up with the engine's API into a
snapshot-tier store (codec none, keys from the vault store) and copied to the vault tier
(codec zstd:1) with engine.transfer, as the product does. Then, page cache warm, each figure
the median of --runs runs:

* whole-disk restore from the snapshot tier and from the vault tier (engine.restore, in this
  process, sync=False and sync=True), versus `cp --sparse=always --reflink=never` of the image
  (then `sync`); every output is compared with the image (cmp) outside the timed region;
* file recovery: open the vault store, open_disk on the RP's disk (a fresh reader each time),
  engine.fs.open_filesystem(reader, None) and listdir("/"); time and bytes fetched.

    .venv/bin/python bench/restore.py [--size 4G] [--runs 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, human, make_image, parse_size  # noqa: E402

sys.path.insert(0, str(REPO))
import engine  # noqa: E402
import engine.fs  # noqa: E402

SNAPSHOT_CODEC = "none"  # vaults/stores.py
VAULT_CODEC = "zstd:1"

TARGET_SNAPSHOT = 0.85  # x cp's throughput
TARGET_VAULT = 0.7
TARGET_BROWSE = 1.0  # seconds to the first listed directory


def cp_sparse(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "--sparse=always", "--reflink=never", str(src), str(dst)], check=True)


def same(a: Path, b: Path) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)]).returncode == 0


def warm(paths: list[Path]) -> None:
    """Read every file under paths once, so the timed runs start with a warm page cache."""
    buf = bytearray(1 << 20)
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for p in files:
            with open(p, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", default="4G", help="image size (default 4G)")
    ap.add_argument("--runs", type=int, default=3, help="runs per figure; the median is reported")
    ap.add_argument("--fill", type=float, default=0.6)
    ap.add_argument("--work", default=str(REPO / "bench" / "work"), help="parent of the work dir")
    args = ap.parse_args()
    size = parse_size(args.size)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="restore-", dir=args.work))
    try:
        return run(args, size, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, size: int, work: Path) -> int:
    image = work / "disk.img"
    print(f"building {human(size)} ext4 image, {args.fill:.0%} of /usr files ...", file=sys.stderr)
    staged = make_image(image, size, args.fill, work / "staging")
    shutil.rmtree(work / "staging")

    kek = engine.create_platform_kek(work / "master.key")
    vault = engine.init_store(work / "vault", kek, codec=VAULT_CODEC)
    snap = engine.init_store(work / "snapshot", kek, codec=SNAPSHOT_CODEC, keys_from=work / "vault")
    print("backup to the snapshot tier, transfer to the vault tier ...", file=sys.stderr)
    t0 = time.monotonic()
    res = engine.backup(
        engine.BackupRequest(snap, [engine.DiskSource(0, str(image))], vm_name="bench")
    )
    t_backup = time.monotonic() - t0
    rp = res.rp_id
    t0 = time.monotonic()
    engine.transfer(snap, vault, rp)
    t_transfer = time.monotonic() - t0
    stored = {
        name: sum(p.stat().st_size for p in (work / name / "chunks").rglob("*") if p.is_file())
        for name in ("snapshot", "vault")
    }
    os.sync()
    warm([image, work / "snapshot", work / "vault"])

    out = work / "out.img"

    def tier(store: engine.Store) -> Callable[[bool], None]:
        def go(sync: bool) -> None:
            engine.restore(store, rp, {0: out}, sync=sync)

        return go

    def cp(sync: bool) -> None:
        cp_sparse(image, out)
        if sync:
            subprocess.run(["sync"], check=True)

    rows: list[tuple[str, Callable[[bool], None]]] = [
        ("snapshot tier", tier(snap)),
        ("vault tier", tier(vault)),
        ("cp", cp),
    ]
    times: dict[tuple[str, bool], list[float]] = {}
    identical: dict[str, bool] = {name: True for name, _ in rows}
    for n in range(args.runs):
        for name, fn in rows:
            for sync in (False, True):
                print(f"run {n + 1}/{args.runs}: {name}, sync={sync}", file=sys.stderr)
                out.unlink(missing_ok=True)
                os.sync()  # no dirty data of the previous step in flight
                t0 = time.monotonic()
                fn(sync)
                times.setdefault((name, sync), []).append(time.monotonic() - t0)
                identical[name] = identical[name] and same(image, out)
                out.unlink()

    browse: list[float] = []
    fetched: list[tuple[int, int]] = []
    entries = 0
    for _ in range(args.runs):
        t0 = time.monotonic()
        store = engine.open_store(work / "vault", kek)
        with engine.open_disk(store, rp, 0) as reader:
            with engine.fs.open_filesystem(reader, None) as fs:
                entries = len(fs.listdir("/"))
            browse.append(time.monotonic() - t0)
            fetched.append((reader.bytes_fetched, reader.chunks_fetched))

    med = {k: statistics.median(v) for k, v in times.items()}
    mib = size / (1 << 20)
    lines: list[str] = []
    lines.append(
        f"Disk {human(size)} ext4 image ({human(staged)} of /usr files); snapshot tier "
        f"{human(stored['snapshot'])} of chunks (backup {t_backup:.1f} s), vault tier "
        f"{human(stored['vault'])} (transfer {t_transfer:.1f} s); page cache warm; median of "
        f"{args.runs}; {os.cpu_count()} cores. MiB/s = disk size / seconds; x cp = cp's "
        "seconds / these seconds."
    )
    lines.append("")
    lines.append("| | restore | MiB/s | x cp | restore + sync | MiB/s | x cp | identical (cmp) |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|:---:|")
    for name, _ in rows:
        label = "cp --sparse=always --reflink=never" if name == "cp" else name
        cells = []
        for sync in (False, True):
            s = med[(name, sync)]
            cells += [f"{s:.2f} s", f"{mib / s:.0f}", f"{med[('cp', sync)] / s:.2f}"]
        lines.append(f"| {label} | {' | '.join(cells)} | {'yes' if identical[name] else 'NO'} |")
    lines.append("")
    fb = statistics.median(b for b, _ in fetched)
    fc = statistics.median(c for _, c in fetched)
    t_browse = statistics.median(browse)
    lines.append(
        f"File recovery, vault tier (open_store + open_disk + open_filesystem + listdir('/'), "
        f"fresh reader each run): {t_browse * 1000:.0f} ms to the first listed directory "
        f"({entries} entries), {human(fb)} fetched from the store ({fc:.0f} chunks)."
    )
    lines.append("")

    def ratio(name: str, sync: bool) -> float:
        return med[("cp", sync)] / med[(name, sync)]

    checks: list[tuple[str, bool, str]] = []
    for name, target in (("snapshot tier", TARGET_SNAPSHOT), ("vault tier", TARGET_VAULT)):
        for sync in (False, True):
            r = ratio(name, sync)
            checks.append(
                (
                    f"{name} >= {target} x cp's throughput ({'with' if sync else 'no'} sync)",
                    r >= target,
                    f"{r:.2f} x",
                )
            )
    checks.append(
        (
            f"time to first listed directory < {TARGET_BROWSE:.0f} s",
            t_browse < TARGET_BROWSE,
            f"{t_browse:.3f} s",
        )
    )
    checks.append(("restores byte-identical", all(identical.values()), "cmp"))
    lines.append("| target | measured | status |")
    lines.append("|---|---:|:---:|")
    for name, ok, detail in checks:
        lines.append(f"| {name} | {detail} | {'MET' if ok else 'NOT MET'} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
