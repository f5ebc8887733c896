"""Cleanup, garbage collection and verification jobs of one vault.

Cleanup, in order:
1. Tiering: snapshot copies past the policy's instant-restore days leave the snapshot tier —
   only once the RP is safely in the vault tier (a snapshot whose transfer is pending stays).
2. Retention: RPs past their expiry are deleted from every store, then from the catalog. The
   latest RP of an item is always kept, and so is everything of an item stopped with
   "retain forever".
3. Garbage collection of the vault store, the vault's snapshot stores and its secondary copy.
Deletion follows the primary: an RP deleted from the vault tier is deleted from the secondary
copy too. A secondary that cannot be reached is skipped with a warning; the manifests left
there have no row any more, and reconcile deletes them once it answers again.
The store is changed before the catalog, so a crash in between leaves a catalog row whose
manifest is gone; the next cleanup finishes the job.
"""

import time
from datetime import datetime

from django.utils import timezone

import engine
from inventory.models import Host
from jobs import runner
from jobs.models import Operation, Param, RestoreTier
from jobs.runner import JobContext, JobError
from portal.options import option
from vaults.models import RecoveryPoint, RetentionMode, Vault
from vaults.stores import VaultStores, existing_stores, open_vault_store

# Chunks younger than this are never swept, so an in-flight backup keeps what it relies on.
GC_GRACE_SECONDS = 3600
# How long GC waits for a store's in-flight operations before it skips that store.
GC_WAIT_SECONDS = 60


def grace() -> float:
    return option("GC_GRACE_SECONDS", GC_GRACE_SECONDS)


def gc_wait() -> float:
    return option("GC_WAIT_SECONDS", GC_WAIT_SECONDS)


def _store_error(e: engine.EngineError) -> JobError:
    return JobError("key_unavailable" if isinstance(e, engine.KeyUnavailable) else "store", str(e))


def open_stores(vault: Vault) -> VaultStores:
    """The vault's existing stores (none is created here), or a JobError saying why."""
    hosts = list(Host.objects.filter(vms__protections__vault=vault).distinct())
    try:
        return existing_stores(vault, hosts)
    except engine.EngineError as e:
        raise _store_error(e) from e


def delete_everywhere(rp: RecoveryPoint, stores: VaultStores) -> None:
    """Remove an RP from both tiers and the secondary copy, then from the catalog (stores
    first: see module doc)."""
    delete_from(stores.holding(rp, RestoreTier.SNAPSHOT), str(rp.pk))
    delete_from(stores.holding(rp, RestoreTier.VAULT), str(rp.pk))
    delete_from(stores.holding(rp, RestoreTier.SECONDARY), str(rp.pk))
    rp.delete()


def warn_unreachable_secondary(ctx: JobContext, stores: VaultStores) -> None:
    """Say so when the secondary copy could not be opened: its copies wait for reconcile."""
    if stores.secondary_error:
        ctx.warn(
            "secondary_unreachable",
            f"The secondary copy could not be reached ({stores.secondary_error}); what was "
            "deleted here is deleted there once it answers again.",
        )


def delete_from(store: engine.Store | None, rp_id: str) -> None:
    if store is None:
        return
    try:
        engine.delete_recovery_point(store, rp_id)
    except engine.RecoveryPointNotFound:
        pass


def expired_recovery_points(vault: Vault, now: datetime) -> list[RecoveryPoint]:
    """RPs of the vault that retention deletes now (never an item's latest)."""
    return list(
        RecoveryPoint.objects.live()
        .filter(vault=vault, expires_at__lte=now)
        .exclude(protected_item__retention_mode=RetentionMode.RETAIN_FOREVER)
        .except_latest()
        .select_related("protected_item__vm")
    )


@runner.handles(Operation.CLEANUP)
def run_cleanup(ctx: JobContext) -> None:
    vault = ctx.vault
    given = ctx.job.params.get(Param.NOW)
    now = datetime.fromisoformat(given) if given else timezone.now()
    stores = open_stores(vault)
    warn_unreachable_secondary(ctx, stores)

    tiered = 0
    for rp in RecoveryPoint.objects.filter(
        vault=vault, in_snapshot_tier=True, in_vault_tier=True, snapshot_expires_at__lte=now
    ).select_related("protected_item__vm"):
        ctx.check_cancel()
        delete_from(stores.holding(rp, RestoreTier.SNAPSHOT), str(rp.pk))
        RecoveryPoint.objects.filter(pk=rp.pk).update(in_snapshot_tier=False)
        tiered += 1

    expired = 0
    for rp in expired_recovery_points(vault, now):
        ctx.check_cancel()
        delete_everywhere(rp, stores)
        expired += 1

    swept = collect_garbage(ctx, stores)
    ctx.set_result(tiered=tiered, expired=expired, swept=swept)


def collect_garbage(
    ctx: JobContext, stores: VaultStores, grace_seconds: float | None = None
) -> dict[str, int]:
    """GC of the vault store, every snapshot store of the vault and its secondary copy; chunks
    and bytes freed.

    A store busy with a long operation (a backup, a transfer) is skipped with a warning rather
    than failing the job: the next cleanup sweeps it.
    """
    swept = {"chunks": 0, "bytes": 0}
    for store in stores.all():
        ctx.check_cancel()
        try:
            result = engine.gc(
                store,
                grace_seconds=grace() if grace_seconds is None else grace_seconds,
                wait_seconds=gc_wait(),
            )
        except engine.StoreBusy as e:
            ctx.warn("store_busy", f"Garbage collection skipped a busy store: {e}.")
            continue
        swept["chunks"] += result.chunks_swept
        swept["bytes"] += result.bytes_swept
    return swept


@runner.handles(Operation.GARBAGE_COLLECT)
def run_gc(ctx: JobContext) -> None:
    stores = open_stores(ctx.vault)
    given = ctx.job.params.get(Param.SWEEP_BEFORE)
    grace_seconds = None
    if given:
        since = time.time() - datetime.fromisoformat(given).timestamp()
        grace_seconds = min(grace(), max(0.0, since))
    swept = collect_garbage(ctx, stores, grace_seconds)
    ctx.set_result(chunks_swept=swept["chunks"], bytes_swept=swept["bytes"])


@runner.handles(Operation.VERIFY)
def run_verify(ctx: JobContext) -> None:
    try:
        store = open_vault_store(ctx.vault)
    except engine.EngineError as e:
        raise _store_error(e) from e
    report = engine.verify(store, cancel=ctx.cancelled)
    ctx.set_result(
        recovery_points=len(report.rps_checked),
        chunks=report.chunks_checked,
        damage=[str(d) for d in report.damage[:100]],
    )
    if not report.ok:
        raise JobError("corruption", f"{len(report.damage)} damaged chunk reference(s) found.")
