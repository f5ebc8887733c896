"""Fleet benchmark: 40 lab VMs due at once, backed up by 1, 2 and 4 worker processes.

    .venv/bin/python bench/fleet.py [--vms 40] [--mib 32] [--fleets 1,2,4] [--procs 1]
        [--database-url postgres://postgres@127.0.0.1:5432/lifeboat_bench_fleet] [--keep]

Creates a scratch PostgreSQL database (dropped at the end unless --keep), one vault, one host
and `--vms` protected VMs, each on its own real ext4 image of `--mib` MiB about two thirds full
of data of its own (random, so nothing deduplicates across VMs). Then, for each fleet size, it
starts that many `manage.py qcluster` processes (each with `LIFEBOAT_WORKERS=--procs` job
processes), runs the dispatcher once (every VM due), and waits until every backup finished:
snapshot into the host's snapshot store, then transfer to the vault store (at most
TRANSFERS_PER_VAULT at once). Stores, jobs and recovery points are wiped between fleet sizes,
so each run is a full backup of every VM. The images stay in the page cache (warm reads).

Columns: wall time from the dispatch to the last job's end, aggregate MB/s (bytes the backups
read / wall), jobs per minute, the CPU the machine was busy (of all its cores, other tenants
included) and the CPU seconds the workers' processes used, and the check: every VM has exactly
one recovery point, in the vault tier, and no job failed or warned of more than the lab's
live reads.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / "work" / "fleet"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/lifeboat_bench_fleet"
MIB = 1 << 20
TICKS = os.sysconf("SC_CLK_TCK")


def admin_url(url: str) -> tuple[str, str]:
    u = urlparse(url)
    return u._replace(path="/postgres").geturl(), u.path.lstrip("/")


def create_database(url: str) -> None:
    import psycopg

    admin, name = admin_url(url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(url: str) -> None:
    import psycopg

    admin, name = admin_url(url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def environment(url: str, procs: int) -> dict[str, str]:
    """What the bench and its workers share: the database, the stores, the master key."""
    return {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "SECRET_KEY": "bench-fleet-secret-key-shared-by-every-process",
        "LIFEBOAT_DATA_DIR": str(WORK / "data"),
        "LIFEBOAT_VAULT_STORE_ROOT": str(WORK / "vaults"),
        "LIFEBOAT_MASTER_KEY_FILE": str(WORK / "data" / "master.key"),
        "LIFEBOAT_DEMO_ROOT": str(WORK / "demo"),
        "LIFEBOAT_WORKERS": str(procs),
        "PYTHONUNBUFFERED": "1",
    }


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from security import master_key

    master_key.install()


def populate(vms: int, mib: int) -> tuple[int, list[int]]:
    """One vault, one host, `vms` protected VMs on real ext4 images; (vault id, item ids)."""
    from django.contrib.auth import get_user_model

    from inventory.lab import images
    from inventory.models import Disk, Host, VirtualMachine
    from vaults.models import Vault
    from vaults.protection import protect_vm

    admin = get_user_model().objects.create_superuser("bench-admin", "bench@example.test")
    vault = Vault.create(name="bench-fleet", owner=admin)
    root = WORK / "host"
    for d in ("disks", "snapshots", "restores"):
        (root / d).mkdir(parents=True, exist_ok=True)
    host = Host.objects.create(
        name="bench-fleet-host",
        snapshot_root=str(root / "snapshots"),
        allowed_roots=[str(root / "disks"), str(root / "restores")],
    )
    vault.linked_hosts.add(host)
    policy = vault.policies.get()
    # About two thirds of the image in data files of at most 8 MiB, beside the lab's ring.
    data = int(mib * MIB * 2 / 3) - images.RING_BYTES
    items = []
    for i in range(vms):
        vm = VirtualMachine.objects.create(name=f"fleet-{i:02d}", host=host, power_state="running")
        files = {"/etc/hostname": vm.name.encode() + b"\n"}
        for n in range(0, data, 8 * MIB):
            files[f"/data/f{n // (8 * MIB)}.bin"] = os.urandom(min(8 * MIB, data - n))
        path = root / "disks" / f"{vm.name}.img"
        images.make_image(path, mib, vm.name, files)
        Disk.objects.create(vm=vm, lun=-1, path=str(path), size=path.stat().st_size)
        items.append(protect_vm(vault, by=admin, vm=vm, policy=policy).pk)
    return vault.pk, items


def reset(vault_id: int) -> None:
    """Every VM due again, with empty stores: the next run backs up everything in full."""
    from datetime import timedelta

    from django.utils import timezone
    from django_q.models import OrmQ, Task

    from jobs.models import Job
    from vaults.models import ItemState, ProtectedVM, RecoveryPoint

    Job.objects.all().delete()
    RecoveryPoint.objects.all().delete()
    OrmQ.objects.all().delete()
    Task.objects.all().delete()
    ProtectedVM.objects.filter(vault_id=vault_id).update(
        state=ItemState.INITIAL_BACKUP_PENDING,
        last_scheduled_slot=None,
        created_at=timezone.now() - timedelta(days=2),
    )
    for d in (WORK / "vaults", WORK / "host" / "snapshots"):
        shutil.rmtree(d, ignore_errors=True)
    (WORK / "host" / "snapshots").mkdir(parents=True)


def busy_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of every core since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def group_cpu(groups: set[int]) -> float:
    """CPU seconds used so far by the processes of `groups` and their reaped children."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[2]) in groups:
            total += sum(int(x) for x in stat[11:15])  # utime stime cutime cstime
    return total / TICKS


def start_workers(n: int, env: dict[str, str], logs: Path) -> list[subprocess.Popen]:
    procs = []
    for i in range(n):
        out = open(logs / f"worker-{n}-{i}.log", "wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, str(REPO / "manage.py"), "qcluster"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    # Up when each cluster's job processes are (django-q2 logs "Process-… ready for work").
    deadline = time.monotonic() + 60
    want = int(env["LIFEBOAT_WORKERS"])
    while time.monotonic() < deadline:
        texts = [(logs / f"worker-{n}-{i}.log").read_text(errors="replace") for i in range(n)]
        if all(t.count("ready for work") >= want for t in texts):
            return procs
        time.sleep(0.2)
    raise SystemExit(f"workers did not start: see {logs}")


def stop_workers(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def run(n: int, vault_id: int, items: list[int], env: dict[str, str]) -> dict[str, Any]:
    from collections import Counter

    from django.db.models import Max
    from django.utils import timezone

    from jobs import tasks
    from jobs.models import UNFINISHED, Job, Operation, Status
    from vaults.models import RecoveryPoint

    reset(vault_id)
    logs = WORK / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    workers = start_workers(n, env, logs)
    groups = {p.pid for p in workers}
    try:
        cpu0, (busy0, total0) = group_cpu(groups), busy_ticks()
        began = timezone.now()
        t0 = time.monotonic()
        assert tasks.dispatch(now=began)["backups"] == len(items)
        backups = Job.objects.filter(vault_id=vault_id, operation=Operation.BACKUP)
        while backups.filter(status__in=UNFINISHED).exists():
            if time.monotonic() - t0 > 1800:
                raise SystemExit("the backups did not finish within 30 min")
            time.sleep(0.2)
        cpu = group_cpu(groups) - cpu0
        busy1, total1 = busy_ticks()
    finally:
        stop_workers(workers)
    ended = backups.aggregate(end=Max("ended_at"))["end"]
    wall = (ended - began).total_seconds()
    jobs = list(backups)
    read = sum(int(j.result.get("bytes_read", 0)) for j in jobs)
    points = RecoveryPoint.objects.filter(vault_id=vault_id)
    rps = Counter(points.values_list("protected_item_id", flat=True))
    # The lab's images are read live (no reflink, no freeze): that warning is expected; any
    # other (a failed transfer) fails the check.
    expected = {"live_read"}
    ok = (
        all(j.status in (Status.COMPLETED, Status.COMPLETED_WITH_WARNINGS) for j in jobs)
        and all({w["code"] for w in j.warnings} <= expected for j in jobs)
        and len(jobs) == len(items)
        and rps == Counter(items)
        and not points.filter(in_vault_tier=False).exists()
    )
    claimers = len({j.worker for j in jobs})  # distinct job processes (pids)
    snap = sum(float(j.result.get("snapshot_seconds", 0)) for j in jobs) / len(jobs)
    xfer = sum(float(j.result.get("transfer", {}).get("seconds", 0)) for j in jobs) / len(jobs)
    return {
        "workers": n,
        "wall": wall,
        "mbps": read / 1e6 / wall,
        "jobs_min": len(jobs) / wall * 60,
        "busy": (busy1 - busy0) / max(total1 - total0, 1),
        "cpu": cpu,
        "snap": snap,
        "xfer": xfer,
        "claimers": claimers,
        "read": read,
        "ok": "yes" if ok else "NO",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--vms", type=int, default=40)
    parser.add_argument("--mib", type=int, default=32)
    parser.add_argument("--fleets", default="1,2,4", help="worker processes per run")
    parser.add_argument("--procs", type=int, default=1, help="LIFEBOAT_WORKERS of each worker")
    parser.add_argument("--keep", action="store_true", help="keep the database and work files")
    args = parser.parse_args()
    # A SIGTERM unwinds like Ctrl-C, so the workers (each in its own session) are killed too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))

    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "data").mkdir(parents=True)
    os.chmod(WORK / "data", 0o700)
    env = environment(args.database_url, args.procs)
    create_database(args.database_url)
    try:
        setup_django(env)
        print(f"building {args.vms} ext4 images of {args.mib} MiB ...", flush=True)
        vault_id, items = populate(args.vms, args.mib)
        rows = []
        for n in [int(x) for x in args.fleets.split(",")]:
            print(f"{n} worker(s) ...", flush=True)
            rows.append(run(n, vault_id, items, env))
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            drop_database(args.database_url)
            shutil.rmtree(WORK, ignore_errors=True)

    print()
    print(
        f"{args.vms} VMs, ext4 images of {args.mib} MiB ({human(rows[0]['read'] / len(items))} "
        f"read per backup), each worker a `manage.py qcluster` with LIFEBOAT_WORKERS="
        f"{args.procs}; {os.cpu_count()} cores; TRANSFERS_PER_VAULT 2"
    )
    print()
    print(
        "| workers | wall | MB/s (read / wall) | jobs/min | machine CPU busy | worker CPU s "
        "| snapshot s / job | transfer s / job | each VM exactly one RP |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['workers']} | {r['wall']:.1f} s | {r['mbps']:.1f} | {r['jobs_min']:.0f} "
            f"| {r['busy']:.0%} | {r['cpu']:.0f} | {r['snap']:.2f} | {r['xfer']:.2f} "
            f"| {r['ok']} |"
        )
    return 0


def human(n: float) -> str:
    return f"{n / MIB:.1f} MiB"


if __name__ == "__main__":
    sys.exit(main())
