"""Retention recompute, the recycle bin and purging it (DESIGN §1, §3.5).

Retention recompute (`recompute_retention`, called when an item changes policy or its policy
changes): each scheduled RP's tags and expiry are computed again from its backup slot. A live
RP whose new expiry has already passed (but whose old one had not) is *removed early*: it goes
to the recycle bin (reason ``retention_reduced``) instead of being deleted, if the vault's soft
delete is on; a binned RP whose new expiry is in the future comes back (Azure's rule). The
latest RP and RPs of retain-forever items never go to the bin; on-demand RPs keep their own
retain-until date. On a vault whose stores enforce retention (S3 Object Lock), RPs whose expiry
moved later get an extend_locks job (`jobs.locks`) so the stores' locks follow.

The recycle bin holds soft-deleted items (`vaults.protection.stop_protection` with delete data)
and RPs cut early. The purge job takes an entry once its purge time has passed
(`purge_due` on the querysets); `purge_now` purges an item early where the vault allows it
(`purge_now_refusal` says when it does not).

Rules that refuse an operation raise `RuleBlocked` (the API answers 409 naming the rule). A
missing role stays `PermissionDenied` (403).
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Count, Q
from django.http import HttpRequest
from django.utils import timezone

from jobs.models import Job, Operation, Param
from jobs.runner import create_job
from policies.retention import tags_and_expiry
from vaults import access, audit, stores
from vaults.access import AnyUser
from vaults.models import (
    BinKind,
    BinReason,
    ItemState,
    ProtectedVM,
    RecoveryPoint,
    RetentionMode,
    SoftDeleteState,
    Vault,
)
from vaults.rules import (
    RULE_ALWAYS_ON,
    RULE_ITEM_STATE,
    RULE_SOFT_DELETE_ENABLED,
    RuleBlocked,
    immutability_blocks,
)


def state_summary(item: ProtectedVM) -> dict[str, Any]:
    """An item's protection state, for the audit log."""
    return {
        "vm": item.vm.name,
        "policy": item.policy.name,
        "state": item.state,
        "retention_mode": item.retention_mode or None,
        "purge_at": item.purge_at.isoformat() if item.purge_at else None,
    }


# -- purging early ---------------------------------------------------------------------------------


def purge_now_refusal(vault: Vault, item: ProtectedVM | None = None) -> RuleBlocked | None:
    """Why the vault's recycle bin (or `item` in it) may not be purged before its time, or None
    when it may: only with soft delete disabled and the vault not immutable, never while soft
    delete is (or was, when the item was deleted) always on."""
    states = {vault.soft_delete_state, item.deleted_soft_delete_state if item else None}
    if SoftDeleteState.ALWAYS_ON in states:
        return RuleBlocked(
            f"Soft delete is always on in vault {vault.name}: deleted data stays in the recycle "
            "bin until its purge date and nobody can purge it early.",
            rule=RULE_ALWAYS_ON,
        )
    if vault.is_immutable:
        return immutability_blocks("recovery points cannot be purged before their time.", vault)
    if vault.soft_delete_state == SoftDeleteState.ENABLED:
        return RuleBlocked(
            f"Soft delete is enabled in vault {vault.name}: deleted data is purged on its purge "
            "date. Disable soft delete to purge it early.",
            rule=RULE_SOFT_DELETE_ENABLED,
        )
    return None


def purge_now(item: ProtectedVM, *, by: User, request: HttpRequest | None = None) -> Job:
    """Purge a soft-deleted item at once (a `purge` job), where `purge_now_refusal` allows."""
    vault = item.vault
    access.require(by, vault, "stop_protection")
    if item.state != ItemState.SOFT_DELETED:
        raise RuleBlocked(f"{item.vm.name} is not in the recycle bin.", rule=RULE_ITEM_STATE)
    refusal = purge_now_refusal(vault, item)
    if refusal is not None:
        raise refusal
    now = timezone.now()
    with transaction.atomic():
        before = state_summary(item)
        item.purge_at = now
        item.save(update_fields=["purge_at"])
        item.recovery_points.filter(soft_deleted_at__isnull=False).update(purge_at=now)
        job = create_job(
            operation=Operation.PURGE, vault=vault, item=item, by=by, params={Param.ITEM: item.pk}
        )
        audit.record(
            "recycle_bin.purge_now",
            actor=by,
            request=request,
            vault=vault,
            obj=item,
            before=before,
            after={**state_summary(item), "job": job.pk},
        )
    return job


# -- retention recompute ---------------------------------------------------------------------------


def rp_times(items: Iterable[ProtectedVM]) -> list[datetime]:
    """Slot times of the live scheduled RPs of `items` (for `retention_reductions`; which of
    them a change expires earlier is `vaults.services.simulation.expiring_earlier`)."""
    rps = list(RecoveryPoint.objects.live().filter(protected_item__in=items, retain_until=None))
    return [rp.slot or rp.time for rp in rps if not rp.is_on_demand]


def recompute_retention(
    item: ProtectedVM, *, by: User | None = None, now: datetime | None = None
) -> dict[str, int]:
    """Tags and expiry of the item's scheduled RPs under its current policy; RPs cut early go to
    the recycle bin, binned ones whose new expiry is in the future come back (module doc).

    Call inside the transaction that changed the policy. Counts of what changed are returned.
    """
    now = now or timezone.now()
    vault = item.vault
    rep = item.policy.representation()
    rps = list(
        item.recovery_points.filter(
            Q(soft_deleted_at=None) | Q(soft_delete_reason=BinReason.RETENTION_REDUCED)
        ).order_by("time")
    )
    latest = RecoveryPoint.objects.latest_of(item)
    forever = item.retention_mode == RetentionMode.RETAIN_FOREVER
    binning = vault.soft_delete_state != SoftDeleteState.DISABLED
    changed: list[RecoveryPoint] = []
    later: list[RecoveryPoint] = []
    binned = returned = 0
    for rp in rps:
        if rp.is_on_demand:
            continue
        tags, expires = tags_and_expiry(
            rep, rp.slot or rp.time, is_daily_last=rp.in_vault_tier or rp.transfer_due
        )
        old = rp.expires_at
        touched = tags != rp.tags or expires != old
        if old is None or expires > old:
            later.append(rp)
        rp.tags, rp.expires_at = tags, expires
        if rp.soft_deleted_at is None:
            cut = expires <= now and (old is None or old > now)
            kept = forever or (latest is not None and rp.pk == latest.pk)
            if cut and not kept:
                if vault.is_immutable:
                    raise immutability_blocks(
                        "recovery points cannot be deleted before their expiry.", vault
                    )
                if binning:
                    rp.soft_deleted_at, rp.soft_deleted_by = now, by
                    rp.soft_delete_reason = BinReason.RETENTION_REDUCED
                    rp.purge_at = now + timedelta(days=vault.soft_delete_days)
                    binned += 1
                    touched = True
        elif expires > now:
            rp.soft_deleted_at = rp.soft_deleted_by = rp.purge_at = None
            rp.soft_delete_reason = ""
            returned += 1
            touched = True
        if touched:
            changed.append(rp)
    RecoveryPoint.objects.bulk_update(
        changed,
        [
            "tags",
            "expires_at",
            "soft_deleted_at",
            "soft_deleted_by",
            "soft_delete_reason",
            "purge_at",
        ],
        batch_size=500,
    )
    if later and (stores.vault_store_locked(vault) or stores.secondary_locked(vault)):
        # The stores' locks follow in a job (delivered once this transaction commits).
        create_job(
            operation=Operation.EXTEND_LOCKS,
            vault=vault,
            item=item,
            by=by,
            params={Param.RPS: [str(rp.pk) for rp in later]},
        )
    return {"updated": len(changed), "to_recycle_bin": binned, "from_recycle_bin": returned}


# -- the recycle bin -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BinEntry:
    """One entry of the recycle bin: a soft-deleted item (with all its RPs) or one RP cut early
    from an item that is still there."""

    kind: BinKind
    vault: str
    vm_name: str
    item_id: int
    recovery_point: UUID | None
    recovery_point_time: datetime | None
    recovery_points: int
    reason: str
    deleted_by: str | None
    deleted_at: datetime | None
    purge_at: datetime | None
    days_left: int | None

    @property
    def is_item(self) -> bool:
        return self.kind == BinKind.ITEM


def days_left(purge_at: datetime | None, now: datetime) -> int | None:
    """Whole days until the purge, rounded up (None for rows made before purge times)."""
    if purge_at is None:
        return None
    return max(0, math.ceil((purge_at - now).total_seconds() / 86400))


def _entries(
    vault_ids: list[int] | None,
    now: datetime,
    purge_between: tuple[datetime, datetime] | None = None,
) -> list[BinEntry]:
    items = ProtectedVM.objects.filter(state=ItemState.SOFT_DELETED)
    rps = RecoveryPoint.objects.filter(soft_deleted_at__isnull=False).exclude(
        protected_item__state=ItemState.SOFT_DELETED
    )
    if vault_ids is not None:
        items, rps = items.filter(vault__in=vault_ids), rps.filter(vault__in=vault_ids)
    if purge_between is not None:
        start, end = purge_between
        items = items.filter(purge_at__gt=start, purge_at__lte=end)
        rps = rps.filter(purge_at__gt=start, purge_at__lte=end)
    entries = [
        BinEntry(
            kind=BinKind.ITEM,
            vault=i.vault.name,
            vm_name=i.vm.name,
            item_id=i.pk,
            recovery_point=None,
            recovery_point_time=None,
            recovery_points=i.rp_count,
            reason=BinReason.ITEM_DELETED,
            deleted_by=i.deleted_by.get_username() if i.deleted_by else None,
            deleted_at=i.deleted_at,
            purge_at=i.purge_at,
            days_left=days_left(i.purge_at, now),
        )
        for i in items.select_related("vault", "vm", "deleted_by").annotate(
            rp_count=Count("recovery_points")
        )
    ]
    entries += [
        BinEntry(
            kind=BinKind.RECOVERY_POINT,
            vault=rp.vault.name,
            vm_name=rp.protected_item.vm.name,
            item_id=rp.protected_item_id,
            recovery_point=rp.pk,
            recovery_point_time=rp.time,
            recovery_points=1,
            reason=rp.soft_delete_reason,
            deleted_by=rp.soft_deleted_by.get_username() if rp.soft_deleted_by else None,
            deleted_at=rp.soft_deleted_at,
            purge_at=rp.purge_at,
            days_left=days_left(rp.purge_at, now),
        )
        for rp in rps.select_related("vault", "protected_item__vm", "soft_deleted_by")
    ]
    far = now + timedelta(days=36500)
    entries.sort(key=lambda e: (e.purge_at or far, e.vault, e.vm_name, str(e.recovery_point or "")))
    return entries


def recycle_bin(vault: Vault, *, user: AnyUser, now: datetime | None = None) -> list[BinEntry]:
    """The vault's recycle bin, soonest purge first (everybody who sees the vault)."""
    access.require(user, vault, "view")
    return _entries([vault.pk], now or timezone.now())


def site_recycle_bin(*, user: AnyUser, now: datetime | None = None) -> list[BinEntry]:
    """Every vault's recycle bin (site administrators)."""
    access.require_site(user, "view_recycle_bin")
    return _entries(None, now or timezone.now())


def upcoming_purges(
    now: datetime | None = None, within: timedelta = timedelta(days=2)
) -> list[BinEntry]:
    """Bin entries purged within `within` from `now` (the "upcoming purge" alert; system use)."""
    now = now or timezone.now()
    return _entries(None, now, purge_between=(now, now + within))
