"""Functions django-q2 calls on a schedule (declared in jobs/schedules.py)."""

import logging

from django.db import transaction
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


def reap() -> int:
    return runner.reap()


def cleanup(now=None) -> int:
    """One cleanup job per vault that holds recovery points (tiering, retention, GC)."""
    from vaults.models import Vault

    created = 0
    for vault in Vault.objects.filter(recovery_points__isnull=False).distinct():
        busy = Job.objects.filter(
            vault=vault,
            operation=Operation.CLEANUP,
            status__in=[Status.QUEUED, Status.IN_PROGRESS, Status.CANCELLING],
        ).exists()
        if not busy:
            with transaction.atomic():
                runner.create_job(operation=Operation.CLEANUP, vault=vault)
            created += 1
    return created
