"""Dispatcher benchmark: one tick over 10,000 protected VMs of which 1,000 are due.

    .venv/bin/python bench/dispatch.py [--items 10000] [--due 1000] [--runs 3]
        [--database-url postgres://postgres@127.0.0.1:5432/lifeboat_bench_dispatch]

Creates the scratch PostgreSQL database if it is missing, migrates it, bulk-creates hosts,
VMs, policies and protected items (once; reused while the counts match), then times
`jobs.tasks.dispatch(now)` on fresh state (jobs, sub-tasks and django-q2 messages deleted,
the due items' last slot reset) `--runs` times. Queries are counted with
`CaptureQueriesContext`. The target: < 2 s per tick, no query per not-due VM and a small
constant number per due VM.
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
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/lifeboat_bench_dispatch"
NOW = datetime(2030, 3, 12, 23, 30, tzinfo=UTC)
POLICY_TIMES = ["01:00", "04:00", "09:30", "13:00", "18:45"]


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


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def populate(items: int, due: int) -> None:
    """Hosts, VMs, policies and protected items, bulk-created; `due` items are due at NOW."""
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from inventory.models import Host, VirtualMachine
    from jobs.models import Job
    from policies import schedule
    from policies.models import BackupPolicy
    from vaults.models import AuditEvent, ProtectedVM, RecoveryPoint, Vault

    if ProtectedVM.objects.count() == items and (
        ProtectedVM.objects.filter(last_scheduled_slot=None).count() == due
    ):
        return
    print(f"populating {items} protected VMs ...", flush=True)
    started = time.monotonic()
    with transaction.atomic():
        Job.objects.all().delete()
        RecoveryPoint.objects.all().delete()
        ProtectedVM.objects.all().delete()
        VirtualMachine.objects.all().delete()
        BackupPolicy.objects.all().delete()
        Host.objects.all().delete()
        Vault.objects.all().delete()
        AuditEvent.objects.all()._raw_delete(AuditEvent.objects.db)
        User = get_user_model()
        admin = User.objects.filter(username="bench-admin").first() or User.objects.create_user(
            "bench-admin", is_superuser=True
        )
        vaults = Vault.objects.bulk_create(
            Vault(name=f"bench-vault-{i:02d}", created_by=admin) for i in range(10)
        )
        policies = BackupPolicy.objects.bulk_create(
            BackupPolicy(
                vault=v,
                name=f"daily-{t.replace(':', '')}",
                schedule={"frequency": "daily", "time": t},
                retention={"daily": {"days": 30}},
            )
            for v in vaults
            for t in POLICY_TIMES
        )
        hosts = Host.objects.bulk_create(
            Host(name=f"bench-host-{i:02d}", snapshot_root="/tmp/bench", allowed_roots=["/tmp"])
            for i in range(10)
        )
        vms = VirtualMachine.objects.bulk_create(
            VirtualMachine(name=f"bench-vm-{i:05d}", host=hosts[i % len(hosts)])
            for i in range(items)
        )
        latest = {p.pk: schedule.previous_run(p.representation(), NOW) for p in policies}
        created = NOW - timedelta(days=10)
        rows = []
        for i, vm in enumerate(vms):
            policy = policies[i % len(policies)]
            is_due = i % (items // due) == 0 if due else False
            rows.append(
                ProtectedVM(
                    vault_id=policy.vault_id,
                    vm=vm,
                    policy=policy,
                    state="protected",
                    last_scheduled_slot=None if is_due else latest[policy.pk],
                )
            )
        ProtectedVM.objects.bulk_create(rows, batch_size=2000)
        ProtectedVM.objects.update(created_at=created)
    print(f"populated in {time.monotonic() - started:.1f} s", flush=True)


def reset(due_ids: list[int]) -> None:
    from django_q.models import OrmQ

    from jobs.models import Job, SubTask
    from vaults.models import ProtectedVM

    SubTask.objects.all()._raw_delete(SubTask.objects.db)
    Job.objects.all()._raw_delete(Job.objects.db)
    OrmQ.objects.all().delete()
    ProtectedVM.objects.filter(pk__in=due_ids).update(last_scheduled_slot=None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--due", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    ensure_database(args.database_url)
    setup_django(args.database_url)
    populate(args.items, args.due)

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django_q.models import OrmQ

    from jobs import tasks
    from jobs.models import Job
    from vaults.models import ProtectedVM

    due_ids = list(
        ProtectedVM.objects.filter(last_scheduled_slot=None).values_list("pk", flat=True)
    )
    times, queries, created = [], [], []
    for _ in range(args.runs):
        reset(due_ids)
        with CaptureQueriesContext(connection) as ctx:
            started = time.perf_counter()
            result = tasks.dispatch(now=NOW)
            times.append(time.perf_counter() - started)
        queries.append(len(ctx.captured_queries))
        created.append(result["backups"])
        assert Job.objects.count() == result["backups"] == OrmQ.objects.count()
    reset(due_ids)

    n_due = created[0]
    q = statistics.median(queries)
    print()
    print(
        f"{'items':>7} {'due':>6} {'time (median of ' + str(args.runs) + ')':>20} "
        f"{'queries':>8} {'queries/due VM':>15}"
    )
    print(
        f"{args.items:>7} {n_due:>6} {statistics.median(times):>18.3f} s "
        f"{q:>8.0f} {q / max(n_due, 1):>15.3f}"
    )
    print(f"runs: {', '.join(f'{t:.3f} s' for t in times)}; queries: {queries}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
