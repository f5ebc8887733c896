"""Who works in a vault: members and their roles, and the MUA guard approvers."""

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest

from security import mua
from vaults import access, audit
from vaults.models import GuardApprover, Role, Vault, VaultMembership

KEEP_AN_OWNER = "A vault keeps at least one owner."


def _check_local(membership: VaultMembership, field: str) -> None:
    """A membership a directory group mapping grants follows the mapping, not local edits."""
    if membership.mapped_from:
        raise ValidationError(
            {
                field: f"{membership.user.username}'s role comes from directory group "
                f"{membership.mapped_from}; change the group mapping instead."
            }
        )


def _check_role(role: str) -> None:
    if role not in Role.values:
        raise ValidationError({"role": f"Choose one of: {', '.join(Role.values)}."})


def _is_last_owner(membership: VaultMembership) -> bool:
    others = membership.vault.memberships.filter(role=Role.OWNER).exclude(pk=membership.pk)
    return membership.role == Role.OWNER and not others.exists()


def add_member(
    vault: Vault, *, by: User, request: HttpRequest | None = None, user: User, role: str
) -> VaultMembership:
    access.require(by, vault, "assign_roles")
    _check_role(role)
    if VaultMembership.objects.filter(vault=vault, user=user).exists():
        raise ValidationError({"user": f"{user.username} already has a role in this vault."})
    with transaction.atomic():
        m = VaultMembership.objects.create(vault=vault, user=user, role=role)
        audit.record(
            "membership.create",
            actor=by,
            request=request,
            vault=vault,
            obj=m,
            after={"user": user.username, "role": role},
        )
    access.forget(user)
    return m


def change_member_role(
    membership: VaultMembership, *, by: User, request: HttpRequest | None = None, role: str
) -> VaultMembership:
    vault = membership.vault
    access.require(by, vault, "assign_roles")
    _check_role(role)
    _check_local(membership, "role")
    if role != Role.OWNER and _is_last_owner(membership):
        raise ValidationError({"role": KEEP_AN_OWNER})
    before = {"user": membership.user.username, "role": membership.role}
    with transaction.atomic():
        membership.role = role
        membership.save(update_fields=["role"])
        audit.record(
            "membership.update",
            actor=by,
            request=request,
            vault=vault,
            obj=membership,
            before=before,
            after={"user": membership.user.username, "role": role},
        )
    access.forget(membership.user)
    return membership


def remove_member(
    membership: VaultMembership, *, by: User, request: HttpRequest | None = None
) -> None:
    vault = membership.vault
    access.require(by, vault, "assign_roles")
    _check_local(membership, "detail")
    if _is_last_owner(membership):
        raise ValidationError({"detail": KEEP_AN_OWNER})
    with transaction.atomic():
        audit.record(
            "membership.delete",
            actor=by,
            request=request,
            vault=vault,
            obj=membership,
            before={"user": membership.user.username, "role": membership.role},
        )
        membership.delete()
    access.forget(membership.user)


def add_guard_approver(
    vault: Vault, *, by: User, request: HttpRequest | None = None, user: User
) -> GuardApprover:
    """Make `user` the vault's MUA guard approver (site admins only)."""
    access.require_site(by, "assign_guard")
    if not user.is_active:
        raise ValidationError({"user": f"{user.username} is not an active user."})
    if GuardApprover.objects.filter(vault=vault, user=user).exists():
        raise ValidationError({"user": f"{user.username} is already a guard approver here."})
    with transaction.atomic():
        ga = GuardApprover.objects.create(vault=vault, user=user, assigned_by=by)
        audit.record(
            "guard_approver.create",
            actor=by,
            request=request,
            vault=vault,
            obj=ga,
            after={"user": user.username},
        )
    return ga


def remove_guard_approver(
    ga: GuardApprover, *, by: User, request: HttpRequest | None = None
) -> None:
    access.require_site(by, "assign_guard")
    mua.check_guard_removal(ga)
    with transaction.atomic():
        audit.record(
            "guard_approver.delete",
            actor=by,
            request=request,
            vault=ga.vault,
            obj=ga,
            before={"user": ga.user.username},
        )
        ga.delete()
