#!/usr/bin/env python3
"""Restore speed of the two tiers versus `cp --sparse=always` + `sync`, on images of several
shapes, a per-stage profile of one restore, and the time to the first listed directory.

Shapes (sizes scale with --size, default 1 GiB):

* sparse: a --size file, 5% of it data (scattered 1 MiB-ish extents, half random, half text);
* small extents: a --size file with 4 KiB of data every 64 KiB (every chunk holds data, most
  of each chunk is zeros);
* incompressible: --size / 2 of random bytes (half, not all: random bytes are slow to make,
  and a restore of a quarter took about 0.3 s, where fixed costs and noise weighed);
* ext4: an ext4 image, about 60% full of real files from /usr (`mkfs.ext4 -d`).

Each is backed up with the engine's API into a snapshot-tier store (codec none, keys from the
vault store) and copied to the vault tier (codec zstd:1) with engine.transfer, as the product
does. Each timed step starts cold-ish: `sync(2)` and, when this process may,
`echo 3 > /proc/sys/vm/drop_caches`, so the store's chunk files and cp's source are read from
the disk. Restores run in this process with engine.restore(sync=True) (the restored file and
its directory fsynced: a restored disk is only usable once it is on disk) against
`cp --sparse=always --reflink=never` followed by `sync`; every output is compared with the
`cp --sparse=always --reflink=never` followed by `sync` of the copy (fsync: a global sync
would also wait for whatever the machine's other tenants left dirty); every output is
compared with the image (cmp) outside the timed region. The steps of a round alternate, each
round starting one step later, and each figure is the median of --runs rounds. CPU s is the
user + system time of the restore (of cp and sync for cp), from os.times().

The profile runs the stages of one restore one after the other on one thread (both tiers of
the ext4 shape, or the last shape run, cold), timing each with the wall clock and with the
thread's CPU clock: read the chunk file (`pipeline.read_into` a pooled aligned buffer, as
the engine reads), the keyless outer checksum, decrypt + authenticate (into the write buffer,
or a scratch buffer when compressed), decompress (into the write buffer), recompute the keyed
id, write (zero pages skipped, through the page cache with writeback started every 16 MiB, as
the engine writes), final fsync (where the writes not yet on the disk are waited for). Wall minus
CPU is time spent waiting for the disk. The restore itself overlaps these: reads on threads
of their own, decoding on as many threads as cores.

    .venv/bin/python bench/restore.py [--size 1G] [--runs 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import random
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
from engine import formats  # noqa: E402
from engine.pipeline import (  # noqa: E402
    AlignedBuffer,
    BufferPool,
    forget_cached,
    keep_heap,
    read_into,
    write_behind,
)
from engine.restore import WRITEBACK_STEP, write_data  # noqa: E402

SNAPSHOT_CODEC = "none"  # vaults/stores.py
VAULT_CODEC = "zstd:1"

TARGET = 0.8  # x the throughput of cp --sparse=always + sync, both tiers, every shape
TARGET_BROWSE = 1.0  # seconds to the first listed directory
PAGE = 4096


def cp_sparse(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "--sparse=always", "--reflink=never", str(src), str(dst)], check=True)


def cpu_seconds() -> float:
    """User + system seconds of this process and its waited-for children so far."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def same(a: Path, b: Path) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)]).returncode == 0


WARM = False  # --warm: never drop the page cache


def drop_caches() -> bool:
    """Flush dirty data and, if allowed, drop the page cache; False when not allowed."""
    os.sync()
    if WARM:
        return False
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def _mixed(rnd: random.Random, n: int) -> bytes:
    """n bytes, about half random and half text, so zstd finds something to do."""
    half = n // 2
    text = (b"lifeboat restore benchmark %d\n" % rnd.randrange(1 << 30)) * (n // 20 + 1)
    return rnd.randbytes(half) + text[: n - half]


def make_sparse(path: Path, size: int, share: float, seed: int = 1) -> None:
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        budget = int(size * share)
        while budget > 0:
            n = min(budget, rnd.randrange(256 << 10, 2 << 20) // PAGE * PAGE)
            off = rnd.randrange(0, max(1, (size - n) // PAGE)) * PAGE
            f.seek(off)
            f.write(_mixed(rnd, n))
            budget -= n


def make_small_extents(path: Path, size: int, every: int = 64 << 10, seed: int = 2) -> None:
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for off in range(0, size, every):
            f.seek(off + rnd.randrange(0, every // PAGE) * PAGE)
            f.write(_mixed(rnd, PAGE))


def make_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", default="1G", help="image size (default 1G)")
    ap.add_argument("--runs", type=int, default=3, help="runs per figure; the median is reported")
    ap.add_argument("--fill", type=float, default=0.6, help="how full the ext4 image is")
    ap.add_argument("--work", default=str(REPO / "bench" / "work"), help="parent of the work dir")
    ap.add_argument(
        "--warm", action="store_true", help="keep the page cache (only sync before each step)"
    )
    ap.add_argument("--shapes", default="sparse,small,random,ext4", help="which shapes to run")
    ap.add_argument(
        "--threads",
        default="",
        help="comma-separated decode thread counts to run besides the engine's default "
        "(e.g. 6), to compare",
    )
    args = ap.parse_args()
    size = parse_size(args.size)
    global WARM
    WARM = args.warm
    Path(args.work).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="restore-", dir=args.work))
    try:
        return run(args, size, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


SHAPES: dict[str, str] = {
    "sparse": "sparse, 5% data",
    "small": "small extents (4 KiB per 64 KiB)",
    "random": "incompressible",
    "ext4": "ext4 image",
}


def build(shape: str, image: Path, size: int, fill: float, work: Path) -> int:
    """Write the image of a shape; returns its size."""
    if shape == "sparse":
        make_sparse(image, size, 0.05)
    elif shape == "small":
        make_small_extents(image, size)
    elif shape == "random":
        size = max(size // 2, 1 << 20)
        make_random(image, size)
    else:
        make_image(image, size, fill, work / "staging")
        shutil.rmtree(work / "staging")
    return size


def run(args: argparse.Namespace, size: int, work: Path) -> int:
    kek = engine.create_platform_kek(work / "master.key")
    shapes = [s for s in args.shapes.split(",") if s]
    out = work / "out.img"
    cold = drop_caches()
    load_at_start = f"{os.getloadavg()[0]:.1f}"
    # shape, what, size, seconds, CPU seconds, identical
    rows: list[tuple[str, str, int, float, float, bool]] = []
    profiles: list[tuple[str, list[tuple[str, float, float]]]] = []
    browse = ""
    for shape in shapes:
        d = work / shape
        d.mkdir()
        image = d / "disk.img"
        print(f"{shape}: building the image ...", file=sys.stderr)
        shape_size = build(shape, image, size, args.fill, d)
        vault = engine.init_store(d / "vault", kek, codec=VAULT_CODEC)
        snap = engine.init_store(d / "snapshot", kek, codec=SNAPSHOT_CODEC, keys_from=d / "vault")
        print(f"{shape}: backup, transfer ...", file=sys.stderr)
        res = engine.backup(
            engine.BackupRequest(snap, [engine.DiskSource(0, str(image))], vm_name="bench")
        )
        rp = res.rp_id
        engine.transfer(snap, vault, rp)

        def tier(
            store: engine.Store, rp: str = rp, threads: int | None = None
        ) -> Callable[[], None]:
            def go() -> None:
                engine.restore(store, rp, {0: out}, sync=True, threads=threads)

            return go

        def cp(image: Path = image) -> None:
            cp_sparse(image, out)
            subprocess.run(["sync", str(out)], check=True)

        steps: list[tuple[str, Callable[[], None]]] = [
            ("snapshot tier", tier(snap)),
            ("vault tier", tier(vault)),
            ("cp", cp),
        ]
        for n in (int(t) for t in args.threads.split(",") if t):
            steps[-1:-1] = [
                (f"snapshot tier, {n} threads", tier(snap, threads=n)),
                (f"vault tier, {n} threads", tier(vault, threads=n)),
            ]
        times: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        identical = {name: True for name, _ in steps}
        for n in range(args.runs):
            # The order turns each round: the step after another that freed memory may get
            # some of it back before this VM's host takes it (bench/README.md, "This VM's
            # memory"), so each step is first once in len(steps) rounds.
            for name, fn in steps[n % len(steps) :] + steps[: n % len(steps)]:
                print(f"{shape} run {n + 1}/{args.runs}: {name}", file=sys.stderr)
                out.unlink(missing_ok=True)
                drop_caches()
                c0 = cpu_seconds()
                t0 = time.monotonic()
                fn()
                times.setdefault(name, []).append(time.monotonic() - t0)
                cpu.setdefault(name, []).append(cpu_seconds() - c0)
                identical[name] = identical[name] and same(image, out)
                out.unlink()
        for name, _ in steps:
            rows.append(
                (
                    shape,
                    name,
                    shape_size,
                    statistics.median(times[name]),
                    statistics.median(cpu[name]),
                    identical[name],
                )
            )
        if shape == "ext4" or (not profiles and shape == shapes[-1]):
            for tier_name, store in (("snapshot tier", snap), ("vault tier", vault)):
                profiles.append(
                    (f"{tier_name} of the {SHAPES[shape]} shape", profile_stages(store, rp, out))
                )
                out.unlink(missing_ok=True)
            if shape == "ext4":
                browse = browse_time(vault, rp, kek, args.runs, d / "vault")
        shutil.rmtree(d)

    lines = [
        f"Shapes of {human(size)} (incompressible: half of it); "
        f"{'cold: sync + drop_caches before each step' if cold else 'page cache NOT dropped (--warm or not allowed): sync before each step'}; "
        f"median of {args.runs}; {os.cpu_count()} cores; load average {load_at_start}. "
        "Restores with sync=True; cp is `cp --sparse=always --reflink=never` + `sync` of the "
        "copy. MiB/s = image size / seconds; x cp = cp's seconds / these seconds; "
        f"target >= {TARGET} x cp. CPU s: user + system seconds of the step.",
        "",
        "| shape | | seconds | MiB/s | x cp | target | CPU s | identical (cmp) |",
        "|---|---|---:|---:|---:|:---:|---:|:---:|",
    ]
    ok_all = True
    for shape, name, shape_size, s, cpu_s, same_bytes in rows:
        cp_s = next(r[3] for r in rows if r[0] == shape and r[1] == "cp")
        ratio = cp_s / s
        label = "cp --sparse=always + sync" if name == "cp" else name
        status = "" if name == "cp" else ("PASS" if ratio >= TARGET else "FAIL")
        # Rows with other thread counts are comparisons; the target is the default's.
        ok_all = ok_all and (status != "FAIL" or "threads" in name)
        lines.append(
            f"| {SHAPES[shape]} | {label} | {s:.2f} | {shape_size / (1 << 20) / s:.0f} | "
            f"{ratio:.2f} | {status} | {cpu_s:.2f} | {'yes' if same_bytes else 'NO'} |"
        )
    for profiled, profile in profiles:
        total = sum(t for _, t, _ in profile)
        total_cpu = sum(c for _, _, c in profile)
        lines += [
            "",
            f"Profile: the {profiled}, cold, each stage in turn on one thread "
            "(wait = wall - CPU: the disk).",
            "",
            "| stage | wall s | share | CPU s | wait s |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {name} | {t:.3f} | {t / total:.0%} | {c:.3f} | {max(0.0, t - c):.3f} |"
            for name, t, c in profile
        ]
        lines.append(
            f"| total | {total:.3f} | 100% | {total_cpu:.3f} | {max(0.0, total - total_cpu):.3f} |"
        )
        lines += ["", bottleneck(profile)]
    if browse:
        lines += ["", browse]
    identical_all = all(r[5] for r in rows)
    lines += [
        "",
        "| target | status |",
        "|---|:---:|",
        f"| every shape, both tiers >= {TARGET} x cp + sync | {'MET' if ok_all else 'NOT MET'} |",
        f"| restores byte-identical | {'MET' if identical_all else 'NOT MET'} |",
    ]
    print("\n".join(lines))
    return 0


def bottleneck(profile: list[tuple[str, float, float]]) -> str:
    """One sentence naming where a profiled restore spends its time: waiting on the disk or
    working on a core, and which stage most."""
    wait = {name: max(0.0, t - c) for name, t, c in profile}
    cpu = {name: c for name, _, c in profile}
    total_wait, total_cpu = sum(wait.values()), sum(cpu.values())
    top_wait = max(wait, key=lambda n: wait[n])
    top_cpu = max(cpu, key=lambda n: cpu[n])
    # The restore runs the CPU stages on every core while the disk serves reads and writes
    # in parallel: the side that is larger per core is what bounds it.
    cores = os.cpu_count() or 1
    side = "the disk" if total_wait >= total_cpu / cores else f"the CPU ({cores} cores)"
    return (
        f"Bottleneck: {side}. Waiting {total_wait:.3f} s (most in {top_wait}: "
        f"{wait[top_wait]:.3f} s), CPU {total_cpu:.3f} s (most in {top_cpu}: {cpu[top_cpu]:.3f} s), "
        f"{total_cpu / cores:.3f} s per core."
    )


def profile_stages(store: engine.Store, rp: str, out: Path) -> list[tuple[str, float, float]]:
    """(stage, wall seconds, CPU seconds) of one restore, the stages run in turn on one thread."""
    keep_heap()
    keys = store.require_keys()
    body = store.read_manifest(rp)
    index = store.load_index(rp, body["disks"][0])
    stages = [
        "read chunk file",
        "outer checksum",
        "decrypt + authenticate",
        "decompress",
        "verify keyed id",
        "write (zero pages skipped)",
        "fsync",
    ]
    wall = dict.fromkeys(stages, 0.0)
    cpu = dict.fromkeys(stages, 0.0)
    drop_caches()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    kicked = 0  # writeback started up to here, every WRITEBACK_STEP as the restore does
    clocks = (time.perf_counter, time.thread_time)
    # As the restore decodes: read into a pooled aligned buffer, decrypt straight into the
    # aligned write buffer (or, compressed, into a scratch buffer decompressed into it).
    pool = BufferPool(index.chunk_size + formats.DELTA_OVERHEAD)
    out, scratch = AlignedBuffer(index.chunk_size), AlignedBuffer(index.chunk_size + PAGE)
    try:
        os.ftruncate(fd, index.disk_size)
        for i in range(index.count):
            cid = index.digest(i)
            if cid == formats.ZERO_DIGEST:
                continue
            ln = index.chunk_len(i)
            marks = [tuple(c() for c in clocks)]
            held = read_into(store.chunk_path(cid), pool)
            assert isinstance(held, AlignedBuffer)
            blob = held.view[: held.length]
            marks.append(tuple(c() for c in clocks))
            assert formats.check_outer(blob) is None
            marks.append(tuple(c() for c in clocks))
            _m, version, codec_id, _f, plain_len = formats.CHUNK_HEADER.unpack_from(blob)
            assert version == formats.CHUNK_VERSION and plain_len == ln  # a full backup
            hs = formats.CHUNK_HEADER.size
            sealed = blob[hs + formats.NONCE_LEN : -formats.OUTER_LEN]
            into = scratch.view[: len(sealed) - formats.TAG_LEN] if codec_id else out.view[:ln]
            formats._aead(keys.dek).decrypt_into(
                blob[hs : hs + formats.NONCE_LEN], sealed, bytes(blob[:hs]) + cid, into
            )
            marks.append(tuple(c() for c in clocks))
            if codec_id == formats.CODEC_ZSTD:
                formats._decompress_into(into, out.view[:ln])
            marks.append(tuple(c() for c in clocks))
            assert formats.chunk_id(keys, out.view[:ln]) == cid
            pool.give(held)
            marks.append(tuple(c() for c in clocks))
            out.length = ln
            write_data(fd, out, i * index.chunk_size)
            end = i * index.chunk_size + ln
            if end - kicked >= WRITEBACK_STEP:
                # Started only: the restore waits for the step before on a thread of its own.
                write_behind(fd, (kicked, end - kicked), None)
                kicked = end
            marks.append(tuple(c() for c in clocks))
            for name, (a, b) in zip(stages, zip(marks, marks[1:], strict=False), strict=False):
                wall[name] += b[0] - a[0]
                cpu[name] += b[1] - a[1]
        t0, c0 = (c() for c in clocks)
        os.fsync(fd)
        forget_cached(fd)
        wall["fsync"] = time.perf_counter() - t0
        cpu["fsync"] = time.thread_time() - c0
    finally:
        os.close(fd)
    return [(name, wall[name], cpu[name]) for name in stages]


def browse_time(store: engine.Store, rp: str, kek: bytes, runs: int, path: Path) -> str:
    """Time to the first listed directory of a file recovery on the vault tier."""
    browse: list[float] = []
    fetched: list[int] = []
    entries = 0
    for _ in range(runs):
        t0 = time.monotonic()
        opened = engine.open_store(path, kek)
        with engine.open_disk(opened, rp, 0) as reader:
            with engine.fs.open_filesystem(reader, None) as fs:
                entries = len(fs.listdir("/"))
            browse.append(time.monotonic() - t0)
            fetched.append(reader.bytes_fetched)
    t_browse = statistics.median(browse)
    return (
        f"File recovery, vault tier (open_store + open_disk + open_filesystem + listdir('/'), "
        f"page cache warm): {t_browse * 1000:.0f} ms to the first listed directory "
        f"({entries} entries), {human(statistics.median(fetched))} fetched "
        f"({'MET' if t_browse < TARGET_BROWSE else 'NOT MET'}: < {TARGET_BROWSE:.0f} s)."
    )


if __name__ == "__main__":
    sys.exit(main())
