"""Multi-user authorization (MUA): the two-person rule for a vault's critical operations.

While a vault has `mua_enabled`, these operations wait for a guard approver of the vault:
disable soft delete, reduce the retention of a policy or of an item (moving it to a policy
with lower retention), stop protection with delete data, disable MUA, change the encryption key.

1. A gated domain function validates, then calls `gate(...)` before changing anything. With
   MUA on and the operation critical, `gate` records a pending `Approval` (the whole request is
   its params) and raises `ApprovalRequired`; nothing changes.
2. A guard approver of the vault — never the requester, superusers included — approves or
   rejects. Approving runs the operation at once on behalf of the requester: `approve` calls
   the domain function again inside `executing(approval)`, and `gate` lets exactly that
   approval's operation through. Both users land in the audit log.
3. Pending requests expire after LIFEBOAT["MUA_APPROVAL_HOURS"] (default 24); an expired or
   rejected request does nothing.
"""

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404, HttpRequest
from django.utils import timezone

from portal.client_address import client_ip
from portal.options import option
from security.models import Approval, ApprovalStatus
from vaults import access, audit, rules
from vaults.models import GuardApprover, ProtectedVM, SoftDeleteState, Vault

DEFAULT_HOURS = 24

# The approval whose operation is running now (set only by `approve`).
_executing: ContextVar[Approval | None] = ContextVar("lifeboat_mua_executing", default=None)


class ApprovalRequired(ValidationError):
    """The operation waits for a guard approver (MUA); nothing was changed (API: 202).

    `approval` is the pending request. A caller inside an enclosing `transaction.atomic()`
    loses the row when the block rolls back on this exception: call `persist()` where the
    exception is caught (the API's exception handler does) to write it again.
    """

    def __init__(self, approval: Approval, message: str) -> None:
        super().__init__({"detail": [message]})
        self.approval = approval
        self.text = message

    def persist(self) -> Approval:
        self.approval = ensure_saved(self.approval)
        return self.approval


def approval_hours() -> float:
    return option("MUA_APPROVAL_HOURS", DEFAULT_HOURS)


def canonical(params: dict[str, Any]) -> dict[str, Any]:
    """`params` as JSON would store them, so a re-entered call compares equal."""
    return json.loads(json.dumps(params, cls=DjangoJSONEncoder, sort_keys=True))


@contextmanager
def executing(approval: Approval) -> Iterator[Approval]:
    token = _executing.set(approval)
    try:
        yield approval
    finally:
        _executing.reset(token)


# -- what is critical ------------------------------------------------------------------------------


def vault_update_reasons(vault: Vault, changes: dict[str, Any]) -> list[str]:
    """The MUA rules a vault settings change touches (empty: not critical)."""
    reasons = []
    new_sd = changes.get("soft_delete_state", vault.soft_delete_state)
    if vault.soft_delete_state != SoftDeleteState.DISABLED and new_sd == SoftDeleteState.DISABLED:
        reasons.append("disable soft delete")
    if vault.mua_enabled and changes.get("mua_enabled", True) is False:
        reasons.append("disable multi-user authorization")
    if "encryption_key" in changes or (
        "encryption" in changes and changes["encryption"] != vault.encryption
    ):
        reasons.append("change the encryption key")
    return reasons


# -- the gate ----------------------------------------------------------------------------------------


def gate(
    vault: Vault,
    operation: str,
    *,
    by: User,
    request: HttpRequest | None = None,
    params: dict[str, Any],
    reasons: list[str],
    summary: str = "",
) -> Approval | None:
    """Let the operation run, or record a pending approval and raise `ApprovalRequired`.

    Returns the approval being executed when the call comes from `approve` for exactly this
    operation and params, None when the operation needs no approval. Call it after the role
    check and validation, before any change.
    """
    params = canonical(params)
    current = _executing.get()
    if (
        current is not None
        and current.vault_id == vault.pk
        and current.operation == operation
        and canonical(current.params) == params
    ):
        return current
    if not vault.mua_enabled or not reasons:
        return None
    summary = summary or f"{operation}: {', '.join(reasons)}"
    now = timezone.now()
    existing = (
        Approval.objects.filter(
            vault=vault,
            operation=operation,
            requested_by=by,
            status=ApprovalStatus.PENDING,
            expires_at__gt=now,
        )
        .order_by("-requested_at")
        .first()
    )
    if existing is not None and canonical(existing.params) == params:
        # Asking again for the same thing does not queue a second request.
        raise ApprovalRequired(existing, _waiting_message(existing))
    approval = Approval(
        vault=vault,
        operation=operation,
        summary=summary[:300],
        reasons=reasons,
        params=params,
        requested_by=by,
        requested_by_name=by.get_username(),
        requested_at=now,
        source_ip=client_ip(request),
        expires_at=now + timedelta(hours=approval_hours()),
    )
    _save_request(approval)
    raise ApprovalRequired(approval, _waiting_message(approval))


def _waiting_message(approval: Approval) -> str:
    return (
        f"Multi-user authorization is on for vault {approval.vault.name}: to "
        f"{' and '.join(approval.reasons)} needs the approval of a guard approver other than "
        f"you. Approval request {approval.pk} is pending until "
        f"{approval.expires_at:%Y-%m-%d %H:%M} UTC; nothing was changed yet."
    )


def _save_request(approval: Approval) -> None:
    with transaction.atomic():
        approval.save()
        audit.record(
            "approval.request",
            actor=approval.requested_by,
            vault=approval.vault,
            obj=approval,
            after={
                "operation": approval.operation,
                "reasons": approval.reasons,
                "params": approval.params,
                "expires_at": approval.expires_at.isoformat(),
            },
        )


def ensure_saved(approval: Approval) -> Approval:
    """Write the request again if an enclosing transaction rolled it back."""
    if approval.pk is not None and Approval.objects.filter(pk=approval.pk).exists():
        return approval
    approval.pk = None
    approval._state.adding = True
    _save_request(approval)
    return approval


# -- who sees and decides ---------------------------------------------------------------------------


def is_guard(user: User | AnonymousUser | None, vault: Vault) -> bool:
    return bool(
        user
        and user.is_authenticated
        and user.is_active
        and GuardApprover.objects.filter(vault=vault, user=user).exists()
    )


def require_view_approvals(user: User | AnonymousUser, vault: Vault) -> None:
    """Guard approvers and members who may change settings see the vault's approvals.

    404 for anybody who neither sees the vault nor guards it; 403 for a member below
    contributor.
    """
    if is_guard(user, vault):
        return
    access.require(user, vault, "change_settings")


def require_decide(user: User, approval: Approval) -> None:
    vault = approval.vault
    if not is_guard(user, vault):
        if access.role_of(user, vault) is None:
            raise Http404("No such vault.")
        raise PermissionDenied(
            f"Only a guard approver of vault {vault.name} decides its approval requests."
        )
    if approval.requested_by_id == user.pk:
        raise PermissionDenied("Nobody approves or rejects their own request (two-person rule).")


def visible_approvals(user: User, vault: Vault) -> QuerySet[Approval]:
    return Approval.objects.filter(vault=vault)


# -- deciding ------------------------------------------------------------------------------------------


def _expire_if_due(approval: Approval, now: datetime) -> None:
    if approval.current_status(now) == ApprovalStatus.EXPIRED and (
        approval.status == ApprovalStatus.PENDING
    ):
        Approval.objects.filter(pk=approval.pk, status=ApprovalStatus.PENDING).update(
            status=ApprovalStatus.EXPIRED
        )
        approval.status = ApprovalStatus.EXPIRED
        audit.record(
            "approval.expire",
            actor=None,
            vault=approval.vault,
            obj=approval,
            before={"status": ApprovalStatus.PENDING},
            after={"status": ApprovalStatus.EXPIRED},
        )


def _lock_pending(approval: Approval, by: User) -> Approval:
    """Call inside a transaction, after `_check_decidable`."""
    locked = Approval.objects.select_for_update().select_related("vault").get(pk=approval.pk)
    if locked.current_status() != ApprovalStatus.PENDING:
        raise rules.blocked(
            f"Approval request {locked.pk} is {locked.current_status()}; only a pending "
            "request can be decided, and an expired or rejected one does nothing.",
            rule=rules.RULE_APPROVAL_STATE,
        )
    return locked


def _check_decidable(approval: Approval, by: User) -> None:
    require_decide(by, approval)
    # Written before the decision's transaction, so a refused decision keeps the expiry.
    _expire_if_due(approval, timezone.now())


def _decide(
    approval: Approval, status: str, *, by: User, request: HttpRequest | None, note: str
) -> Approval:
    """Record a guard approver's decision on a pending request (its own transaction)."""
    _check_decidable(approval, by)
    with transaction.atomic():
        locked = _lock_pending(approval, by)
        locked.status = status
        locked.decided_by, locked.decided_at, locked.note = by, timezone.now(), note[:500]
        locked.save(update_fields=["status", "decided_by", "decided_at", "note"])
        audit.record(
            f"approval.{'approve' if status == ApprovalStatus.APPROVED else 'reject'}",
            actor=by,
            request=request,
            vault=locked.vault,
            obj=locked,
            before={"status": ApprovalStatus.PENDING},
            after={
                "status": status,
                "requested_by": locked.requested_by_name,
                "operation": locked.operation,
                "note": locked.note,
            },
        )
    return locked


def reject(
    approval: Approval, *, by: User, request: HttpRequest | None = None, note: str = ""
) -> Approval:
    return _decide(approval, ApprovalStatus.REJECTED, by=by, request=request, note=note)


# What an approver proves besides being a guard approver, before approving: (approver,
# request, otp) -> None or ValidationError. `security.second_factor` registers a fresh code.
ApproverCheck = Callable[[User, HttpRequest | None, str | None], None]

_approver_checks: dict[str, ApproverCheck] = {}


def check_approvers_with(name: str, check: ApproverCheck) -> None:
    """Make `approve` ask `check` of every approver (registered once, by name)."""
    _approver_checks[name] = check


def approve(
    approval: Approval,
    *,
    by: User,
    request: HttpRequest | None = None,
    note: str = "",
    otp: str | None = None,
) -> Approval:
    """Approve and run the operation on behalf of the requester.

    1. Lock the request; refuse unless it is pending, unexpired and `by` is another guard
       approver of the vault who passes the registered approver checks (a fresh code from
       their second factor, `otp`, when they have one). Mark it approved and commit (the
       decision stands even if the operation then fails).
    2. Run the operation inside `executing(approval)`; the domain function checks the
       requester's role and every other rule again and writes its own audit record.
    3. Mark it executed, or keep it approved with the error and raise `RuleBlocked` (409).
    """
    require_decide(by, approval)
    for check in _approver_checks.values():
        check(by, request, otp)
    locked = _decide(approval, ApprovalStatus.APPROVED, by=by, request=request, note=note)
    requester = locked.requested_by
    try:
        if requester is None or not requester.is_active:
            raise PermissionDenied("The requester's account no longer exists or is inactive.")
        access.forget(requester)
        with transaction.atomic(), executing(locked):
            _run(locked, requester, request)
            locked.status, locked.executed_at = ApprovalStatus.EXECUTED, timezone.now()
            locked.save(update_fields=["status", "executed_at"])
            audit.record(
                "approval.execute",
                actor=by,
                request=request,
                vault=locked.vault,
                obj=locked,
                before={"status": ApprovalStatus.APPROVED},
                after={
                    "status": ApprovalStatus.EXECUTED,
                    "operation": locked.operation,
                    "requested_by": locked.requested_by_name,
                    "approved_by": by.get_username(),
                    "params": locked.params,
                },
            )
    except (ValidationError, PermissionDenied) as e:
        message = " ".join(e.messages) if isinstance(e, ValidationError) else str(e)
        locked.error = message
        locked.save(update_fields=["error"])
        raise rules.blocked(
            f"Approval request {locked.pk} is approved, but the operation could not run: {message}",
            rule=rules.RULE_APPROVAL_FAILED,
        ) from e
    return locked


def expire_due(now: datetime | None = None) -> int:
    """Mark pending requests past their expiry as expired (periodic; also done lazily)."""
    now = now or timezone.now()
    count = 0
    for approval in Approval.objects.filter(
        status=ApprovalStatus.PENDING, expires_at__lte=now
    ).select_related("vault"):
        _expire_if_due(approval, now)
        count += 1
    return count


# -- running an approved operation ------------------------------------------------------------------

# A gated operation's re-run: (approval, requester, request) -> anything. It calls the domain
# function again with the approval's params, on behalf of the requester.
Rerun = Callable[[Approval, User, HttpRequest | None], object]

# operation → its re-run, registered by the module that owns the operation.
_reruns: dict[str, Rerun] = {}


def register(operation: str, rerun: Rerun) -> None:
    """Make `approve` run `operation` with `rerun` (called once, where the operation lives)."""
    _reruns[operation] = rerun


def _run(approval: Approval, requester: User, request: HttpRequest | None) -> None:
    rerun = _reruns.get(approval.operation)
    if rerun is None:
        raise ValidationError({"detail": f"Unknown operation {approval.operation}."})
    rerun(approval, requester, request)


def item_update_params(item: ProtectedVM, changes: dict[str, Any]) -> dict[str, Any]:
    """`update_item`'s changes as JSON (the policy by id)."""
    out = dict(changes)
    if "policy" in out and out["policy"] is not None and hasattr(out["policy"], "pk"):
        out["policy"] = out["policy"].pk
    return {"item": item.pk, "changes": out}


# -- rules about MUA itself ------------------------------------------------------------------------


def check_enable(vault: Vault, changes: dict[str, Any]) -> None:
    """Turning MUA on needs somebody to approve: at least one guard approver."""
    if changes.get("mua_enabled") is True and not vault.mua_enabled:
        if not GuardApprover.objects.filter(vault=vault).exists():
            raise rules.blocked(
                f"Vault {vault.name} has no guard approver: a site administrator assigns one "
                "before multi-user authorization can be enabled.",
                rule=rules.RULE_MUA_NO_GUARD,
                field="mua_enabled",
            )


def check_guard_removal(ga: GuardApprover) -> None:
    """The last guard approver of a vault with MUA on stays: nobody could approve otherwise."""
    vault = ga.vault
    if (
        vault.mua_enabled
        and not GuardApprover.objects.filter(vault=vault).exclude(pk=ga.pk).exists()
    ):
        raise rules.blocked(
            f"{ga.user.username} is the last guard approver of vault {vault.name}, which has "
            "multi-user authorization on; assign another one first.",
            rule=rules.RULE_MUA_LAST_GUARD,
        )
