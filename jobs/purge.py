"""Purging the recycle bin: `purge` and `delete_backup_data` jobs of one vault.

An entry is purged once its `purge_at` has passed, judged by the real clock only — no
parameter moves it, so nothing is purged early (always-on soft delete relies on it). Items
deleted while soft delete was disabled carry `purge_at = deleted_at`, so their
`delete_backup_data` job deletes them at once; `vaults.lifecycle.purge_now` sets it to now.

Order, as cleanup: each recovery point leaves the snapshot store and the vault store, then the
catalog; a soft-deleted item's row goes once none of its RPs is left; then garbage collection
frees the chunks no remaining manifest uses. A crash in between leaves catalog rows whose
manifests are gone; the next purge finishes the job.
"""

from django.db.models import Q
from django.utils import timezone

from jobs.lifecycle import collect_garbage, delete_everywhere, open_stores
from jobs.models import Job, Operation, Status
from jobs.runner import JobContext, create_job
from vaults import audit
from vaults.models import ItemState, ProtectedVM, RecoveryPoint, Vault

ACTIVE = [Status.QUEUED, Status.IN_PROGRESS, Status.CANCELLING]


def due_recovery_points(vault, now):
    return RecoveryPoint.objects.filter(
        vault=vault, soft_deleted_at__isnull=False, purge_at__lte=now
    ).select_related("protected_item__vm")


def due_items(vault, now):
    return ProtectedVM.objects.filter(
        vault=vault, state=ItemState.SOFT_DELETED, purge_at__lte=now
    ).select_related("vm")


def run_purge(ctx: JobContext) -> None:
    vault = ctx.job.vault
    now = timezone.now()
    only_item = ctx.job.params.get("item")
    stores = open_stores(vault)

    rps = due_recovery_points(vault, now)
    items = due_items(vault, now)
    if only_item is not None:
        rps, items = rps.filter(protected_item_id=only_item), items.filter(pk=only_item)
    purged = 0
    for rp in rps:
        ctx.check_cancel()
        delete_everywhere(rp, stores)
        purged += 1

    gone = []
    for item in items.filter(recovery_points__isnull=True):
        audit.record(
            "recycle_bin.purge",
            vault=vault,
            obj=item,
            before={
                "vm": item.vm.name,
                "deleted_at": item.deleted_at.isoformat() if item.deleted_at else None,
                "purge_at": item.purge_at.isoformat(),
                "soft_delete_state": item.deleted_soft_delete_state,
            },
            after={"job": ctx.job.pk},
        )
        gone.append(item.vm.name)
        item.delete()

    swept = collect_garbage(ctx, stores)
    ctx.set_result(recovery_points=purged, items=gone, swept=swept)


def vaults_with_due_entries(now):
    return Vault.objects.filter(
        Q(recovery_points__soft_deleted_at__isnull=False, recovery_points__purge_at__lte=now)
        | Q(protected_items__state=ItemState.SOFT_DELETED, protected_items__purge_at__lte=now)
    ).distinct()


def enqueue_due_purges(now=None) -> int:
    """One `purge` job per vault with due recycle-bin entries (unless one is already queued)."""
    now = now or timezone.now()
    created = 0
    for vault in vaults_with_due_entries(now):
        busy = Job.objects.filter(
            vault=vault,
            operation__in=[Operation.PURGE, Operation.DELETE_BACKUP_DATA],
            status__in=ACTIVE,
        ).exists()
        if not busy:
            create_job(operation=Operation.PURGE, vault=vault)
            created += 1
    return created
