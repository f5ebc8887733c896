#!/usr/bin/env python3
"""Backup and restore of the same data to a local store, S3 (moto) and Azure Blob (Azurite).

One ext4 image (default 256 MiB, about 60% full of real files from /usr) is backed up in
full, then again incrementally after about 2% churn (new files written with debugfs), to each
kind of store; then the incremental recovery point is restored (sync=False, compared with the
image outside the timed region). Prints one table: seconds, MB/s of the disk, the ratio to the
local store, and the requests the incremental backup made against the new chunks it stored
(requests are counted in the backend). The servers run on this machine, so the figures measure
the engine's overhead per request, not a network.

Targets: backup and restore >= 0.7 x local; requests per incremental <= 1.2 x new chunks + 20.

    .venv/bin/python bench/objstore.py [--size 256M] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, churn, make_image, parse_size  # noqa: E402

sys.path.insert(0, str(REPO))
import engine  # noqa: E402
from engine.tests import objservers  # noqa: E402

TARGET_RATIO = 0.7
CODEC = "zstd:1"


def same(a: Path, b: Path) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)]).returncode == 0


def run(
    kind: str,
    location: str,
    target: engine.ObjectTarget | None,
    base: Path,
    inc: Path,
    out: Path,
    kek: bytes,
) -> dict[str, float]:
    store = engine.init_store(location, kek, target=target, codec=CODEC)
    size = base.stat().st_size
    t0 = time.monotonic()
    full = engine.backup(
        engine.BackupRequest(store, [engine.DiskSource(0, str(base))], vm_name="b")
    )
    t_full = time.monotonic() - t0
    r0 = store.backend.requests()
    t0 = time.monotonic()
    res = engine.backup(
        engine.BackupRequest(
            store, [engine.DiskSource(0, str(inc))], vm_name="b", parent=full.rp_id
        )
    )
    t_inc = time.monotonic() - t0
    inc_requests = store.backend.requests() - r0
    store = engine.open_store(location, kek, target=target)  # a cold handle, as a job has
    t0 = time.monotonic()
    engine.restore(store, res.rp_id, {0: out}, sync=False)
    t_restore = time.monotonic() - t0
    assert same(inc, out), f"{kind}: restored image differs"
    out.unlink()
    return {
        "full": t_full,
        "inc": t_inc,
        "restore": t_restore,
        "new": res.disks[0].chunks_new,
        "requests": inc_requests,
        "size": size,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="256M")
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="objbench-", dir=args.work))
    servers: list[objservers.Server] = []
    try:
        base, inc = work / "base.img", work / "inc.img"
        make_image(base, size, 0.6, work / "staging")
        shutil.rmtree(work / "staging")
        subprocess.run(["cp", "--sparse=always", str(base), str(inc)], check=True)
        churn(inc, int(size * 0.02), work / "churn")
        kek = os.urandom(32)
        moto = objservers.start_moto()
        servers.append(moto)
        azurite = objservers.start_azurite()
        servers.append(azurite)
        places = [
            ("local", str(work / "local"), None),
            (
                "s3 (moto)",
                f"s3://{objservers.new_bucket(moto.endpoint)}/vault",
                objservers.s3_target(moto.endpoint),
            ),
            (
                "azure (Azurite)",
                f"az://{objservers.new_container(azurite.endpoint)}/vault",
                objservers.azure_target(azurite.endpoint),
            ),
        ]
        rows = [(k, run(k, loc, t, base, inc, work / "out.img", kek)) for k, loc, t in places]
    finally:
        for srv in servers:
            srv.stop()
        shutil.rmtree(work, ignore_errors=True)

    local = rows[0][1]
    mb = size / 1e6
    print(f"disk {size >> 20} MiB ext4, 60% full; incremental after 2% churn; codec {CODEC}")
    hdr = (
        f"{'store':<16} {'full s':>7} {'MB/s':>6} {'x local':>7} {'incr s':>7} "
        f"{'restore s':>9} {'MB/s':>6} {'x local':>7} {'new chunks':>10} {'requests':>8} "
        f"{'limit':>6}"
    )
    print(hdr)
    print("-" * len(hdr))
    ok = True
    for kind, r in rows:
        limit = 1.2 * r["new"] + 20
        xb = local["full"] / r["full"]
        xr = local["restore"] / r["restore"]
        if kind != "local":
            ok &= xb >= TARGET_RATIO and xr >= TARGET_RATIO and r["requests"] <= limit
        print(
            f"{kind:<16} {r['full']:7.2f} {mb / r['full']:6.0f} {xb:7.2f} {r['inc']:7.2f} "
            f"{r['restore']:9.2f} {mb / r['restore']:6.0f} {xr:7.2f} {int(r['new']):10d} "
            f"{int(r['requests']):8d} {limit:6.0f}"
        )
    print(
        f"targets: backup and restore >= {TARGET_RATIO} x local, requests <= 1.2 x new + 20: "
        + ("met" if ok else "NOT met")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
