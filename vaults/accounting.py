"""Exact space accounting of a vault, kept in the catalog: per recovery point and per protected
item, the stored bytes it holds alone (`unique_bytes`: freed if it were deleted and garbage
collected) and those it shares (`shared_bytes`).

Measured by `engine.accounting` over every store of the vault (the vault tier, each host's
snapshot tier) and summed: deleting an RP frees its unique chunks in every tier that holds it.
Reading a store costs a chunk listing and one read per index (per index this process has not
read before, since committed indexes never change: `INDEXES`, an `engine.accounting.IndexCache`,
so a refresh after a backup reads that backup's indexes, not every RP's). Pages never measure:
the figures are refreshed after each job that changes what a store holds (backup, transfer,
replicate, cleanup, GC, purge, delete backup data) by `on_job_finished`, and hourly by the
periodic task, and `Vault.accounted_at` says as of when they are (the staleness the pages show).

The secondary copy (replication) is a copy, not what deleting an RP frees in the vault, so it
is its own figure: `Vault.secondary_stored_bytes` (every chunk stored there) and, per RP,
`secondary_unique_bytes` (None: the secondary holds no manifest of it), as of
`Vault.secondary_accounted_at`. A secondary that does not answer never stops the primary's
figures: it keeps its old ones, and their date says how old (`secondary_copy` for the pages).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from engine.accounting import (
    IndexCache,
    SpaceUse,
    StoreAccounting,
    backend_accounting,
    store_accounting,
)
from engine.backends import open_backend
from engine.errors import EngineError
from inventory.models import Host
from jobs.models import Job, Operation, Status
from vaults.models import (
    ProtectedVM,
    RecoveryPoint,
    Replication,
    StorageTarget,
    Vault,
    location_scheme,
)
from vaults.stores import object_target

log = logging.getLogger(__name__)

# The indexes this process has read, for every vault's stores (bounded; see the module doc).
INDEXES = IndexCache()

# Jobs after which a vault's figures are out of date.
CHANGES_STORES = {
    Operation.BACKUP,
    Operation.TRANSFER,
    Operation.REPLICATE,
    Operation.CLEANUP,
    Operation.GARBAGE_COLLECT,
    Operation.PURGE,
    Operation.DELETE_BACKUP_DATA,
}


def _place(location: str, target: StorageTarget | None) -> tuple[str, Any] | None:
    """Where a store is and how to reach it (None: on object storage with no target)."""
    if location_scheme(location) is None:
        return location, None
    if target is not None:
        return location, object_target(target)
    return None


def _locations(vault: Vault) -> list[tuple[str, Any]]:
    """The stores of the vault's tiers (the secondary copy is a copy, not what deleting frees)."""
    found: list[tuple[str, Any]] = []
    place = _place(vault.vault_location, vault.storage_target)
    if place is not None:
        found.append(place)
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
            report = store_accounting(location, target, groups=groups, cache=INDEXES)
        except (EngineError, OSError) as e:
            log.warning("accounting of %s skipped: %s", location, e)
            return 0
        for rp_id, use in report.points.items():
            points[rp_id] = _add(points.get(rp_id), use)
        for item_id, use in report.groups.items():
            items[item_id] = _add(items.get(item_id), use)
    fields = ["unique_bytes", "shared_bytes"]
    secondary = _secondary(vault)
    # Measured, or no secondary any more (its figures go); else the old figures stay.
    secondary_known = secondary is not None or not vault.secondary_location
    if secondary_known:
        fields.append("secondary_unique_bytes")
    for rp in rps:
        use = points.get(str(rp.pk), SpaceUse())
        rp.unique_bytes, rp.shared_bytes = use.unique_bytes, use.shared_bytes
        there = secondary.points.get(str(rp.pk)) if secondary is not None else None
        rp.secondary_unique_bytes = there.unique_bytes if there is not None else None
    now = timezone.now()
    with transaction.atomic():
        RecoveryPoint.objects.bulk_update(rps, fields, batch_size=500)
        for item in ProtectedVM.objects.filter(vault=vault).only("pk"):
            use = items.get(str(item.pk), SpaceUse())
            ProtectedVM.objects.filter(pk=item.pk).update(
                unique_bytes=use.unique_bytes, shared_bytes=use.shared_bytes
            )
        measured: dict[str, Any] = {"accounted_at": now}
        if secondary_known:
            measured["secondary_stored_bytes"] = secondary.stored_bytes if secondary else None
            measured["secondary_accounted_at"] = now if secondary else None
        Vault.objects.filter(pk=vault.pk).update(**measured)
    return len(points)


def _secondary(vault: Vault) -> StoreAccounting | None:
    """The secondary copy measured (groups are not asked: nothing is freed per item there);
    None when there is none or it cannot be read now."""
    if not vault.secondary_location:
        return None
    place = _place(vault.secondary_location, vault.secondary_target)
    if place is None:
        return None
    try:
        backend = open_backend(*place)
        copied = vault.recovery_points.filter(replication=Replication.REPLICATED)
        if not backend.exists("store.json") and copied.exists():
            # Copies were made, so a store that is not there is one that does not answer
            # (an unmounted disk), not an empty one.
            raise EngineError(f"no store at {place[0]}, where recovery points were copied")
        return backend_accounting(backend, groups={}, cache=INDEXES)
    except (EngineError, OSError) as e:
        log.warning("accounting of the secondary copy %s skipped: %s", place[0], e)
        return None


@dataclass(frozen=True)
class SecondaryCopy:
    """The secondary copy's figures for the vault overview."""

    stored_bytes: int | None  # None: not measured yet
    measured_at: datetime | None
    held: int  # live recovery points whose manifest it holds, as measured
    live: int  # live recovery points of the vault


def secondary_copy(vault: Vault) -> SecondaryCopy | None:
    """None when the vault has no secondary location."""
    if not vault.secondary_location:
        return None
    counts = vault.recovery_points.live().aggregate(
        live=Count("pk"), held=Count("pk", filter=Q(secondary_unique_bytes__isnull=False))
    )
    return SecondaryCopy(
        vault.secondary_stored_bytes, vault.secondary_accounted_at, counts["held"], counts["live"]
    )


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
