"""Protection lifecycle, the recycle bin and the rules of immutable vaults (DESIGN §1, §3.5).

Each operation is one function `op(obj, *, by, request=None, ...)`: role check through
`vaults.access` → rules → change in one transaction → audit record. Pages and the API call
these, so a rule is enforced once.

Stop protection (`stop_protection`), by mode:

* ``retain_forever`` — state *protection stopped*; every recovery point is kept until the item
  is resumed or deleted. The RPs keep the expiry their policy gave them (so resuming restores
  the policy's retention as it was); cleanup skips every RP of a retain-forever item.
* ``retain_as_per_policy`` — state *protection stopped*; RPs expire as the policy says, but
  cleanup never deletes an item's latest RP, so the last one is kept forever.
* ``delete_data`` — state *soft deleted*; the item and all its RPs go to the recycle bin with
  ``purge_at = deleted_at + soft-delete days``. The vault's soft-delete setting in force at that
  moment is recorded on the item and governs it from then on. With soft delete disabled the data
  is deleted at once by a ``delete_backup_data`` job. Refused while the vault is immutable.

Scheduled backups stop in both stopped states (the dispatcher only takes schedulable states)
and queued backups of the item are cancelled. `resume_protection` returns a stopped item to
*protected* (or *initial backup pending* when it has no RP). `undelete` returns a soft-deleted
item to *protection stopped* with ``retain_forever`` (Azure: "stop protection, retain data") and
its RPs leave the bin; RPs that were binned earlier by a retention cut stay in the bin.

Retention recompute (`recompute_retention`, called when an item changes policy or its policy
changes): each scheduled RP's tags and expiry are computed again from its backup slot. A live
RP whose new expiry has already passed (but whose old one had not) is *removed early*: it goes
to the recycle bin (reason ``retention_reduced``) instead of being deleted, if the vault's soft
delete is on; a binned RP whose new expiry is in the future comes back (Azure's rule). The
latest RP and RPs of retain-forever items never go to the bin; on-demand RPs keep their own
retain-until date.

Rules that refuse an operation raise `RuleBlocked` (the API answers 409 naming the rule). A
missing role stays `PermissionDenied` (403).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.http import HttpRequest
from django.utils import timezone

from security import mua
from security.models import Approval
from vaults import access, audit
from vaults.models import (
    BinReason,
    FileRecoverySession,
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
    RULE_JOB_RUNNING,
    RULE_PURGE_DUE,
    RULE_SOFT_DELETE_ENABLED,
    RULE_VM_PROTECTED,
    RuleBlocked,
    immutability_blocks,
)

DELETE_DATA = "delete_data"
STOP_MODES = (RetentionMode.RETAIN_FOREVER, RetentionMode.RETAIN_AS_PER_POLICY, DELETE_DATA)
STOPPABLE = (
    ItemState.INITIAL_BACKUP_PENDING,
    ItemState.PROTECTED,
    ItemState.PROTECTION_ERROR,
    ItemState.PROTECTION_STOPPED,
)


def stop_modes(vault: Vault) -> list[str]:
    """The stop-protection modes the vault offers now (no delete data while immutable)."""
    modes = [RetentionMode.RETAIN_FOREVER.value, RetentionMode.RETAIN_AS_PER_POLICY.value]
    return modes if vault.is_immutable else [*modes, DELETE_DATA]


def _summary(item: ProtectedVM) -> dict:
    return {
        "vm": item.vm.name,
        "policy": item.policy.name,
        "state": item.state,
        "retention_mode": item.retention_mode or None,
        "purge_at": item.purge_at.isoformat() if item.purge_at else None,
    }


def _record_job(item: ProtectedVM, operation: str, by, **result):
    """A finished job row for a catalog-only operation, so the jobs list shows it (Azure)."""
    from jobs.models import Status
    from jobs.runner import create_job

    now = timezone.now()
    return create_job(
        operation=operation,
        vault=item.vault,
        item=item,
        by=by,
        deliver=False,
        status=Status.COMPLETED,
        started_at=now,
        ended_at=now,
        result=result,
    )


def _cancel_queued_backups(item: ProtectedVM, why: str) -> int:
    from jobs.models import Job, Operation, Status

    return Job.objects.filter(
        protected_item=item,
        operation__in=[Operation.BACKUP, Operation.TRANSFER],
        status=Status.QUEUED,
    ).update(status=Status.CANCELLED, ended_at=timezone.now(), error_message=why)


# -- stop, resume, undelete ------------------------------------------------------------------------


def stop_protection(item: ProtectedVM, *, by, request=None, mode: str) -> ProtectedVM:
    """Stop protecting the item: retain its data (forever or as per policy) or delete it."""
    vault = item.vault
    access.require(by, vault, "stop_protection")
    if mode not in STOP_MODES:
        raise ValidationError({"mode": f"Choose one of: {', '.join(STOP_MODES)}."})
    if item.state == ItemState.SOFT_DELETED:
        raise RuleBlocked(
            f"{item.vm.name} is soft-deleted; undelete it before changing its protection.",
            rule=RULE_ITEM_STATE,
        )
    if mode == DELETE_DATA:
        return _delete_data(item, by=by, request=request)
    if item.state == ItemState.PROTECTION_STOPPED and item.retention_mode == mode:
        raise RuleBlocked(
            f"Protection of {item.vm.name} is already stopped ({mode.replace('_', ' ')}).",
            rule=RULE_ITEM_STATE,
        )
    before = _summary(item)
    now = timezone.now()
    from jobs.models import Operation

    with transaction.atomic():
        if item.state != ItemState.PROTECTION_STOPPED:
            item.stopped_at, item.stopped_by = now, by
        item.state, item.retention_mode = ItemState.PROTECTION_STOPPED, mode
        item.save(update_fields=["state", "retention_mode", "stopped_at", "stopped_by"])
        cancelled = _cancel_queued_backups(item, "Cancelled: protection was stopped.")
        _record_job(item, Operation.DISABLE_BACKUP, by, retention_mode=mode)
        audit.record(
            "protection.stop",
            actor=by,
            request=request,
            vault=vault,
            obj=item,
            before=before,
            after={**_summary(item), "cancelled_jobs": cancelled},
        )
    return item


def _delete_data(item: ProtectedVM, *, by, request=None) -> ProtectedVM:
    from jobs.models import Job, Operation, Status
    from jobs.runner import create_job

    vault = item.vault
    if vault.is_immutable:
        raise immutability_blocks(
            "stop protection with delete data is not allowed; stop protection and retain the "
            "data instead.",
            vault,
            field="mode",
        )
    mua.gate(
        vault,
        "protection.stop",
        by=by,
        request=request,
        params={"item": item.pk, "mode": DELETE_DATA},
        reasons=[f"stop protection of {item.vm.name} and delete its backup data"],
    )
    with transaction.atomic():
        ProtectedVM.objects.select_for_update().filter(pk=item.pk).first()
        _cancel_queued_backups(item, "Cancelled: protection was stopped and its data deleted.")
        running = (
            Job.objects.filter(
                protected_item=item,
                operation__in=[Operation.BACKUP, Operation.TRANSFER, Operation.RESTORE],
                status__in=[Status.IN_PROGRESS, Status.CANCELLING],
            )
            .order_by("pk")
            .first()
        )
        if running is not None:
            raise RuleBlocked(
                f"A {running.get_operation_display().lower()} job of {item.vm.name} is running "
                f"(job {running.pk}); wait for it or cancel it, then delete the data.",
                rule=RULE_JOB_RUNNING,
            )
        before = _summary(item)
        now = timezone.now()
        state, days = vault.soft_delete_state, vault.soft_delete_days
        soft = state != SoftDeleteState.DISABLED
        purge_at = now + timedelta(days=days) if soft else now
        if item.state != ItemState.PROTECTION_STOPPED:
            item.stopped_at, item.stopped_by = now, by
        item.state, item.retention_mode = ItemState.SOFT_DELETED, ""
        item.deleted_at, item.deleted_by, item.purge_at = now, by, purge_at
        item.deleted_soft_delete_state, item.deleted_soft_delete_days = state, days
        item.save()
        rps = item.recovery_points
        binned = rps.filter(soft_deleted_at=None).update(
            soft_deleted_at=now,
            soft_deleted_by=by,
            soft_delete_reason=BinReason.ITEM_DELETED,
            purge_at=purge_at,
        )
        # RPs already in the bin (a retention cut) are never purged before the item.
        rps.filter(soft_deleted_at__isnull=False, purge_at__lt=purge_at).update(purge_at=purge_at)
        FileRecoverySession.objects.filter(
            recovery_point__protected_item=item, ended_at=None
        ).update(ended_at=now)
        if soft:
            job = _record_job(
                item,
                Operation.DELETE_BACKUP_DATA,
                by,
                soft_deleted=binned,
                purge_at=purge_at.isoformat(),
            )
        else:
            job = create_job(
                operation=Operation.DELETE_BACKUP_DATA,
                vault=vault,
                item=item,
                by=by,
                params={"item": item.pk},
            )
        audit.record(
            "protection.stop",
            actor=by,
            request=request,
            vault=vault,
            obj=item,
            before=before,
            after={
                **_summary(item),
                "mode": DELETE_DATA,
                "soft_delete_state": state,
                "soft_delete_days": days,
                "recovery_points": binned,
                "job": job.pk,
            },
        )
    return item


def resume_protection(item: ProtectedVM, *, by, request=None, policy=None) -> ProtectedVM:
    """Resume a stopped item (retain data) under its policy or `policy`; backups go on at the
    policy's next slot. RPs that expired as per policy meanwhile are deleted by cleanup."""
    from jobs.models import Operation
    from policies import schedule
    from vaults import services

    vault = item.vault
    access.require(by, vault, "resume_protection")
    if item.state != ItemState.PROTECTION_STOPPED:
        hint = "undelete it first" if item.state == ItemState.SOFT_DELETED else "it is not stopped"
        raise RuleBlocked(
            f"Protection of {item.vm.name} cannot be resumed: {hint}.", rule=RULE_ITEM_STATE
        )
    if policy is not None and policy.vault_id != vault.pk:
        raise ValidationError({"policy": "The policy belongs to another vault."})
    before = _summary(item)
    now = timezone.now()
    with transaction.atomic():
        has_rps = item.recovery_points.filter(soft_deleted_at=None).exists()
        item.state = ItemState.PROTECTED if has_rps else ItemState.INITIAL_BACKUP_PENDING
        item.retention_mode = ""
        item.stopped_at = item.stopped_by = None
        # The next backup is the policy's next slot, not a catch-up of the slots missed.
        slot = schedule.previous_run(item.policy.representation(), now)
        if item.last_scheduled_slot is None or item.last_scheduled_slot < slot:
            item.last_scheduled_slot = slot
        item.save(
            update_fields=[
                "state",
                "retention_mode",
                "stopped_at",
                "stopped_by",
                "last_scheduled_slot",
            ]
        )
        if policy is not None and policy.pk != item.policy_id:
            # After the state change, so RPs a shorter policy cuts go to the recycle bin.
            services.update_item(item, by=by, request=request, policy=policy)
        _record_job(item, Operation.CONFIGURE_BACKUP, by, resumed=True, policy=item.policy.name)
        audit.record(
            "protection.resume",
            actor=by,
            request=request,
            vault=vault,
            obj=item,
            before=before,
            after=_summary(item),
        )
    return item


def undelete(item: ProtectedVM, *, by, request=None) -> ProtectedVM:
    """Bring a soft-deleted item back to *protection stopped, retain forever* with its RPs."""
    from jobs.models import Operation

    vault = item.vault
    access.require(by, vault, "undelete")
    if item.state != ItemState.SOFT_DELETED:
        raise RuleBlocked(f"{item.vm.name} is not soft-deleted.", rule=RULE_ITEM_STATE)
    now = timezone.now()
    if item.deleted_soft_delete_state == SoftDeleteState.DISABLED or (
        item.purge_at is not None and item.purge_at <= now
    ):
        raise RuleBlocked(
            f"The data of {item.vm.name} is being purged and cannot be undeleted.",
            rule=RULE_PURGE_DUE,
        )
    other = (
        ProtectedVM.objects.filter(vm_id=item.vm_id)
        .exclude(state=ItemState.SOFT_DELETED)
        .select_related("vault")
        .first()
    )
    if other is not None:
        raise RuleBlocked(
            f"{item.vm.name} is protected in vault {other.vault.name} now; stop its protection "
            "there before undeleting it here.",
            rule=RULE_VM_PROTECTED,
        )
    before = _summary(item)
    try:
        with transaction.atomic():
            ProtectedVM.objects.select_for_update().filter(pk=item.pk).first()
            restored = item.recovery_points.filter(
                soft_delete_reason=BinReason.ITEM_DELETED
            ).update(
                soft_deleted_at=None, soft_deleted_by=None, soft_delete_reason="", purge_at=None
            )
            item.state = ItemState.PROTECTION_STOPPED
            item.retention_mode = RetentionMode.RETAIN_FOREVER
            item.deleted_at = item.deleted_by = item.purge_at = None
            item.deleted_soft_delete_state, item.deleted_soft_delete_days = "", None
            item.save()
            _record_job(item, Operation.UNDELETE, by, recovery_points=restored)
            audit.record(
                "protection.undelete",
                actor=by,
                request=request,
                vault=vault,
                obj=item,
                before=before,
                after={**_summary(item), "recovery_points": restored},
            )
    except IntegrityError:
        raise RuleBlocked(
            f"{item.vm.name} was protected elsewhere meanwhile.", rule=RULE_VM_PROTECTED
        ) from None
    return item


def purge_now(item: ProtectedVM, *, by, request=None):
    """Purge a soft-deleted item at once (a `purge` job). Only while the vault's soft delete is
    disabled and the vault is not immutable; never while soft delete is always on."""
    from jobs.models import Operation
    from jobs.runner import create_job

    vault = item.vault
    access.require(by, vault, "stop_protection")
    if item.state != ItemState.SOFT_DELETED:
        raise RuleBlocked(f"{item.vm.name} is not in the recycle bin.", rule=RULE_ITEM_STATE)
    if SoftDeleteState.ALWAYS_ON in (vault.soft_delete_state, item.deleted_soft_delete_state):
        raise RuleBlocked(
            f"Soft delete is always on in vault {vault.name}: deleted data stays in the recycle "
            "bin until its purge date and nobody can purge it early.",
            rule=RULE_ALWAYS_ON,
        )
    if vault.is_immutable:
        raise immutability_blocks("recovery points cannot be purged before their time.", vault)
    if vault.soft_delete_state == SoftDeleteState.ENABLED:
        raise RuleBlocked(
            f"Soft delete is enabled in vault {vault.name}: deleted data is purged on its purge "
            "date. Disable soft delete to purge it early.",
            rule=RULE_SOFT_DELETE_ENABLED,
        )
    now = timezone.now()
    with transaction.atomic():
        before = _summary(item)
        item.purge_at = now
        item.save(update_fields=["purge_at"])
        item.recovery_points.filter(soft_deleted_at__isnull=False).update(purge_at=now)
        job = create_job(
            operation=Operation.PURGE, vault=vault, item=item, by=by, params={"item": item.pk}
        )
        audit.record(
            "recycle_bin.purge_now",
            actor=by,
            request=request,
            vault=vault,
            obj=item,
            before=before,
            after={**_summary(item), "job": job.pk},
        )
    return job


# -- retention recompute ---------------------------------------------------------------------------


def _slots(rps: list[RecoveryPoint]) -> dict:
    """Each scheduled RP's backup slot (retention's day), from the job that made it."""
    from jobs.models import Job, Operation

    rows = Job.objects.filter(
        recovery_point__in=[rp.pk for rp in rps], operation=Operation.BACKUP
    ).values_list("recovery_point_id", "params__slot")
    return {rp_id: datetime.fromisoformat(slot) for rp_id, slot in rows if slot}


def rp_times(items) -> list[datetime]:
    """Slot times of the live scheduled RPs of `items` (for `retention_reductions`)."""
    rps = list(
        RecoveryPoint.objects.filter(
            protected_item__in=items, soft_deleted_at=None, retain_until=None
        )
    )
    slots = _slots(rps)
    return [slots.get(rp.pk, rp.time) for rp in rps if "on_demand" not in rp.tags]


def recompute_retention(item: ProtectedVM, *, by=None, now: datetime | None = None) -> dict:
    """Tags and expiry of the item's scheduled RPs under its current policy; RPs cut early go to
    the recycle bin, binned ones whose new expiry is in the future come back (module doc).

    Call inside the transaction that changed the policy. Counts of what changed are returned.
    """
    from policies.retention import tags_and_expiry

    now = now or timezone.now()
    vault = item.vault
    rep = item.policy.representation()
    rps = list(
        item.recovery_points.filter(
            Q(soft_deleted_at=None) | Q(soft_delete_reason=BinReason.RETENTION_REDUCED)
        ).order_by("time")
    )
    slots = _slots(rps)
    newest = max((rp.time for rp in rps if rp.soft_deleted_at is None), default=None)
    forever = item.retention_mode == RetentionMode.RETAIN_FOREVER
    binning = vault.soft_delete_state != SoftDeleteState.DISABLED
    changed: list[RecoveryPoint] = []
    binned = returned = 0
    for rp in rps:
        if rp.retain_until is not None or "on_demand" in rp.tags:
            continue
        tags, expires = tags_and_expiry(
            rep, slots.get(rp.pk, rp.time), is_daily_last=rp.in_vault_tier or rp.transfer_due
        )
        old = rp.expires_at
        touched = tags != rp.tags or expires != old
        rp.tags, rp.expires_at = tags, expires
        if rp.soft_deleted_at is None:
            cut = expires <= now and (old is None or old > now)
            if cut and not forever and rp.time != newest:
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
    return {"updated": len(changed), "to_recycle_bin": binned, "from_recycle_bin": returned}


# -- the recycle bin -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BinEntry:
    """One entry of the recycle bin: a soft-deleted item (with all its RPs) or one RP cut early
    from an item that is still there."""

    kind: str  # "item" | "recovery_point"
    vault: str
    vm_name: str
    item_id: int
    recovery_point: UUID | None
    recovery_point_time: datetime | None
    recovery_points: int
    reason: str
    deleted_by: str | None
    deleted_at: datetime
    purge_at: datetime
    days_left: int | None


def days_left(purge_at: datetime | None, now: datetime) -> int | None:
    """Whole days until the purge, rounded up (None for rows made before purge times)."""
    if purge_at is None:
        return None
    return max(0, math.ceil((purge_at - now).total_seconds() / 86400))


def _entries(vault_ids, now: datetime, purge_between=None) -> list[BinEntry]:
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
            kind="item",
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
            kind="recovery_point",
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


def recycle_bin(vault: Vault, *, user, now: datetime | None = None) -> list[BinEntry]:
    """The vault's recycle bin, soonest purge first (everybody who sees the vault)."""
    access.require(user, vault, "view")
    return _entries([vault.pk], now or timezone.now())


def site_recycle_bin(*, user, now: datetime | None = None) -> list[BinEntry]:
    """Every vault's recycle bin (site administrators)."""
    access.require_site(user, "view_recycle_bin")
    return _entries(None, now or timezone.now())


def upcoming_purges(
    now: datetime | None = None, within: timedelta = timedelta(days=2)
) -> list[BinEntry]:
    """Bin entries purged within `within` from `now` (the "upcoming purge" alert; system use)."""
    now = now or timezone.now()
    return _entries(None, now, purge_between=(now, now + within))


# -- re-run of a gated operation (MUA runs it once a guard approver approves) ----------------------


def _rerun_stop_protection(
    approval: Approval, requester: User, request: HttpRequest | None
) -> ProtectedVM:
    p = approval.params
    item = ProtectedVM.objects.filter(vault=approval.vault, pk=p["item"]).first()
    if item is None:
        raise ValidationError({"detail": "The protected item no longer exists."})
    return stop_protection(item, by=requester, request=request, mode=p["mode"])


mua.register("protection.stop", _rerun_stop_protection)
