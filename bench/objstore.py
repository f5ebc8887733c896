#!/usr/bin/env python3
"""Backup and restore of the same data to a local store, S3 (moto) and Azure Blob (Azurite).

One ext4 image (default 256 MiB, about 60% full of real files from /usr) is backed up in
full, then again incrementally after about 2% churn (new files written with debugfs), to each
kind of store; then the incremental recovery point is restored (sync=False, compared with the
image outside the timed region). Each round does this for every store in turn, into fresh
stores, each round starting one store later; the figures are medians of --runs rounds (the
machine is shared and noisy).

Printed: seconds, MB/s of the disk, the ratio to the local store, and the requests the
incremental backup made against the new chunks it stored (requests are counted in the
backend). The servers run on this machine, so the figures measure the engine's overhead per
request and the servers' own CPU, not a network.

To tell the engine's cost from the server's, a second table moves the same bytes without the
engine: the chunk objects of the local store's full backup put and got again through obstore
(16 in flight, as the engine), and the CPU seconds each server process spent in the engine's
backup and restore (from /proc). "plain / local" is the best ratio an engine with no work of
its own could reach against that server: what stays between it and the engine's ratio is the
engine's doing, the rest the emulator's.

A third table gives a CPU ratio per step: the local store's engine CPU against the engine's
plus the server's. The servers share the cores with the engine, so when a step is bound by the
CPU this is what the wall-clock ratio tends to, and it moves less with the machine's load.
Azurite keeps its blobs in memory as moto does (--azurite-on-disk: files and a LokiJS database).

Targets: backup and restore >= 0.7 x local; requests per incremental <= 1.2 x new chunks + 20.

    .venv/bin/python bench/objstore.py [--size 256M] [--runs 3] [--work DIR]
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
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, churn, make_image, parse_size  # noqa: E402

sys.path.insert(0, str(REPO))
import obstore  # noqa: E402

import engine  # noqa: E402
from engine.backends import open_backend  # noqa: E402
from engine.backends.objects import ObjectBackend  # noqa: E402
from engine.store import OBJECT_IO_THREADS  # noqa: E402
from engine.tests import objservers  # noqa: E402

TARGET_RATIO = 0.7
CODEC = "zstd:1"


def same(a: Path, b: Path) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)]).returncode == 0


def own_cpu() -> float:
    """User + system CPU seconds of this process (the engine and the client) so far."""
    t = os.times()
    return t.user + t.system


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(server: objservers.Server | None) -> float:
    """CPU seconds a server's processes spent so far (moto: gunicorn and its worker), 0
    without one."""
    return sum(process_cpu(pid) for pid in server.pids()) if server else 0.0


class Place:
    """One kind of store: where a fresh store goes each round, and its server."""

    def __init__(
        self,
        kind: str,
        fresh: Callable[[], str],
        target: engine.ObjectTarget | None,
        server: objservers.Server | None,
    ) -> None:
        self.kind = kind
        self.fresh = fresh
        self.target = target
        self.server = server


def run(place: Place, base: Path, inc: Path, out: Path, kek: bytes) -> dict[str, Any]:
    location = place.fresh()
    store = engine.init_store(location, kek, target=place.target, codec=CODEC)
    size = base.stat().st_size
    c0, e0 = cpu_seconds(place.server), own_cpu()
    t0 = time.monotonic()
    full = engine.backup(
        engine.BackupRequest(store, [engine.DiskSource(0, str(base))], vm_name="b")
    )
    t_full = time.monotonic() - t0
    c_full, e_full = cpu_seconds(place.server) - c0, own_cpu() - e0
    r0 = store.backend.requests()
    t0 = time.monotonic()
    res = engine.backup(
        engine.BackupRequest(
            store, [engine.DiskSource(0, str(inc))], vm_name="b", parent=full.rp_id
        )
    )
    t_inc = time.monotonic() - t0
    inc_requests = store.backend.requests() - r0
    store = engine.open_store(location, kek, target=place.target)  # a cold handle, as a job has
    c0, e0 = cpu_seconds(place.server), own_cpu()
    t0 = time.monotonic()
    engine.restore(store, res.rp_id, {0: out}, sync=False)
    t_restore = time.monotonic() - t0
    c_restore, e_restore = cpu_seconds(place.server) - c0, own_cpu() - e0
    assert same(inc, out), f"{place.kind}: restored image differs"
    out.unlink()
    return {
        "full": t_full,
        "inc": t_inc,
        "restore": t_restore,
        "new": res.disks[0].chunks_new,
        "requests": inc_requests,
        "size": size,
        "server cpu full": c_full,
        "server cpu restore": c_restore,
        "engine cpu full": e_full,
        "engine cpu restore": e_restore,
        "location": location,
        "rp": full.rp_id,
    }


def chunk_objects(local_store: Path) -> list[tuple[str, bytes]]:
    """The stored chunks of a local store, as (key, bytes): the bytes a backup puts."""
    root = local_store / "chunks"
    return [
        (str(p.relative_to(local_store)), p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    ]


def plain_transfer(place: Place, objects: list[tuple[str, bytes]]) -> dict[str, float]:
    """Put the objects into a fresh prefix and get them back through obstore, 16 in flight,
    with no engine work: the server's and the client's share of a backup and a restore."""
    location = place.fresh()
    backend = open_backend(location, place.target)
    assert isinstance(backend, ObjectBackend)
    store = backend.store
    prefix = f"plain-{uuid.uuid4().hex[:8]}/"
    c0 = cpu_seconds(place.server)
    t0 = time.monotonic()
    with ThreadPoolExecutor(OBJECT_IO_THREADS) as pool:
        list(
            pool.map(
                lambda kv: obstore.put(store, prefix + kv[0], kv[1], use_multipart=False),
                objects,
            )
        )
    t_put = time.monotonic() - t0
    c_put = cpu_seconds(place.server) - c0
    c0 = cpu_seconds(place.server)
    t0 = time.monotonic()
    with ThreadPoolExecutor(OBJECT_IO_THREADS) as pool:
        got = list(pool.map(lambda kv: bytes(obstore.get(store, prefix + kv[0]).bytes()), objects))
    t_get = time.monotonic() - t0
    c_get = cpu_seconds(place.server) - c0
    assert [len(g) for g in got] == [len(v) for _, v in objects]
    return {"put": t_put, "get": t_get, "server cpu put": c_put, "server cpu get": c_get}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="256M")
    ap.add_argument("--runs", type=int, default=3, help="rounds; medians are reported")
    ap.add_argument("--work", type=Path)
    ap.add_argument(
        "--azurite-on-disk",
        action="store_true",
        help="Azurite writes every blob to a file and its metadata to a LokiJS database "
        "(default: in memory, as moto keeps its objects)",
    )
    args = ap.parse_args()
    size = parse_size(args.size)
    load_at_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="objbench-", dir=args.work))
    servers: list[objservers.Server] = []
    results: dict[str, list[dict[str, Any]]] = {}
    plain: dict[str, list[dict[str, float]]] = {}
    try:
        base, inc = work / "base.img", work / "inc.img"
        make_image(base, size, 0.6, work / "staging")
        shutil.rmtree(work / "staging")
        subprocess.run(["cp", "--sparse=always", str(base), str(inc)], check=True)
        churn(inc, int(size * 0.02), work / "churn")
        kek = os.urandom(32)
        moto = objservers.start_moto()
        servers.append(moto)
        azurite = objservers.start_azurite(in_memory=not args.azurite_on_disk)
        servers.append(azurite)
        counter = iter(range(1 << 30))
        places = [
            Place("local", lambda: str(work / f"local-{next(counter)}"), None, None),
            Place(
                "s3 (moto)",
                lambda: f"s3://{objservers.new_bucket(moto.endpoint)}/vault",
                objservers.s3_target(moto.endpoint),
                moto,
            ),
            Place(
                "azure (Azurite)",
                lambda: f"az://{objservers.new_container(azurite.endpoint)}/vault",
                objservers.azure_target(azurite.endpoint),
                azurite,
            ),
        ]
        for n in range(args.runs):
            objects: list[tuple[str, bytes]] = []
            # The order turns each round: the first store of a round pays for the memory the
            # round before freed (this VM's host takes freed memory back, and faulting it in
            # again is slow, see "Restore at disk speed"), so each store is first once in
            # three rounds and the medians leave that round out.
            for place in places[n % len(places) :] + places[: n % len(places)]:
                print(f"round {n + 1}/{args.runs}: {place.kind}", file=sys.stderr)
                r = run(place, base, inc, work / "out.img", kek)
                results.setdefault(place.kind, []).append(r)
                if place.target is None:
                    # The full backup's chunks (the incremental added a few more; fine).
                    objects = chunk_objects(Path(r["location"]))
                    shutil.rmtree(r["location"])
            for place in places[1:]:
                print(f"round {n + 1}/{args.runs}: plain {place.kind}", file=sys.stderr)
                plain.setdefault(place.kind, []).append(plain_transfer(place, objects))
    finally:
        for srv in servers:
            srv.stop()
        shutil.rmtree(work, ignore_errors=True)
    print_tables(size, args.runs, results, plain)
    azurite_keeps = "on disk" if args.azurite_on_disk else "in memory"
    print(
        f"Azurite {azurite_keeps}; load average {load_at_start:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    return 0


def med(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def print_tables(
    size: int,
    runs: int,
    results: dict[str, list[dict[str, Any]]],
    plain: dict[str, list[dict[str, float]]],
) -> None:
    local = results["local"]
    mb = size / 1e6
    print(
        f"disk {size >> 20} MiB ext4, 60% full; incremental after 2% churn; codec {CODEC}; "
        f"median of {runs} rounds; {os.cpu_count()} cores"
    )
    hdr = (
        f"{'store':<16} {'full s':>7} {'MB/s':>6} {'x local':>7} {'incr s':>7} "
        f"{'restore s':>9} {'MB/s':>6} {'x local':>7} {'new chunks':>10} {'requests':>8} "
        f"{'limit':>6}"
    )
    print(hdr)
    print("-" * len(hdr))
    ok = True
    for kind, rows in results.items():
        new, requests = med(rows, "new"), max(r["requests"] for r in rows)
        limit = 1.2 * new + 20
        full, restore = med(rows, "full"), med(rows, "restore")
        xb = med(local, "full") / full
        xr = med(local, "restore") / restore
        if kind != "local":
            ok &= xb >= TARGET_RATIO and xr >= TARGET_RATIO and requests <= limit
        print(
            f"{kind:<16} {full:7.2f} {mb / full:6.0f} {xb:7.2f} {med(rows, 'inc'):7.2f} "
            f"{restore:9.2f} {mb / restore:6.0f} {xr:7.2f} {int(new):10d} "
            f"{int(requests):8d} {limit:6.0f}"
        )
    print(
        f"targets: backup and restore >= {TARGET_RATIO} x local, requests <= 1.2 x new + 20 "
        "(requests: the largest of the rounds): " + ("met" if ok else "NOT met")
    )
    print()
    print(
        f"CPU seconds (engine + client: this process; server: its processes), and the same chunk "
        f"objects moved without the engine (obstore, {OBJECT_IO_THREADS} in flight)"
    )
    hdr = (
        f"{'store':<16} {'backup':>6} {'engine':>6} {'server':>6} {'plain put':>9} {'server':>6} "
        f"{'x local':>7} | {'restore':>7} {'engine':>6} {'server':>6} {'plain get':>9} "
        f"{'server':>6} {'x local':>7}"
    )
    print(hdr)
    print("-" * len(hdr))
    for kind, rows in results.items():
        p = plain.get(kind)
        put = f"{med(p, 'put'):9.2f} {med(p, 'server cpu put'):6.2f} " if p else f"{'':9} {'':6} "
        put += f"{med(local, 'full') / med(p, 'put'):7.2f}" if p else f"{'':7}"
        get = f"{med(p, 'get'):9.2f} {med(p, 'server cpu get'):6.2f} " if p else f"{'':9} {'':6} "
        get += f"{med(local, 'restore') / med(p, 'get'):7.2f}" if p else f"{'':7}"
        print(
            f"{kind:<16} {med(rows, 'full'):6.2f} {med(rows, 'engine cpu full'):6.2f} "
            f"{med(rows, 'server cpu full'):6.2f} {put} | {med(rows, 'restore'):7.2f} "
            f"{med(rows, 'engine cpu restore'):6.2f} {med(rows, 'server cpu restore'):6.2f} {get}"
        )
    print(
        "seconds: wall; engine / server: CPU seconds; x local: the local store's engine backup "
        "(restore) time / the plain put (get) time, the ratio an engine with no work of its "
        "own would reach against this server"
    )
    print()
    # Here the server shares the cores with the engine, so a step is bound by the CPU both
    # spend; on a loaded machine this ratio moves less than the wall-clock one.
    print(
        "CPU ratio: the local store's engine CPU / (engine + server CPU) against this store, "
        "per step; the wall-clock ratio when both share the cores and CPU is the bound"
    )
    hdr = f"{'store':<16} {'backup cpu':>10} {'x local':>7} | {'restore cpu':>11} {'x local':>7}"
    print(hdr)
    print("-" * len(hdr))
    for kind, rows in results.items():
        cells = []
        for step, width in (("full", 10), ("restore", 11)):
            spent = med(rows, f"engine cpu {step}") + med(rows, f"server cpu {step}")
            ratio = med(local, f"engine cpu {step}") / spent if spent else 0.0
            cells.append(f"{spent:{width}.2f} {ratio:7.2f}")
        print(f"{kind:<16} {cells[0]} | {cells[1]}")


if __name__ == "__main__":
    sys.exit(main())
