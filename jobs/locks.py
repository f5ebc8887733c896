"""S3 Object Lock follows retention: the extend_locks job, the locks of new copies, and the
sweep that finds locks left short.

A locked vault on an object-lock bucket locks each recovery point's manifest, indexes and
chunks until its stores' date (`vaults.stores.store_retain_until`). Three things keep the
locks at that date:

- When a policy change moves an RP's expiry later (`vaults.lifecycle.recompute_retention`),
  the catalog changes at once and an extend_locks job, queued after that commit, extends the
  locks in the vault store and, when it is lock-enabled too, the secondary copy
  (`engine.update_manifest_metadata`).
- A transfer or a replication copies the source manifest's date, which predates any
  extension made while the RP was not in that store yet: `lock_new_copy` extends the new
  copy to the RP's current date right after it is committed.
- Each RP records the date its objects carry in each store (`vault_locked_until`,
  `secondary_locked_until`); `queue_short_locks` (periodic) queues an extend_locks job for a
  vault whose RPs carry a shorter one than they need, so a lost or failed job, or a copy
  whose lock could not be extended, is put right without listing any store.

Safe to re-run: the date is read from the catalog when the job runs (a later change wins), a
manifest whose date already reaches it is left alone, and the engine never shortens a lock.
A secondary that cannot be reached never stops the vault store's locks: the job warns.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import transaction
from django.db.models import DateTimeField, Exists, ExpressionWrapper, F, OuterRef, Q, QuerySet

import engine
from jobs import runner
from jobs.models import UNFINISHED, Job, Operation, Param
from jobs.runner import JobContext, JobError
from security.kek import kek_for
from vaults.models import Immutability, RecoveryPoint, Replication, Vault
from vaults.stores import (
    open_secondary_store,
    open_vault_store,
    secondary_locked,
    store_retain_until,
    vault_store_locked,
)

# The field of RecoveryPoint recording each store's lock.
VAULT_LOCK = "vault_locked_until"
SECONDARY_LOCK = "secondary_locked_until"
# RPs per extend_locks job the sweep queues; the next sweep takes the rest.
SWEEP_BATCH = 500


@dataclass(frozen=True)
class Locked:
    """A lock-enabled store, whether it holds a given RP, and the field recording its lock."""

    store: engine.Store
    holds: Callable[[RecoveryPoint], bool]
    field: str


def _locked_stores(ctx: JobContext, vault: Vault) -> list[Locked]:
    locked: list[Locked] = []
    try:
        kek = kek_for(vault)
    except engine.KeyUnavailable as e:
        raise JobError("key_unavailable", str(e)) from e
    if vault_store_locked(vault):
        try:
            store = open_vault_store(vault, kek)
        except engine.EngineError as e:
            code = "key_unavailable" if isinstance(e, engine.KeyUnavailable) else "store"
            raise JobError(code, str(e)) from e
        locked.append(Locked(store, lambda rp: rp.in_vault_tier, VAULT_LOCK))
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
            locked.append(
                Locked(
                    secondary, lambda rp: rp.replication == Replication.REPLICATED, SECONDARY_LOCK
                )
            )
    return locked


@dataclass(frozen=True)
class LockState:
    extended: bool  # this call extended the locks
    until: datetime | None  # the date the RP's manifest (and so its objects) now carries


def extend_lock(
    store: engine.Store, rp: RecoveryPoint, vault: Vault, expires: datetime
) -> LockState:
    """Extend `rp`'s locks in `store` to the stores' date of an RP expiring at `expires`;
    not extended when they already reach it (until: None when the store no longer holds it)."""
    until = store_retain_until(vault, expires)
    try:
        current = engine.get_recovery_point(store, str(rp.pk)).retain_until
    except engine.RecoveryPointNotFound:
        return LockState(False, None)
    if current is not None and current >= until:
        return LockState(False, current)
    engine.update_manifest_metadata(store, str(rp.pk), retain_until=until)
    return LockState(True, until)


def lock_new_copy(ctx: JobContext, store: engine.Store, rp: RecoveryPoint) -> datetime | None:
    """Right after a transfer or a replication into a lock-enabled store: extend the new
    copy's locks (its source manifest's date) to the RP's current date, read now from the
    catalog. The date its objects carry; None when the RP is kept forever (no date to reach)
    or the extension failed: the job warns, and the lock sweep retries it later."""
    expires = RecoveryPoint.objects.filter(pk=rp.pk).values_list("expires_at", flat=True).first()
    if expires is None:
        return None
    try:
        return extend_lock(store, rp, rp.vault, expires).until
    except (engine.EngineError, OSError) as e:
        ctx.warn(
            "lock_not_extended",
            f"The copy in {store.location} keeps the lock date of its source: extending it "
            f"failed ({e}). It will be retried.",
        )
        return None


@runner.handles(Operation.EXTEND_LOCKS)
def run_extend_locks(ctx: JobContext) -> None:
    vault = ctx.vault
    rps = list(
        RecoveryPoint.objects.filter(
            vault=vault, pk__in=ctx.job.params.get(Param.RPS, []), expires_at__isnull=False
        ).order_by("time")
    )
    extended = 0
    for place in _locked_stores(ctx, vault):
        for rp in rps:
            if place.holds(rp):
                assert rp.expires_at is not None  # filtered above
                try:
                    state = extend_lock(place.store, rp, vault, rp.expires_at)
                except engine.EngineError as e:
                    raise JobError("store", f"recovery point {rp.pk}: {e}") from e
                extended += state.extended
                if state.until is not None:
                    RecoveryPoint.objects.filter(pk=rp.pk).update(**{place.field: state.until})
            ctx.check_cancel()
    ctx.set_result(recovery_points=len(rps), locks_extended=extended)


# -- the sweep ------------------------------------------------------------------------------------

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def short_locks(vault: Vault) -> QuerySet[RecoveryPoint]:
    """The vault's RPs whose recorded lock in a lock-enabled store is shorter than the date
    their retention needs there (or unknown). RPs kept forever have no date to reach."""
    # store_retain_until adds the same span to every expiry of one vault: say it in SQL.
    offset = store_retain_until(vault, _EPOCH) - _EPOCH
    need = ExpressionWrapper(F("expires_at") + offset, output_field=DateTimeField())
    short = Q(pk__in=[])
    for locked, held, field in (
        (vault_store_locked(vault), Q(in_vault_tier=True), VAULT_LOCK),
        (secondary_locked(vault), Q(replication=Replication.REPLICATED), SECONDARY_LOCK),
    ):
        if locked:
            short |= held & (Q(**{f"{field}__isnull": True}) | Q(**{f"{field}__lt": need}))
    return vault.recovery_points.filter(expires_at__isnull=False).filter(short)


def queue_short_locks() -> int:
    """One extend_locks job for each lock-enabled vault with RPs in `short_locks`, unless
    one is unfinished already (it may be the one that will extend them). Jobs queued."""
    busy = Job.objects.filter(
        vault=OuterRef("pk"), operation=Operation.EXTEND_LOCKS, status__in=UNFINISHED
    )
    candidates = (
        Vault.objects.filter(immutability=Immutability.LOCKED)
        .filter(~Exists(busy))
        .select_related("storage_target", "secondary_target")
    )
    todo: dict[int, list[str]] = {}
    for vault in candidates:
        if vault_store_locked(vault) or secondary_locked(vault):
            pks = short_locks(vault).order_by("time").values_list("pk", flat=True)
            rps = [str(pk) for pk in pks[:SWEEP_BATCH]]
            if rps:
                todo[vault.pk] = rps
    if not todo:
        return 0
    created = 0
    with transaction.atomic():
        # Every default worker runs the schedule's messages: lock the vaults, then read
        # again, so a vault gets one job.
        runner.lock_rows(Vault, todo)
        for vault in candidates.filter(pk__in=todo):
            runner.create_job(
                operation=Operation.EXTEND_LOCKS, vault=vault, params={Param.RPS: todo[vault.pk]}
            )
            created += 1
    return created
