"""The extend_locks job: S3 Object Lock follows a retention that moved later.

A locked vault on an object-lock bucket locks each recovery point's manifest, indexes and
chunks until its stores' date (`vaults.stores.store_retain_until`). When a policy change moves
an RP's expiry later (`vaults.lifecycle.recompute_retention`), the catalog changes at once and
this job, queued after that commit, extends the locks in the vault store and, when it is
lock-enabled too, the secondary copy (`engine.update_manifest_metadata`).

Safe to re-run: the date is read from the catalog when the job runs (a later change wins), a
manifest whose date already reaches it is left alone, and the engine never shortens a lock.
A secondary that cannot be reached never stops the vault store's locks: the job warns.
"""

from collections.abc import Callable

import engine
from jobs import runner
from jobs.models import Operation, Param
from jobs.runner import JobContext, JobError
from security.kek import kek_for
from vaults.models import RecoveryPoint, Replication, Vault
from vaults.stores import (
    open_secondary_store,
    open_vault_store,
    secondary_locked,
    store_retain_until,
    vault_store_locked,
)

# A lock-enabled store, and whether it holds a given RP.
Locked = tuple[engine.Store, Callable[[RecoveryPoint], bool]]


def _locked_stores(ctx: JobContext, vault: Vault) -> list[Locked]:
    locked: list[Locked] = []
    try:
        kek = kek_for(vault)
    except engine.KeyUnavailable as e:
        raise JobError("key_unavailable", str(e)) from e
    if vault_store_locked(vault):
        try:
            locked.append((open_vault_store(vault, kek), lambda rp: rp.in_vault_tier))
        except engine.EngineError as e:
            code = "key_unavailable" if isinstance(e, engine.KeyUnavailable) else "store"
            raise JobError(code, str(e)) from e
    if secondary_locked(vault):
        try:
            secondary = open_secondary_store(vault, kek)
        except engine.StoreNotFound:
            pass  # nothing replicated yet: each copy gets its date when it is made
        except (engine.EngineError, OSError) as e:
            ctx.warn(
                "secondary_unreachable",
                f"The secondary copy could not be reached ({e}); its locks keep their dates.",
            )
        else:
            locked.append((secondary, lambda rp: rp.replication == Replication.REPLICATED))
    return locked


def extend_lock(store: engine.Store, rp: RecoveryPoint, vault: Vault) -> bool:
    """Extend `rp`'s locks in `store` to its stores' date; False when they already reach it
    (or the store no longer holds it)."""
    assert rp.expires_at is not None  # only RPs with an expiry are queued
    until = store_retain_until(vault, rp.expires_at)
    try:
        current = engine.get_recovery_point(store, str(rp.pk)).retain_until
    except engine.RecoveryPointNotFound:
        return False
    if current is not None and current >= until:
        return False
    engine.update_manifest_metadata(store, str(rp.pk), retain_until=until)
    return True


@runner.handles(Operation.EXTEND_LOCKS)
def run_extend_locks(ctx: JobContext) -> None:
    vault = ctx.vault
    rps = list(
        RecoveryPoint.objects.filter(
            vault=vault, pk__in=ctx.job.params.get(Param.RPS, []), expires_at__isnull=False
        ).order_by("time")
    )
    extended = 0
    for store, holds in _locked_stores(ctx, vault):
        for rp in rps:
            if holds(rp):
                try:
                    extended += extend_lock(store, rp, vault)
                except engine.EngineError as e:
                    raise JobError("store", f"recovery point {rp.pk}: {e}") from e
            ctx.check_cancel()
    ctx.set_result(recovery_points=len(rps), locks_extended=extended)
