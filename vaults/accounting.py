"""Exact space accounting of a vault, kept in the catalog: per recovery point and per protected
item, the stored bytes it holds alone (`unique_bytes`: freed if it were deleted and garbage
collected) and those it shares (`shared_bytes`).

Measured by `engine.accounting` over every store of the vault (the vault tier, each host's
snapshot tier) and summed: deleting an RP frees its unique chunks in every tier that holds it.
Reading a store costs a chunk listing and one read per index, so pages never measure: the
figures are refreshed after each job that changes what a store holds (backup, transfer,
cleanup, GC, purge, delete backup data) by `on_job_finished`, and hourly by the periodic task,
and `Vault.accounted_at` says as of when they are (the staleness the pages show).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from engine.accounting import SpaceUse, store_accounting
from engine.errors import EngineError
from inventory.models import Host
from jobs.models import Job, Operation, Status
from vaults.models import ProtectedVM, RecoveryPoint, Vault, location_scheme
from vaults.stores import object_target

log = logging.getLogger(__name__)

# Jobs after which a vault's figures are out of date.
CHANGES_STORES = {
    Operation.BACKUP,
    Operation.TRANSFER,
    Operation.CLEANUP,
    Operation.GARBAGE_COLLECT,
    Operation.PURGE,
    Operation.DELETE_BACKUP_DATA,
}


def _locations(vault: Vault) -> list[tuple[str, Any]]:
    """The stores of the vault's tiers (the secondary copy is a copy, not what deleting frees)."""
    found: list[tuple[str, Any]] = []
    if location_scheme(vault.vault_location) is None:
        found.append((vault.vault_location, None))
    elif vault.storage_target is not None:
        found.append((vault.vault_location, object_target(vault.storage_target)))
    hosts = Host.objects.filter(vms__protections__vault=vault).distinct()
    found += [(str(host.snapshot_store_path(vault)), None) for host in hosts]
    return found


def _add(a: SpaceUse | None, b: SpaceUse) -> SpaceUse:
    if a is None:
        return b
    return SpaceUse(
        a.unique_bytes + b.unique_bytes,
        a.shared_bytes + b.shared_bytes,
        a.unique_chunks + b.unique_chunks,
        a.shared_chunks + b.shared_chunks,
    )


def refresh(vault: Vault) -> int:
    """Measure the vault's stores and write every RP's and item's figures; returns the number
    of recovery points measured. A store that cannot be read leaves the old figures."""
    rps = list(RecoveryPoint.objects.filter(vault=vault).only("pk", "protected_item_id"))
    groups = {str(rp.pk): str(rp.protected_item_id) for rp in rps}
    points: dict[str, SpaceUse] = {}
    items: dict[str, SpaceUse] = {}
    for location, target in _locations(vault):
        try:
            report = store_accounting(location, target, groups=groups)
        except (EngineError, OSError) as e:
            log.warning("accounting of %s skipped: %s", location, e)
            return 0
        for rp_id, use in report.points.items():
            points[rp_id] = _add(points.get(rp_id), use)
        for item_id, use in report.groups.items():
            items[item_id] = _add(items.get(item_id), use)
    for rp in rps:
        use = points.get(str(rp.pk), SpaceUse())
        rp.unique_bytes, rp.shared_bytes = use.unique_bytes, use.shared_bytes
    with transaction.atomic():
        RecoveryPoint.objects.bulk_update(rps, ["unique_bytes", "shared_bytes"], batch_size=500)
        for item in ProtectedVM.objects.filter(vault=vault).only("pk"):
            use = items.get(str(item.pk), SpaceUse())
            ProtectedVM.objects.filter(pk=item.pk).update(
                unique_bytes=use.unique_bytes, shared_bytes=use.shared_bytes
            )
        Vault.objects.filter(pk=vault.pk).update(accounted_at=timezone.now())
    return len(points)


def refresh_all() -> dict[str, int]:
    """Every vault's figures (the hourly periodic task)."""
    return {vault.name: refresh(vault) for vault in Vault.objects.all()}


def on_job_finished(sender: type[Job], *, job: Job, **kwargs: object) -> None:
    """After a job that changed a store, the vault's figures follow (in the finishing
    process; a failure is logged by the signal and never fails the job)."""
    if job.vault_id is None or job.operation not in CHANGES_STORES:
        return
    if job.status not in (Status.COMPLETED, Status.COMPLETED_WITH_WARNINGS, Status.FAILED):
        return
    refresh(Vault.objects.get(pk=job.vault_id))
