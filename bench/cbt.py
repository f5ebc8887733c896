"""Changed-block tracking on a libvirt domain: incremental backups through the dirty bitmap,
against the same incremental by full read and against reading the dirty extents alone.

    .venv/bin/python bench/cbt.py [--size-gib 4] [--data-gib 2.5] [--churn 0.02] [--repeat 3]

An OS-less TCG domain (q35, 256 MiB) gets a qcow2 disk of ``--size-gib`` holding about
``--data-gib`` of random bytes in 1/64-of-the-disk runs (written offline, before the domain
starts: a sparse raw file of random data converted with ``qemu-img convert``; that raw file is
also the image connector's source). Then, in one run:

* full backup over NBD (the libvirt connector, ``base:allocation``) into a fresh store, and the
  same content backed up from the raw file (engine.backup, the image connector's path);
* for each churn variant -- ``scattered`` (64 KiB writes at distinct random 64 KiB-aligned
  offsets) and ``contiguous`` (one run) -- ``--churn`` of the disk is written with random data
  through the monitor (HMP ``qemu-io write -s <file>``) while the domain runs, then:
  (a) incremental with the dirty bitmap (connector with the parent checkpoint),
  (b) the same incremental by full read (parent_checkpoint None: the engine reads every data
      extent and compares hashes with the parent),
  (c) floor: the dirty extents alone, read over the job's NBD export with the connector's
      NbdReader (connect, block status, pread of exactly the dirty extents, data discarded).

Every timed figure is the median of ``--repeat`` runs from the same parent; between runs the
previous incremental is deleted and its chunks swept (gc with no grace), so every run stores
its chunks as a real incremental would. Stores use codec ``none`` (the snapshot tier's).
The domain (named ``t-bench-<hex>``) is destroyed and undefined with its checkpoint metadata
and the work folder removed at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import engine  # noqa: E402
from engine.connectors import (  # noqa: E402
    ConnectorError,
    DiskSpec,
    DiskView,
    HookConfig,
    HypervisorSpec,
    LibvirtConnector,
    ParentDisk,
    VMSpec,
)
from engine.connectors.nbd import NbdReader, dirty_context  # noqa: E402

T = TypeVar("T")

URI = "qemu:///system"
PREFIX = "t-bench-"
TARGET = "vda"
MIB = 1 << 20
GIB = 1 << 30
CODEC = "none"  # the snapshot tier's codec (vaults/stores.py)
GRANULE = 64 << 10  # the bitmap granularity QEMU picks for these qcow2 disks
SLOTS = 64  # the data is laid out in runs of 1/64 of the disk
FLOOR_READ = 4 * MIB  # the floor's largest NBD request

TARGET_READ_RATIO = 1.1  # bytes read <= 1.1 x dirty bytes
TARGET_FLOOR_FACTOR, TARGET_FLOOR_SLACK = 2.0, 1.0  # incremental <= 2 x floor + 1 s
TARGET_SPEEDUP = 5.0  # incremental >= 5 x faster than by full read
TARGET_FULL_RATIO = 1.25  # full over NBD <= 1.25 x the image connector's full


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the disk


def make_disk(work: Path, size: int, data: int, seed: int) -> tuple[Path, Path, int]:
    """A sparse raw file with random bytes in runs of size/64, and its qcow2 conversion."""
    raw, qcow2 = work / "disk.raw", work / "disk.qcow2"
    slot = size // SLOTS
    count = max(1, min(SLOTS, round(data / slot)))
    rnd = random.Random(seed)
    with open(raw, "wb") as f:
        f.truncate(size)
        for n in sorted(rnd.sample(range(SLOTS), count)):
            f.seek(n * slot)
            left = slot
            while left:
                piece = min(left, 16 * MIB)
                f.write(os.urandom(piece))
                left -= piece
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)],
        check=True,
    )
    return raw, qcow2, count * slot


def domain_xml(name: str, disk: Path) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='{TARGET}' bus='virtio'/>
    </disk>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


class Domain:
    """The bench's domain, reached by UUID through a connection that is opened again when
    libvirtd restarts under us (other users of this host restart it)."""

    def __init__(self, name: str, uuid_: str) -> None:
        self.name = name
        self.uuid = uuid_
        self._conn: Any = None

    def dom(self) -> Any:
        if self._conn is None or not self._conn.isAlive():
            self._conn = wait_for_libvirt()
        return self._conn.lookupByUUIDString(self.uuid)

    def monitor(self, command: str) -> None:
        """One qemu-io command on the running disk through HMP; qemu-io needs the qdev path
        (a node name gives a permission conflict) and prints errors back, statistics to its
        log. A write is idempotent, so a command lost to a libvirtd restart is sent again."""
        import libvirt
        import libvirt_qemu

        qdev = "/machine/peripheral/virtio-disk0/virtio-backend"
        hmp = libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
        for attempt in range(3):
            try:
                out = libvirt_qemu.qemuMonitorCommand(
                    self.dom(), f'qemu-io -d {qdev} "{command}"', hmp
                )
                break
            except libvirt.libvirtError as e:
                if attempt == 2:
                    raise
                say(f"monitor: {e}; again once libvirtd answers")
                self.close()
        if out.strip():
            raise RuntimeError(f"qemu-io {command}: {out.strip()}")

    def end_stale_job(self) -> None:
        """End a backup job left behind: libvirtd 9.0 restarted during a pull-mode backup
        keeps the job (owned by "init") and refuses every new one until it is aborted."""
        import libvirt

        try:
            dom = self.dom()
            if dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
                dom.abortJob()
                say(f"{self.name}: ended a backup job left by a libvirtd restart")
        except libvirt.libvirtError as e:
            say(f"{self.name}: ending a stale job: {e}")
            self.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):
                conn.close()


def wait_for_libvirt(timeout: float = 120.0) -> Any:
    """A connection to libvirtd, waiting while it restarts."""
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return libvirt.open(URI)
        except libvirt.libvirtError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@contextmanager
def running_domain(disk: Path) -> Iterator[Domain]:
    """A started t-bench-<hex> domain on ``disk``; destroyed and undefined with its
    checkpoint metadata on the way out, whatever happened (on a fresh connection: the one
    that made it may have died with a libvirtd restart)."""
    import libvirt

    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    conn = wait_for_libvirt()
    try:
        dom = conn.defineXML(domain_xml(name, disk))
        domain = Domain(name, dom.UUIDString())
    finally:
        conn.close()
    try:
        domain.dom().create()
        yield domain
    finally:
        domain.close()
        conn = wait_for_libvirt()
        try:
            dom = conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
        except libvirt.libvirtError as e:
            say(f"removing {name}: {e} (virsh undefine {name} --checkpoints-metadata)")
        finally:
            conn.close()


def churn(dom: Domain, work: Path, size: int, nbytes: int, scattered: bool, seed: int) -> int:
    """Write about ``nbytes`` of random data into the running disk; returns bytes written.
    Each write reads its own file of random bytes (``write -s``), so no two writes match."""
    rnd = random.Random(seed)
    src = work / "churn"
    src.mkdir(exist_ok=True)
    granules = max(1, nbytes // GRANULE)
    if scattered:
        runs = [(g * GRANULE, GRANULE) for g in rnd.sample(range(size // GRANULE), granules)]
    else:
        # Aligned to the bitmap but not to the engine's chunk, as a guest's write would be.
        start = rnd.randrange(0, size // GRANULE - granules) * GRANULE
        runs = [(start, granules * GRANULE)]
    for n, (off, ln) in enumerate(runs):
        f = src / f"w{n}"
        f.write_bytes(rnd.randbytes(ln))
        dom.monitor(f"write -q -s {f} {off} {ln}")
        f.unlink()
    dom.monitor("flush")
    return sum(ln for _o, ln in runs)


# --------------------------------------------------------------------------- backups


@dataclass
class Taken:
    """One backup through the connector: wall time (the whole take_snapshot), the time of
    the capture alone, what the view said and what the engine read."""

    seconds: float
    capture_seconds: float
    rp_id: str
    checkpoint: str | None
    size: int
    detection: str
    dirty: int | None  # dirty-extent bytes the view carried
    dirty_chunks: int | None  # those rounded out to the store's chunks
    bytes_read: int


@dataclass
class Chain:
    """The protected domain: store, parent recovery point and parent checkpoint."""

    dom: Domain
    disk: Path
    store: engine.Store
    work: Path
    parent_rp: str | None = None
    parent_checkpoint: str | None = None
    parent_disks: dict[str, ParentDisk] = field(default_factory=dict)

    def spec(self, rp_id: str, checkpoint: str | None) -> VMSpec:
        hv = HypervisorSpec(
            uri=URI,
            domain=self.dom.uuid,
            rp_id=rp_id,
            parent_checkpoint=checkpoint,
            parent_disks=dict(self.parent_disks),
        )
        disks = [DiskSpec(lun=-1, path=self.disk, target=TARGET)]
        return VMSpec(self.dom.name, disks=disks, hooks=HookConfig(), hypervisor=hv)

    def snapshot(
        self, capture: Callable[[list[DiskView]], Any], *, bitmap: bool
    ) -> tuple[float, Any]:
        rp_id = str(uuid.uuid4())
        vm = self.spec(rp_id, self.parent_checkpoint if bitmap else None)
        workdir = Path(tempfile.mkdtemp(prefix="job-", dir=self.work))
        try:
            t0 = time.monotonic()
            # crash_only: an OS-less domain has no guest agent to wait for
            outcome = LibvirtConnector().take_snapshot(
                vm, crash_only=True, workdir=workdir, capture=capture
            )
            return time.monotonic() - t0, outcome
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def back_up(self, *, bitmap: bool = True) -> Taken:
        rp_id = ""
        seen: list[DiskView] = []
        spent = [0.0]

        def capture(views: list[DiskView]) -> engine.BackupResult:
            nonlocal rp_id
            t0 = time.monotonic()
            seen.extend(views)
            sources = [
                engine.DiskSource(v.lun, str(v.path), v.changed_extents, v.reader) for v in views
            ]
            res = engine.backup(
                engine.BackupRequest(self.store, sources, "bench", parent=self.parent_rp)
            )
            rp_id = res.rp_id
            spent[0] = time.monotonic() - t0
            return res

        seconds, outcome = self.snapshot(capture, bitmap=bitmap)
        view = seen[0]
        dirty = chunked = None
        if view.changed_extents is not None:
            dirty = sum(ln for _o, ln in view.changed_extents)
            chunked = chunk_bytes(view.changed_extents, self.store.chunk_size, view.size or 0)
        return Taken(
            seconds,
            spent[0],
            rp_id,
            outcome.checkpoint,
            view.size or 0,
            view.change_detection or "",
            dirty,
            chunked,
            outcome.result.bytes_read,
        )

    def adopt(self, t: Taken) -> None:
        """``t`` becomes the parent of the next backups."""
        self.parent_rp = t.rp_id
        self.parent_checkpoint = t.checkpoint
        self.parent_disks = {TARGET: ParentDisk(t.size, str(self.disk))}

    def drop(self, t: Taken) -> None:
        """Forget a repeat's recovery point and sweep its chunks, so the next repeat stores
        its own as a real incremental would (the checkpoint is pruned by the next backup)."""
        engine.delete_recovery_point(self.store, t.rp_id)
        engine.gc(self.store, grace_seconds=0)

    def floor(self) -> tuple[float, int]:
        """Seconds to connect to the job's export, ask for the dirty extents and pread
        exactly them (one thread, data discarded); returns (seconds, bytes read)."""
        got: list[tuple[float, int]] = []

        def capture(views: list[DiskView]) -> None:
            if views[0].changed_extents is None:
                raise ChainBroken(f"the floor's backup read in full: {views[0].change_reason}")
            # The connector's own reader is already connected; open a fresh one, as a
            # reader that only wants the dirty extents would.
            sock = export_socket(self.dom)
            t0 = time.monotonic()
            reader = NbdReader.unix(str(sock), TARGET, contexts=[dirty_context(TARGET)])
            try:
                total = 0
                for off, ln in reader.dirty_extents(TARGET):
                    end = off + ln
                    while off < end:
                        n = min(FLOOR_READ, end - off)
                        total += len(reader.pread(n, off))
                        off += n
            finally:
                reader.close()
            got.append((time.monotonic() - t0, total))

        self.snapshot(capture, bitmap=True)
        return got[0]


class ChainBroken(RuntimeError):
    """The parent checkpoint is gone (a libvirtd restart mid-job can cost it): the figures
    of this run would not compare the same changes, so the run stops."""


RETRIES = 5
RETRY_PAUSE = 5.0  # seconds: a restarted libvirtd holds a domain's lock while it reconnects
retried: list[str] = []


def again(dom: Domain, what: str, fn: Callable[[], T]) -> T:
    """``fn()``, run again (up to RETRIES times) when libvirtd went away under it: other
    users of this host restart it. Each retry is reported under the table."""
    import libvirt

    for attempt in range(RETRIES + 1):
        try:
            return fn()
        except (ConnectorError, libvirt.libvirtError, OSError) as e:
            if attempt == RETRIES:
                raise
            retried.append(f"{what}: {e}")
            say(f"{what} failed ({e}); again once libvirtd answers")
            time.sleep(RETRY_PAUSE)
            dom.end_stale_job()
    raise AssertionError("unreachable")


def export_socket(dom: Domain) -> str:
    """The unix socket of the domain's running pull-mode backup job, as libvirt reports it
    (the connector puts it under its workdir, or under /tmp when that path is too long)."""
    xml = ET.fromstring(dom.dom().backupGetXMLDesc(0))
    server = xml.find("server")
    if server is None or not server.get("socket"):
        raise RuntimeError("the backup job has no unix socket")
    return str(server.get("socket"))


def chunk_bytes(extents: Sequence[tuple[int, int]], chunk: int, size: int) -> int:
    """Bytes of the store's chunks that the extents touch."""
    touched: set[int] = set()
    for off, ln in extents:
        touched.update(range(off // chunk, (off + ln - 1) // chunk + 1))
    return sum(min(chunk, size - n * chunk) for n in touched)


def image_full(raw: Path, store_path: Path, kek: bytes) -> tuple[float, int]:
    """The image connector's full backup of the same content: engine.backup of the raw file."""
    shutil.rmtree(store_path, ignore_errors=True)
    store = engine.init_store(store_path, kek, codec=CODEC)
    t0 = time.monotonic()
    res = engine.backup(engine.BackupRequest(store, [engine.DiskSource(-1, str(raw))], "bench"))
    seconds = time.monotonic() - t0
    shutil.rmtree(store_path)
    return seconds, res.bytes_read


# --------------------------------------------------------------------------- the run


@dataclass
class Row:
    label: str
    seconds: float
    bytes_read: int
    dirty: int | None = None
    dirty_chunks: int | None = None
    capture_seconds: float | None = None


@dataclass
class Variant:
    name: str
    churned: int
    a: Row
    b: Row
    c: Row


def med(values: Sequence[float]) -> float:
    return statistics.median(values)


def run_variant(chain: Chain, name: str, churned: int, repeat: int) -> Variant:
    a: list[Taken] = []
    floors: list[tuple[float, int]] = []
    for n in range(repeat):
        say(f"{name}: run {n + 1}/{repeat}: incremental with the dirty bitmap, floor")
        t = again(chain.dom, "incremental", lambda: chain.back_up(bitmap=True))
        if t.detection != "dirty_bitmap":
            raise ChainBroken(f"expected a dirty-bitmap incremental, got {t.detection}")
        a.append(t)
        chain.drop(t)
        floors.append(again(chain.dom, "floor", chain.floor))
    # A backup without a parent checkpoint starts a new chain (every lifeboat-* checkpoint is
    # deleted), so the full-read runs come after the bitmap runs; the last becomes the parent.
    b: list[Taken] = []
    for n in range(repeat):
        say(f"{name}: run {n + 1}/{repeat}: incremental by full read")
        t = again(chain.dom, "full-read incremental", lambda: chain.back_up(bitmap=False))
        b.append(t)
        if n < repeat - 1:
            chain.drop(t)
    chain.adopt(b[-1])
    dirty = {t.dirty for t in a}
    if len(dirty) != 1:
        say(f"{name}: dirty bytes differ between runs: {sorted(d or 0 for d in dirty)}")
    return Variant(
        name,
        churned,
        Row(
            "(a) incremental, dirty bitmap",
            med([t.seconds for t in a]),
            int(med([t.bytes_read for t in a])),
            a[0].dirty,
            a[0].dirty_chunks,
            med([t.capture_seconds for t in a]),
        ),
        Row(
            "(b) incremental, full read",
            med([t.seconds for t in b]),
            int(med([t.bytes_read for t in b])),
            a[0].dirty,
            a[0].dirty_chunks,
            med([t.capture_seconds for t in b]),
        ),
        Row(
            "(c) floor: dirty extents over NBD",
            med([s for s, _ in floors]),
            int(med([r for _, r in floors])),
            a[0].dirty,
            a[0].dirty_chunks,
        ),
    )


def fmt_row(r: Row) -> str:
    mibs = r.bytes_read / MIB / r.seconds if r.seconds > 0 else 0.0
    ratio = f"{r.bytes_read / r.dirty:.2f} x" if r.dirty else ""
    ratio_c = f"{r.bytes_read / r.dirty_chunks:.2f} x" if r.dirty_chunks else ""
    cap = f"{r.capture_seconds:.2f} s" if r.capture_seconds is not None else ""
    return (
        f"| {r.label} | {r.seconds:.2f} s | {cap} | {human(r.bytes_read)} | "
        f"{human(r.dirty) if r.dirty is not None else ''} | "
        f"{human(r.dirty_chunks) if r.dirty_chunks is not None else ''} | "
        f"{ratio} | {ratio_c} | {mibs:.0f} |"
    )


def report(
    args: argparse.Namespace,
    size: int,
    data: int,
    full_nbd: Row,
    full_image: Row,
    variants: list[Variant],
) -> bool:
    print(
        f"Disk {human(size)} qcow2, {human(data)} of random data; churn {args.churn:.1%} of the "
        f"disk in random data; chunk {human(engine.DEFAULT_CHUNK_SIZE)}, codec {CODEC}; "
        f"median of {args.repeat}; {os.cpu_count()} cores, TCG."
    )
    print()
    print(
        "| | seconds | engine s | bytes read | dirty extents | dirty chunks (1 MiB) "
        "| read / dirty | read / dirty chunks | MiB/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(fmt_row(full_nbd))
    print(fmt_row(full_image))
    for v in variants:
        print(f"| **{v.name}** ({human(v.churned)} written) | | | | | | | | |")
        for r in (v.a, v.b, v.c):
            print(fmt_row(r))
    print()
    checks: list[tuple[str, bool, str]] = []
    for v in variants:
        a, b, c = v.a, v.b, v.c
        assert a.dirty is not None and a.dirty_chunks is not None
        raw = a.bytes_read / a.dirty if a.dirty else float("inf")
        rounded = a.bytes_read / a.dirty_chunks if a.dirty_chunks else float("inf")
        checks.append(
            (
                f"{v.name}: bytes read <= {TARGET_READ_RATIO} x dirty extents rounded to "
                "the engine's chunks",
                rounded <= TARGET_READ_RATIO,
                f"{rounded:.2f} x (vs the 64 KiB extents themselves: {raw:.2f} x)",
            )
        )
        limit = TARGET_FLOOR_FACTOR * c.seconds + TARGET_FLOOR_SLACK
        checks.append(
            (
                f"{v.name}: incremental <= {TARGET_FLOOR_FACTOR:g} x floor + "
                f"{TARGET_FLOOR_SLACK:g} s",
                a.seconds <= limit,
                f"{a.seconds:.2f} s vs {limit:.2f} s",
            )
        )
        speedup = b.seconds / a.seconds if a.seconds > 0 else float("inf")
        checks.append(
            (
                f"{v.name}: incremental >= {TARGET_SPEEDUP:g} x faster than by full read",
                speedup >= TARGET_SPEEDUP,
                f"{speedup:.1f} x",
            )
        )
    full_ratio = full_nbd.seconds / full_image.seconds
    checks.append(
        (
            f"full over NBD <= {TARGET_FULL_RATIO} x the image connector's full",
            full_ratio <= TARGET_FULL_RATIO,
            f"{full_ratio:.2f} x",
        )
    )
    print("| target | status | measured |")
    print("|---|:---:|---|")
    for what, ok, measured in checks:
        print(f"| {what} | {'PASS' if ok else 'FAIL'} | {measured} |")
    print()
    print(
        "seconds: the whole backup through the connector (backup job, checkpoint, NBD, "
        "engine, job end); engine s: the engine's part alone (capture). Floor: a fresh "
        "NbdReader on the job's export, block status of the dirty bitmap, one-thread pread "
        "of exactly the dirty extents. MiB/s: bytes read / seconds. The engine reads whole "
        f"{human(engine.DEFAULT_CHUNK_SIZE)} chunks that overlap a dirty extent (it needs "
        "the chunk's bytes to hash and store it), so the read target is judged against the "
        "dirty extents rounded out to those chunks; scattered 64 KiB writes read up to 16 x "
        "the dirty extents themselves."
    )
    for line in retried:
        print(f"Run again after libvirtd went away: {line}")
    return all(ok for _w, ok, _m in checks)


def run(args: argparse.Namespace, work: Path) -> int:
    size = int(args.size_gib * GIB)
    size -= size % (SLOTS * GRANULE)
    say(f"writing {human(args.data_gib * GIB)} of random data into a {human(size)} disk ...")
    raw, qcow2, data = make_disk(work, size, int(args.data_gib * GIB), args.seed)
    kek = os.urandom(32)
    with running_domain(qcow2) as dom:
        say(f"domain {dom.name} started")
        nbd_runs: list[Taken] = []
        image_runs: list[tuple[float, int]] = []
        store_path = work / "store"
        chain: Chain | None = None
        for n in range(args.repeat):
            say(f"run {n + 1}/{args.repeat}: full over NBD, full of the raw file")
            shutil.rmtree(store_path, ignore_errors=True)
            store = engine.init_store(store_path, kek, codec=CODEC)
            chain = Chain(dom, qcow2, store, work)
            nbd_runs.append(again(dom, "full over NBD", partial(chain.back_up, bitmap=False)))
            image_runs.append(image_full(raw, work / "image-store", kek))
        assert chain is not None
        chain.adopt(nbd_runs[-1])
        raw.unlink()  # only the image connector's backup read it
        full_nbd = Row(
            "full over NBD (libvirt connector)",
            med([t.seconds for t in nbd_runs]),
            int(med([t.bytes_read for t in nbd_runs])),
            capture_seconds=med([t.capture_seconds for t in nbd_runs]),
        )
        full_image = Row(
            "full of the raw file (image connector)",
            med([s for s, _ in image_runs]),
            int(med([r for _, r in image_runs])),
            capture_seconds=med([s for s, _ in image_runs]),
        )
        variants = []
        for k, (name, scattered) in enumerate(
            (("scattered 64 KiB writes", True), ("contiguous run", False))
        ):
            nbytes = int(size * args.churn)
            say(f"{name}: writing {human(nbytes)} through the monitor ...")
            churned = churn(dom, work, size, nbytes, scattered, args.seed + 1 + k)
            variants.append(run_variant(chain, name, churned, args.repeat))
    ok = report(args, size, data, full_nbd, full_image, variants)
    return 0 if ok or not args.strict else 1


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size-gib", type=float, default=4.0, help="disk size (default 4)")
    ap.add_argument("--data-gib", type=float, default=2.5, help="random data (default 2.5)")
    ap.add_argument("--churn", type=float, default=0.02, help="share of the disk rewritten")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--work", default=str(REPO / "bench" / "work"), help="parent of the work dir")
    args = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the domain and the work folder go either way.
    signal.signal(signal.SIGTERM, _interrupt)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cbt-", dir=args.work))
    try:
        return run(args, work)
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
