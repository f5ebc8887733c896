"""Protection of a VM in a vault: protect, update, stop, resume, undelete (DESIGN §1, §3.5).

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

Rules that refuse an operation raise `RuleBlocked` (the API answers 409 naming the rule). A
missing role stays `PermissionDenied` (403).
"""

from datetime import datetime, timedelta
from typing import Any, TypedDict, Unpack

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from inventory.models import VirtualMachine
from jobs.models import RUNNING, Job, Operation, Param, Status
from jobs.runner import create_job
from policies import schedule
from policies.models import BackupPolicy, PolicyKind
from policies.retention import reduces_retention, retention_reductions
from security import mua
from security.models import Approval
from vaults import access, audit, lifecycle
from vaults.models import (
    BinReason,
    FileRecoverySession,
    ItemState,
    ProtectedVM,
    RetentionMode,
    SoftDeleteState,
    StopMode,
    Vault,
)
from vaults.rules import (
    RULE_ITEM_STATE,
    RULE_JOB_RUNNING,
    RULE_PURGE_DUE,
    RULE_VM_PROTECTED,
    RuleBlocked,
    immutability_blocks,
)

STOPPABLE = (
    ItemState.INITIAL_BACKUP_PENDING,
    ItemState.PROTECTED,
    ItemState.PROTECTION_ERROR,
    ItemState.PROTECTION_STOPPED,
)

Luns = list[int] | None


class ItemChanges(TypedDict, total=False):
    """What `update_item` may change; a key left out stays as it is (None clears a
    selection)."""

    policy: BackupPolicy
    included_luns: Luns
    excluded_luns: Luns


def stop_modes(vault: Vault) -> list[str]:
    """The stop-protection modes the vault offers now (no delete data while immutable)."""
    modes = [StopMode.RETAIN_FOREVER.value, StopMode.RETAIN_AS_PER_POLICY.value]
    return modes if vault.is_immutable else [*modes, StopMode.DELETE_DATA.value]


def selection_summary(item: ProtectedVM) -> dict[str, Any]:
    """An item's policy and disk selection, for the audit log."""
    return {
        "vm": item.vm.name,
        "policy": item.policy.name,
        "state": item.state,
        "included_luns": item.included_luns,
        "excluded_luns": item.excluded_luns,
    }


def _record_job(item: ProtectedVM, operation: str, by: User, **result: Any) -> Job:
    """A finished job row for a catalog-only operation, so the jobs list shows it (Azure)."""
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
    return Job.objects.filter(
        protected_item=item,
        operation__in=[Operation.BACKUP, Operation.TRANSFER],
        status=Status.QUEUED,
    ).update(status=Status.CANCELLED, ended_at=timezone.now(), error_message=why)


# -- protect and update ----------------------------------------------------------------------------


def _clean_lun_selection(
    vm: VirtualMachine, policy: BackupPolicy, included: Luns, excluded: Luns
) -> dict[str, str]:
    errors: dict[str, str] = {}
    if included is not None and excluded is not None:
        errors["included_luns"] = "Give included_luns or excluded_luns, not both."
        return errors
    chosen, field = (
        (included, "included_luns") if included is not None else (excluded, "excluded_luns")
    )
    if chosen is None:
        return errors
    if policy.kind != PolicyKind.ENHANCED:
        errors[field] = "Selective disk backup needs an enhanced policy."
        return errors
    if not isinstance(chosen, list) or not all(
        isinstance(x, int) and not isinstance(x, bool) for x in chosen
    ):
        errors[field] = "Must be a list of data-disk LUNs (integers)."
        return errors
    data_luns = {d.lun for d in vm.disks.all() if d.lun >= 0}
    unknown = sorted(set(chosen) - data_luns)
    if unknown:
        errors[field] = (
            f"LUN(s) {', '.join(map(str, unknown))} are not data disks of {vm.name}; "
            f"its data disks are {sorted(data_luns) or 'none'} (the OS disk is always included)."
        )
    return errors


def _protect_errors(vault: Vault, vm: VirtualMachine, policy: BackupPolicy) -> dict[str, str]:
    """Why the VM cannot be protected in the vault under the policy, by field."""
    errors: dict[str, str] = {}
    if policy.vault_id != vault.pk:
        errors["policy"] = "The policy belongs to another vault."
    if not vault.linked_hosts.filter(pk=vm.host_id).exists():
        errors["vm"] = f"{vm.name} runs on host {vm.host.name}, which is not linked to this vault."
        return errors
    current = ProtectedVM.objects.live().filter(vm=vm).first()
    if current is not None:
        errors["vm"] = f"{vm.name} is already protected in vault {current.vault.name}."
    elif ProtectedVM.objects.filter(vault=vault, vm=vm, state=ItemState.SOFT_DELETED).exists():
        errors["vm"] = (
            f"{vm.name} has soft-deleted backups in this vault; undelete them and resume "
            "protection instead, or protect it in another vault."
        )
    return errors


def protect_vm(
    vault: Vault,
    *,
    by: User,
    request: HttpRequest | None = None,
    vm: VirtualMachine,
    policy: BackupPolicy,
    included_luns: Luns = None,
    excluded_luns: Luns = None,
) -> ProtectedVM:
    """Enable protection: the VM must run on a host linked to the vault and be unprotected."""
    access.require(by, vault, "protect")
    errors = _protect_errors(vault, vm, policy)
    if not errors:
        errors.update(_clean_lun_selection(vm, policy, included_luns, excluded_luns))
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            item = ProtectedVM.objects.create(
                vault=vault,
                vm=vm,
                policy=policy,
                included_luns=included_luns,
                excluded_luns=excluded_luns,
                protected_by=by,
            )
            audit.record(
                "protection.enable",
                actor=by,
                request=request,
                vault=vault,
                obj=item,
                after=selection_summary(item),
            )
    except IntegrityError:
        raise ValidationError({"vm": f"{vm.name} is already protected."}) from None
    return item


def _new_selection(
    item: ProtectedVM, policy: BackupPolicy, changes: ItemChanges
) -> tuple[Luns, Luns]:
    """The disk selection after `changes`: naming one list drops the other; moving to a
    standard policy without naming one drops both (a standard policy backs up every disk)."""
    included = changes.get("included_luns", item.included_luns)
    excluded = changes.get("excluded_luns", item.excluded_luns)
    if "included_luns" in changes and "excluded_luns" not in changes:
        excluded = None
    if "excluded_luns" in changes and "included_luns" not in changes:
        included = None
    selection_named = "included_luns" in changes or "excluded_luns" in changes
    if policy.kind != PolicyKind.ENHANCED and not selection_named:
        included = excluded = None
    return included, excluded


def _gate_policy_move(
    item: ProtectedVM,
    policy: BackupPolicy,
    changes: ItemChanges,
    *,
    by: User,
    request: HttpRequest | None,
) -> None:
    """An immutable vault refuses a move to lower retention; with MUA on, such a move waits
    for a guard approver."""
    vault = item.vault
    before, after = item.policy.representation(), policy.representation()
    if vault.is_immutable:
        reasons = retention_reductions(before, after, lifecycle.rp_times([item]))
        if reasons:
            raise immutability_blocks(
                f"an item cannot move to a policy with lower retention ({policy.name}: "
                + " ".join(reasons)
                + ")",
                vault,
                field="policy",
            )
    mua.gate(
        vault,
        "protection.update",
        by=by,
        request=request,
        params=mua.item_update_params(item, dict(changes)),
        reasons=[f"move {item.vm.name} to a policy with lower retention ({policy.name})"]
        if reduces_retention(before, after, lifecycle.rp_times([item]))
        else [],
    )


def update_item(
    item: ProtectedVM,
    *,
    by: User,
    request: HttpRequest | None = None,
    **changes: Unpack[ItemChanges],
) -> ProtectedVM:
    """Change an item's policy or disk selection (contributor and above)."""
    vault = item.vault
    access.require(by, vault, "change_item_policy")
    unknown = set(changes) - set(ItemChanges.__annotations__)
    if unknown:
        raise ValidationError({f: "This field cannot be changed here." for f in sorted(unknown)})
    if item.state == ItemState.SOFT_DELETED:
        raise RuleBlocked("The item is soft-deleted; undelete it first.", rule=RULE_ITEM_STATE)
    policy = changes.get("policy", item.policy)
    if policy.vault_id != vault.pk:
        raise ValidationError({"policy": "The policy belongs to another vault."})
    included, excluded = _new_selection(item, policy, changes)
    errors = _clean_lun_selection(item.vm, policy, included, excluded)
    if errors:
        raise ValidationError(errors)
    moved = policy.pk != item.policy_id
    if moved:
        _gate_policy_move(item, policy, changes, by=by, request=request)
    before = selection_summary(item)
    item.policy, item.included_luns, item.excluded_luns = policy, included, excluded
    with transaction.atomic():
        item.save()
        after = selection_summary(item)
        if moved:
            # Existing recovery points follow the new policy (cuts go to the recycle bin).
            after["retention"] = lifecycle.recompute_retention(item, by=by)
        audit.record(
            "protection.update",
            actor=by,
            request=request,
            vault=vault,
            obj=item,
            before=before,
            after=after,
        )
    return item


# -- stop ------------------------------------------------------------------------------------------


def stop_protection(
    item: ProtectedVM, *, by: User, request: HttpRequest | None = None, mode: str
) -> ProtectedVM:
    """Stop protecting the item: retain its data (forever or as per policy) or delete it."""
    vault = item.vault
    access.require(by, vault, "stop_protection")
    if mode not in StopMode.values:
        raise ValidationError({"mode": f"Choose one of: {', '.join(StopMode.values)}."})
    if item.state == ItemState.SOFT_DELETED:
        raise RuleBlocked(
            f"{item.vm.name} is soft-deleted; undelete it before changing its protection.",
            rule=RULE_ITEM_STATE,
        )
    if mode == StopMode.DELETE_DATA:
        return _delete_data(item, by=by, request=request)
    if item.state == ItemState.PROTECTION_STOPPED and item.retention_mode == mode:
        raise RuleBlocked(
            f"Protection of {item.vm.name} is already stopped ({mode.replace('_', ' ')}).",
            rule=RULE_ITEM_STATE,
        )
    before = lifecycle.state_summary(item)
    now = timezone.now()
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
            after={**lifecycle.state_summary(item), "cancelled_jobs": cancelled},
        )
    return item


def _delete_data(item: ProtectedVM, *, by: User, request: HttpRequest | None = None) -> ProtectedVM:
    """Stop protection and delete the data: the item and its RPs go to the recycle bin (or,
    with soft delete disabled, a job deletes them at once)."""
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
        params={"item": item.pk, "mode": StopMode.DELETE_DATA},
        reasons=[f"stop protection of {item.vm.name} and delete its backup data"],
    )
    with transaction.atomic():
        ProtectedVM.objects.select_for_update().filter(pk=item.pk).first()
        _cancel_queued_backups(item, "Cancelled: protection was stopped and its data deleted.")
        _refuse_while_running(item)
        before = lifecycle.state_summary(item)
        now = timezone.now()
        binned = _bin_item(item, by=by, now=now)
        _end_file_sessions(item, now)
        job = _deletion_job(item, by=by, binned=binned)
        audit.record(
            "protection.stop",
            actor=by,
            request=request,
            vault=vault,
            obj=item,
            before=before,
            after={
                **lifecycle.state_summary(item),
                "mode": StopMode.DELETE_DATA,
                "soft_delete_state": item.deleted_soft_delete_state,
                "soft_delete_days": item.deleted_soft_delete_days,
                "recovery_points": binned,
                "job": job.pk,
            },
        )
    return item


def _refuse_while_running(item: ProtectedVM) -> None:
    """A backup, transfer or restore of the item that is running keeps its data."""
    running = (
        Job.objects.filter(
            protected_item=item,
            operation__in=[Operation.BACKUP, Operation.TRANSFER, Operation.RESTORE],
            status__in=RUNNING,
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


def _bin_item(item: ProtectedVM, *, by: User, now: datetime) -> int:
    """Move the item and its live RPs to the recycle bin under the vault's soft-delete
    setting of now, which the item keeps; the number of RPs binned."""
    vault = item.vault
    state, days = vault.soft_delete_state, vault.soft_delete_days
    purge_at = now + timedelta(days=days) if state != SoftDeleteState.DISABLED else now
    if item.state != ItemState.PROTECTION_STOPPED:
        item.stopped_at, item.stopped_by = now, by
    item.state, item.retention_mode = ItemState.SOFT_DELETED, ""
    item.deleted_at, item.deleted_by, item.purge_at = now, by, purge_at
    item.deleted_soft_delete_state, item.deleted_soft_delete_days = state, days
    item.save()
    rps = item.recovery_points
    binned = rps.live().update(
        soft_deleted_at=now,
        soft_deleted_by=by,
        soft_delete_reason=BinReason.ITEM_DELETED,
        purge_at=purge_at,
    )
    # RPs already in the bin (a retention cut) are never purged before the item.
    rps.filter(soft_deleted_at__isnull=False, purge_at__lt=purge_at).update(purge_at=purge_at)
    return binned


def _end_file_sessions(item: ProtectedVM, now: datetime) -> None:
    """Nobody browses the files of deleted data."""
    FileRecoverySession.objects.filter(recovery_point__protected_item=item, ended_at=None).update(
        ended_at=now
    )


def _deletion_job(item: ProtectedVM, *, by: User, binned: int) -> Job:
    """With soft delete on, a finished job row records the deletion (the purge job comes
    later); with it disabled, a `delete_backup_data` job deletes the data now."""
    if item.deleted_soft_delete_state != SoftDeleteState.DISABLED:
        assert item.purge_at is not None
        return _record_job(
            item,
            Operation.DELETE_BACKUP_DATA,
            by,
            soft_deleted=binned,
            purge_at=item.purge_at.isoformat(),
        )
    return create_job(
        operation=Operation.DELETE_BACKUP_DATA,
        vault=item.vault,
        item=item,
        by=by,
        params={Param.ITEM: item.pk},
    )


# -- resume, undelete ------------------------------------------------------------------------------


def resume_protection(
    item: ProtectedVM,
    *,
    by: User,
    request: HttpRequest | None = None,
    policy: BackupPolicy | None = None,
) -> ProtectedVM:
    """Resume a stopped item (retain data) under its policy or `policy`; backups go on at the
    policy's next slot. RPs that expired as per policy meanwhile are deleted by cleanup."""
    vault = item.vault
    access.require(by, vault, "resume_protection")
    if item.state != ItemState.PROTECTION_STOPPED:
        hint = "undelete it first" if item.state == ItemState.SOFT_DELETED else "it is not stopped"
        raise RuleBlocked(
            f"Protection of {item.vm.name} cannot be resumed: {hint}.", rule=RULE_ITEM_STATE
        )
    if policy is not None and policy.vault_id != vault.pk:
        raise ValidationError({"policy": "The policy belongs to another vault."})
    before = lifecycle.state_summary(item)
    now = timezone.now()
    with transaction.atomic():
        has_rps = item.recovery_points.live().exists()
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
            update_item(item, by=by, request=request, policy=policy)
        _record_job(item, Operation.CONFIGURE_BACKUP, by, resumed=True, policy=item.policy.name)
        audit.record(
            "protection.resume",
            actor=by,
            request=request,
            vault=vault,
            obj=item,
            before=before,
            after=lifecycle.state_summary(item),
        )
    return item


def _refuse_undelete(item: ProtectedVM) -> None:
    """An item whose data is being purged, or whose VM is protected now, stays deleted."""
    now = timezone.now()
    if (
        item.deleted_soft_delete_state == SoftDeleteState.DISABLED
        or ProtectedVM.objects.filter(pk=item.pk).purge_due(now).exists()
    ):
        raise RuleBlocked(
            f"The data of {item.vm.name} is being purged and cannot be undeleted.",
            rule=RULE_PURGE_DUE,
        )
    other = ProtectedVM.objects.live().filter(vm_id=item.vm_id).select_related("vault").first()
    if other is not None:
        raise RuleBlocked(
            f"{item.vm.name} is protected in vault {other.vault.name} now; stop its protection "
            "there before undeleting it here.",
            rule=RULE_VM_PROTECTED,
        )


def undelete(item: ProtectedVM, *, by: User, request: HttpRequest | None = None) -> ProtectedVM:
    """Bring a soft-deleted item back to *protection stopped, retain forever* with its RPs."""
    vault = item.vault
    access.require(by, vault, "undelete")
    if item.state != ItemState.SOFT_DELETED:
        raise RuleBlocked(f"{item.vm.name} is not soft-deleted.", rule=RULE_ITEM_STATE)
    _refuse_undelete(item)
    before = lifecycle.state_summary(item)
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
                after={**lifecycle.state_summary(item), "recovery_points": restored},
            )
    except IntegrityError:
        raise RuleBlocked(
            f"{item.vm.name} was protected elsewhere meanwhile.", rule=RULE_VM_PROTECTED
        ) from None
    return item


# -- re-runs of gated operations (MUA runs them once a guard approver approves) ---------------


def _rerun_item_update(
    approval: Approval, requester: User, request: HttpRequest | None
) -> ProtectedVM:
    p = approval.params
    item = ProtectedVM.objects.filter(vault=approval.vault, pk=p["item"]).first()
    if item is None:
        raise ValidationError({"detail": "The protected item no longer exists."})
    changes = dict(p["changes"])
    if "policy" in changes:
        policy = BackupPolicy.objects.filter(vault=approval.vault, pk=changes["policy"]).first()
        if policy is None:
            raise ValidationError({"detail": "The target policy no longer exists."})
        changes["policy"] = policy
    return update_item(item, by=requester, request=request, **changes)


mua.register("protection.update", _rerun_item_update)


def _rerun_stop_protection(
    approval: Approval, requester: User, request: HttpRequest | None
) -> ProtectedVM:
    p = approval.params
    item = ProtectedVM.objects.filter(vault=approval.vault, pk=p["item"]).first()
    if item is None:
        raise ValidationError({"detail": "The protected item no longer exists."})
    return stop_protection(item, by=requester, request=request, mode=p["mode"])


mua.register("protection.stop", _rerun_stop_protection)
