"""Purging the recycle bin: `purge` and `delete_backup_data` jobs of one vault.

An entry is purged once its `purge_at` has passed, judged by the real clock only — no
parameter moves it, so nothing is purged early (always-on soft delete relies on it). Items
deleted while soft delete was disabled carry `purge_at = deleted_at`, so their
`delete_backup_data` job deletes them at once; `vaults.lifecycle.purge_now` sets it to now.

Order, as cleanup: each recovery point leaves the snapshot store, the vault store and the
secondary copy, then the
catalog; a soft-deleted item's row goes once none of its RPs is left; then garbage collection
frees the chunks no remaining manifest uses. A crash in between leaves catalog rows whose
manifests are gone; the next purge finishes the job.
"""

from datetime import datetime

from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from jobs import runner
from jobs.lifecycle import (
    collect_garbage,
    delete_everywhere,
    open_stores,
    warn_unreachable_secondary,
)
from jobs.models import UNFINISHED, Job, Operation, Param
from jobs.runner import JobContext, create_job
from vaults import audit
from vaults.models import ProtectedVM, RecoveryPoint, Vault


def due_recovery_points(vault: Vault, now: datetime) -> QuerySet[RecoveryPoint]:
    return (
        RecoveryPoint.objects.purge_due(now)
        .filter(vault=vault)
        .select_related("protected_item__vm")
    )


def due_items(vault: Vault, now: datetime) -> QuerySet[ProtectedVM]:
    return ProtectedVM.objects.purge_due(now).filter(vault=vault).select_related("vm")


@runner.handles(Operation.PURGE)
@runner.handles(Operation.DELETE_BACKUP_DATA)
def run_purge(ctx: JobContext) -> None:
    vault = ctx.vault
    now = timezone.now()
    only_item = ctx.job.params.get(Param.ITEM)
    stores = open_stores(vault)
    warn_unreachable_secondary(ctx, stores)

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
                "purge_at": item.purge_at.isoformat() if item.purge_at else None,
                "soft_delete_state": item.deleted_soft_delete_state,
            },
            after={"job": ctx.job.pk},
        )
        gone.append(item.vm.name)
        item.delete()

    swept = collect_garbage(ctx, stores)
    ctx.set_result(recovery_points=purged, items=gone, swept=swept)


def vaults_with_due_entries(now: datetime) -> QuerySet[Vault]:
    return Vault.objects.with_purge_due(now)


def enqueue_due_purges(now: datetime | None = None) -> int:
    """One `purge` job per vault with due recycle-bin entries (unless one is already queued)."""
    now = now or timezone.now()
    busy = Job.objects.filter(
        vault=OuterRef("pk"),
        operation__in=[Operation.PURGE, Operation.DELETE_BACKUP_DATA],
        status__in=UNFINISHED,
    )
    pks = list(vaults_with_due_entries(now).filter(~Exists(busy)).values_list("pk", flat=True))
    if not pks:
        return 0
    created = 0
    with transaction.atomic():
        # Two purge messages can run at once: lock the vaults, then read again (`lock_rows`).
        runner.lock_rows(Vault, pks)
        for vault in vaults_with_due_entries(now).filter(pk__in=pks).filter(~Exists(busy)):
            create_job(operation=Operation.PURGE, vault=vault)
            created += 1
    return created
