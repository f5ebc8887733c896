"""Functions django-q2 calls on a schedule (declared in jobs/schedules.py)."""

import logging

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from jobs import runner
from jobs.models import Job, Operation, Status

log = logging.getLogger(__name__)


def dispatch(now=None) -> dict:
    """Enqueue due scheduled backups and retry pending vault transfers."""
    from jobs import backup

    now = now or timezone.now()
    return {
        "backups": backup.enqueue_due_backups(now),
        "transfers": backup.enqueue_pending_transfers(now),
    }


def reap(now=None) -> dict:
    """Fail jobs whose worker died; re-send (or fail) queued jobs whose message was lost."""
    return {"worker_lost": runner.reap(now), **runner.redeliver(now)}


def reconcile() -> dict:
    """Stores against the catalog: orphan manifests of finished jobs deleted, an early sweep
    after failed jobs, leftover temp files and work folders of finished jobs removed."""
    from jobs import reconcile as reconciliation

    return reconciliation.run()


def cleanup(now=None) -> int:
    """One cleanup job per vault that holds recovery points or ran backups (tiering, retention,
    GC): a vault whose every backup failed still has their chunks to free.

    A given `now` travels in the job's params so the job judges expiry at that instant (drills
    and tests); the scheduler passes none and the job uses its own clock.
    """
    from vaults.models import RecoveryPoint, Vault

    params = {"now": now.isoformat()} if now is not None else {}
    created = 0
    holds_data = Exists(RecoveryPoint.objects.filter(vault=OuterRef("pk"))) | Exists(
        Job.objects.filter(vault=OuterRef("pk"), operation=Operation.BACKUP)
    )
    for vault in Vault.objects.filter(holds_data):
        busy = Job.objects.filter(
            vault=vault,
            operation=Operation.CLEANUP,
            status__in=[Status.QUEUED, Status.IN_PROGRESS, Status.CANCELLING],
        ).exists()
        if not busy:
            with transaction.atomic():
                runner.create_job(operation=Operation.CLEANUP, vault=vault, params=params)
            created += 1
    return created


def purge() -> int:
    """One purge job per vault whose recycle bin holds entries past their purge time (judged
    by the real clock: nothing is purged early)."""
    from jobs.purge import enqueue_due_purges

    return enqueue_due_purges()


def security_checks(now=None) -> dict:
    """Upcoming-purge alerts, expiry of pending MUA approvals, old login failures."""
    from security import alerts, lockout

    return {**alerts.periodic(now), "login_failures_dropped": lockout.purge_old(now)}
