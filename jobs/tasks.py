"""Functions django-q2 calls on a schedule (declared in jobs/schedules.py)."""

from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from jobs import backup_queue, drill, locks, runner, workers
from jobs import reconcile as reconciliation
from jobs.models import UNFINISHED, Job, Operation, Param
from jobs.purge import enqueue_due_purges
from security import alerts, lockout
from vaults import accounting as space_accounting
from vaults import usage
from vaults.models import RecoveryPoint, Vault


def dispatch(now: datetime | None = None) -> dict[str, int]:
    """Enqueue due scheduled backups, retry pending vault transfers and replications."""
    now = now or timezone.now()
    return {
        "backups": backup_queue.enqueue_due_backups(now),
        "transfers": backup_queue.enqueue_pending_transfers(now),
        "replications": backup_queue.enqueue_pending_replications(now),
    }


def reap(now: datetime | None = None) -> dict[str, int]:
    """Fail jobs whose worker died; re-send (or fail) queued jobs whose message was lost; say
    which queued jobs wait for a host's worker that is offline."""
    return {
        "worker_lost": runner.reap(now),
        **runner.redeliver(now),
        "waiting": workers.note_waiting(now),
    }


def reconcile() -> dict[str, int]:
    """Stores against the catalog: orphan manifests of finished jobs deleted, an early sweep
    after failed jobs, leftover temp files and work folders of finished jobs removed."""
    return reconciliation.run()


def cleanup(now: datetime | None = None) -> int:
    """One cleanup job per vault that holds recovery points or ran backups (tiering, retention,
    GC): a vault whose every backup failed still has their chunks to free.

    A given `now` travels in the job's params so the job judges expiry at that instant (drills
    and tests); the scheduler passes none and the job uses its own clock.
    """
    params = {Param.NOW: now.isoformat()} if now is not None else {}
    holds_data = Exists(RecoveryPoint.objects.filter(vault=OuterRef("pk"))) | Exists(
        Job.objects.filter(vault=OuterRef("pk"), operation=Operation.BACKUP)
    )
    busy = Job.objects.filter(
        vault=OuterRef("pk"), operation=Operation.CLEANUP, status__in=UNFINISHED
    )
    to_clean = Vault.objects.filter(holds_data).filter(~Exists(busy))
    pks = list(to_clean.values_list("pk", flat=True))
    if not pks:
        return 0
    created = 0
    with transaction.atomic():
        # Two cleanup messages can run at once (every default worker runs the schedule's):
        # lock the vaults, then read again, so a vault gets one cleanup job.
        runner.lock_rows(Vault, pks)
        for vault in to_clean.filter(pk__in=pks):
            runner.create_job(operation=Operation.CLEANUP, vault=vault, params=params)
            created += 1
    return created


def drills(now: datetime | None = None) -> int:
    """Restore drills due by each vault's drill schedule (`jobs.drill.drills_due`)."""
    return drill.drills_due(now)


def lock_sweep() -> int:
    """One extend_locks job per lock-enabled vault whose RPs carry a shorter S3 Object Lock
    than their retention needs (a lost or failed job, a copy whose lock could not be
    extended); judged from the catalog, no store is listed."""
    return locks.queue_short_locks()


def purge() -> int:
    """One purge job per vault whose recycle bin holds entries past their purge time (judged
    by the real clock: nothing is purged early)."""
    return enqueue_due_purges()


def security_checks(now: datetime | None = None) -> dict[str, Any]:
    """Upcoming-purge alerts, expiry of pending MUA approvals, old login failures."""
    return {**alerts.periodic(now), "login_failures_dropped": lockout.purge_old(now)}


def record_usage(now: datetime | None = None) -> dict[str, int]:
    """Today's usage row per vault and protected item (the overview's and reports' history)."""
    return usage.record_day(now)


def accounting() -> dict[str, int]:
    """Every vault's space accounting, so figures are at most an hour old even when no job
    changed a store (e.g. a store edited by hand, or a receiver that failed)."""
    return space_accounting.refresh_all()
