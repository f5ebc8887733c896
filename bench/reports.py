"""Overview and report pages at scale: render time and queries on PostgreSQL.

    .venv/bin/python bench/reports.py [--vaults 10] [--items 500] [--days 30] [--runs 3]
        [--database-url postgres://postgres@127.0.0.1:5432/lifeboat_bench_reports]

Creates the scratch database if missing, migrates it, and (once; reused while the counts
match) bulk-creates `--vaults` vaults with `--items` protected VMs, one daily backup job per
item and day for `--days` days (one in twenty failed, one in ten with warnings, each with its
data figures), one recovery point per successful backup, and the usage history those days
would have recorded (`vaults.usage.record_vault` run as of each day, on local stores that
hold nothing, so the sizes are the catalog's). Then renders the overview and each report as a
site administrator through Django's test client, `--runs` times, and prints the median time
and the query count of each page (and of its CSV where it has one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/lifeboat_bench_reports"


def ensure_database(url: str) -> None:
    import psycopg

    u = urlparse(url)
    name = u.path.lstrip("/")
    admin = u._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
            print(f"created database {name}")


def setup_django(url: str, work: Path) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("LIFEBOAT_VAULT_STORE_ROOT", str(work / "stores"))
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.ALLOWED_HOSTS = ["*"]
    call_command("migrate", verbosity=0, interactive=False)


def populate(vaults: int, items: int, days: int) -> None:
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from inventory.models import Host, VirtualMachine
    from jobs.models import Job, Operation, Status
    from policies.models import BackupPolicy
    from vaults.models import (
        AuditEvent,
        ItemUsage,
        ProtectedVM,
        RecoveryPoint,
        Vault,
        VaultUsage,
    )
    from vaults.usage import record_vault

    if (
        Vault.objects.filter(name__startswith="bench-").count() == vaults
        and ProtectedVM.objects.count() == items
        and VaultUsage.objects.values("day").distinct().count() == days
    ):
        return
    print(f"populating {vaults} vaults, {items} items, {days} days ...", flush=True)
    started = time.monotonic()
    today = timezone.now().replace(hour=2, minute=0, second=0, microsecond=0)
    with transaction.atomic():
        for model in (ItemUsage, VaultUsage, Job, RecoveryPoint, ProtectedVM, VirtualMachine):
            model.objects.all()._raw_delete(model.objects.db)
        BackupPolicy.objects.all().delete()
        Host.objects.all().delete()
        Vault.objects.all().delete()
        AuditEvent.objects.all()._raw_delete(AuditEvent.objects.db)
        User = get_user_model()
        admin = User.objects.filter(username="bench-admin").first() or User.objects.create_user(
            "bench-admin", is_superuser=True
        )
        vault_rows = Vault.objects.bulk_create(
            Vault(name=f"bench-{i:02d}", created_by=admin) for i in range(vaults)
        )
        policies = BackupPolicy.objects.bulk_create(
            BackupPolicy(
                vault=v,
                name="daily",
                schedule={"frequency": "daily", "time": "02:00"},
                retention={"daily": {"days": 30}},
            )
            for v in vault_rows
        )
        hosts = Host.objects.bulk_create(
            Host(name=f"bench-host-{i:02d}", snapshot_root="/tmp/bench", allowed_roots=["/tmp"])
            for i in range(vaults)
        )
        vms = VirtualMachine.objects.bulk_create(
            VirtualMachine(name=f"bench-vm-{i:05d}", host=hosts[i % vaults]) for i in range(items)
        )
        protected = ProtectedVM.objects.bulk_create(
            ProtectedVM(
                vault=vault_rows[i % vaults],
                vm=vm,
                policy=policies[i % vaults],
                state="protected",
            )
            for i, vm in enumerate(vms)
        )
        ProtectedVM.objects.update(created_at=today - timedelta(days=days + 1))
        jobs, rps = [], []
        for d in range(days, 0, -1):
            at = today - timedelta(days=d - 1)
            for i, item in enumerate(protected):
                status = (
                    Status.FAILED
                    if (i + d) % 20 == 0
                    else Status.COMPLETED_WITH_WARNINGS
                    if (i + d) % 10 == 0
                    else Status.COMPLETED
                )
                jobs.append(
                    Job(
                        vault_id=item.vault_id,
                        protected_item=item,
                        vm_name=f"bench-vm-{i:05d}",
                        operation=Operation.BACKUP,
                        status=status,
                        started_at=at,
                        ended_at=at + timedelta(minutes=3),
                        result={
                            "bytes_read": 64 << 20,
                            "bytes_changed": 4 << 20,
                            "bytes_stored": 2 << 20,
                            "transfer": {"bytes_copied": 2 << 20},
                        },
                    )
                )
                if status != Status.FAILED:
                    rps.append(
                        RecoveryPoint(
                            vault_id=item.vault_id,
                            protected_item=item,
                            time=at,
                            consistency="crash",
                            in_vault_tier=True,
                            size_bytes=8 << 30,
                            disks=[{"lun": -1, "size": 8 << 30, "bytes_stored": 2 << 20}],
                        )
                    )
        Job.objects.bulk_create(jobs, batch_size=5000)
        # created_at is auto_now_add: put each job on its day.
        for d in range(days, 0, -1):
            at = today - timedelta(days=d - 1)
            Job.objects.filter(started_at=at).update(created_at=at)
        RecoveryPoint.objects.bulk_create(rps, batch_size=5000)
    # The history those days would have recorded: the recorder itself, as of each day, over
    # the recovery points that existed then.
    for d in range(days, 0, -1):
        at = today - timedelta(days=d - 1) + timedelta(hours=20)
        later = list(RecoveryPoint.objects.filter(time__gt=at).values_list("pk", "time"))
        RecoveryPoint.objects.filter(time__gt=at).update(soft_deleted_at=at)
        for vault in vault_rows:
            record_vault(vault, at)
        RecoveryPoint.objects.filter(pk__in=[pk for pk, _ in later]).update(soft_deleted_at=None)
    print(f"populated in {time.monotonic() - started:.1f} s", flush=True)


def measure(runs: int) -> list[tuple[str, int, float]]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench-admin"))
    pages = [
        ("/", "overview"),
        ("/reports/backup-items/", "backup items"),
        ("/reports/usage/", "usage (by vault)"),
        ("/reports/usage/?by=vm", "usage (by VM)"),
        ("/reports/jobs/", "jobs"),
        ("/reports/adherence/", "adherence"),
        ("/reports/usage/?by=vm&format=csv", "usage (by VM), CSV"),
        ("/api/v1/reports/jobs/", "API jobs"),
    ]
    out = []
    for url, _ in pages:
        client.get(url, HTTP_HOST="localhost")  # warm: imports, templates, URLconf
    for url, name in pages:
        times = []
        for _ in range(runs):
            with CaptureQueriesContext(connection) as ctx:
                t = time.perf_counter()
                response = client.get(url, HTTP_HOST="localhost")
                times.append(time.perf_counter() - t)
            assert response.status_code == 200, (url, response.status_code)
        out.append((name, len(ctx), statistics.median(times) * 1000))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vaults", type=int, default=10)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    args = parser.parse_args()
    work = REPO / "bench" / "work" / "reports"
    work.mkdir(parents=True, exist_ok=True)
    ensure_database(args.database_url)
    setup_django(args.database_url, work)
    populate(args.vaults, args.items, args.days)
    rows = measure(args.runs)
    print(
        f"\n{args.vaults} vaults, {args.items} protected VMs, {args.days} days "
        f"({args.items * args.days} backup jobs), median of {args.runs}, "
        f"{datetime.now(UTC):%Y-%m-%d}\n"
    )
    print("| Page | Queries | Time (ms) |")
    print("|---|---:|---:|")
    for name, queries, ms in rows:
        print(f"| {name} | {queries} | {ms:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
