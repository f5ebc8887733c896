"""Who may do what in which vault: the one place that decides.

Every view, viewset and template that acts for a user asks this module. Rules (DESIGN §2):
- A vault is visible to its members and to site administrators (superusers); to anybody else
  it does not exist (404).
- Each action needs a minimum role; a member below it gets 403.
- Site administrators may do everything a role allows. Nobody, superusers included, bypasses
  the model-level guards (always-on soft delete, locked immutability, MUA approvals).
- Guard approvers see their vault's approval requests only, not the vault.
"""

import hmac
from typing import Any, TypeVar, overload

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404

from inventory.models import Host, VirtualMachine
from portal.client_address import parse_address, parse_networks
from vaults.models import (
    GuardApprover,
    ProtectedVM,
    Role,
    ScopedQuerySet,
    Vault,
    VaultMembership,
    VaultQuerySet,
)

# Whoever a request acts for: a signed-in user or nobody.
AnyUser = User | AnonymousUser | None

RANK: dict[str, int] = {Role.READER: 1, Role.OPERATOR: 2, Role.CONTRIBUTOR: 3, Role.OWNER: 4}

# Action → the least role that may do it.
ACTIONS: dict[str, str] = {
    "view": Role.READER,
    "protect": Role.OPERATOR,
    "backup_now": Role.OPERATOR,
    "restore": Role.OPERATOR,
    "file_recovery": Role.OPERATOR,
    # A restore drill reads an RP into scratch space and changes nothing: as a restore.
    "drill": Role.OPERATOR,
    "cancel_job": Role.OPERATOR,
    # Consistency hooks (script paths, parameters, freeze/thaw and probe commands) and what they
    # printed: readers see that a hook failed, not what it is or said.
    "view_hook_details": Role.OPERATOR,
    # Operators answer failed backups and restores; resolving an alert closes it for everybody.
    "acknowledge_alert": Role.OPERATOR,
    "resolve_alert": Role.CONTRIBUTOR,
    "manage_policies": Role.CONTRIBUTOR,
    "change_item_policy": Role.CONTRIBUTOR,
    "stop_protection": Role.CONTRIBUTOR,
    "resume_protection": Role.CONTRIBUTOR,
    "undelete": Role.CONTRIBUTOR,
    "change_settings": Role.CONTRIBUTOR,
    "assign_roles": Role.OWNER,
    "view_audit": Role.OWNER,
    "delete_vault": Role.OWNER,
}

# Site-wide actions that only site administrators perform.
ADMIN_ACTIONS = {
    "create_vault",
    "manage_inventory",
    "manage_storage_targets",
    "link_hosts",
    "assign_guard",
    "manage_keys",
    "view_recycle_bin",
    "view_site_audit",
    # Who must have a second factor; resetting a user's devices.
    "manage_second_factor",
    # Directories people sign in through and their group → role mappings.
    "manage_directories",
    # The detailed health view names store locations, worker machines and database errors.
    "view_health",
}


def _roles(user: User) -> dict[int, str]:
    """The user's role in each vault, loaded once per user object (one query per request)."""
    cached: dict[int, str] | None = getattr(user, "_lifeboat_roles", None)
    if cached is None:
        cached = dict(VaultMembership.objects.filter(user=user).values_list("vault_id", "role"))
        setattr(user, "_lifeboat_roles", cached)  # noqa: B010 -- a cache the User model lacks
    return cached


def forget(user: User) -> None:
    """Drop the cached roles after a membership change made within the same request."""
    if hasattr(user, "_lifeboat_roles"):
        delattr(user, "_lifeboat_roles")


def _signed_in(user: AnyUser) -> User | None:
    """The user if signed in and active; None for nobody, anonymous or deactivated."""
    if user is None or isinstance(user, AnonymousUser) or not user.is_active:
        return None
    return user


def is_site_admin(user: AnyUser) -> bool:
    signed_in = _signed_in(user)
    return signed_in is not None and signed_in.is_superuser


def role_of(user: AnyUser, vault: Vault) -> str | None:
    signed_in = _signed_in(user)
    if signed_in is None:
        return None
    if signed_in.is_superuser:
        return Role.OWNER
    return _roles(signed_in).get(vault.pk)


def can(user: AnyUser, vault: Vault, action: str) -> bool:
    role = role_of(user, vault)
    return role is not None and RANK[role] >= RANK[ACTIONS[action]]


def can_site(user: AnyUser, action: str) -> bool:
    assert action in ADMIN_ACTIONS, action
    return is_site_admin(user)


def require(user: AnyUser, vault: Vault, action: str) -> None:
    """Raise 404 when the vault is invisible to the user, 403 when the role is too low."""
    if role_of(user, vault) is None:
        raise Http404("No such vault.")
    if not can(user, vault, action):
        raise PermissionDenied(f"Your role in vault {vault.name} does not allow this.")


def require_site(user: AnyUser, action: str) -> None:
    if not can_site(user, action):
        raise PermissionDenied("Only site administrators may do this.")


def can_scrape_metrics(user: AnyUser, bearer: str | None, address: str | None) -> bool:
    """The Prometheus endpoint: a site administrator, a scraper presenting the metrics token
    (`LIFEBOAT_METRICS_TOKEN`), or a client address in the allow-list
    (`LIFEBOAT_METRICS_ALLOW`). Nobody else: the metrics name vaults and machines."""
    if is_site_admin(user):
        return True
    token = str(settings.LIFEBOAT.get("METRICS_TOKEN") or "")
    if token and bearer and hmac.compare_digest(token.encode(), bearer.encode()):
        return True
    allowed = parse_networks(tuple(settings.LIFEBOAT.get("METRICS_ALLOW") or ()))
    found = parse_address(address) if address else None
    return found is not None and any(found in net for net in allowed)


def capabilities(user: AnyUser, vault: Vault) -> dict[str, bool]:
    """Every action → allowed, for templates (which never test roles themselves)."""
    return {action: can(user, vault, action) for action in ACTIONS}


def site_capabilities(user: AnyUser) -> dict[str, bool]:
    return {action: can_site(user, action) for action in ADMIN_ACTIONS}


def get_vault(user: AnyUser, name: str, action: str = "view") -> Vault:
    """The named vault if the user may do `action` in it; 404 if invisible, 403 if not allowed."""
    try:
        vault = Vault.objects.get(name=name)
    except Vault.DoesNotExist:
        raise Http404("No such vault.") from None
    require(user, vault, action)
    return vault


def visible_vault_ids(user: AnyUser) -> list[int] | None:
    """Ids of the vaults the user sees; None means all of them (site admin)."""
    signed_in = _signed_in(user)
    if signed_in is None:
        return []
    if signed_in.is_superuser:
        return None
    return list(_roles(signed_in))


Scoped = TypeVar("Scoped", bound=ScopedQuerySet[Any])


@overload
def visible(rows: VaultQuerySet, user: AnyUser) -> VaultQuerySet: ...
@overload
def visible(rows: Scoped, user: AnyUser) -> Scoped: ...
def visible(
    rows: VaultQuerySet | ScopedQuerySet[Any], user: AnyUser
) -> VaultQuerySet | ScopedQuerySet[Any]:
    """Vaults, or vault-scoped rows, narrowed to those the user may see."""
    return rows.in_vaults(visible_vault_ids(user))


def visible_vms(user: AnyUser) -> QuerySet[VirtualMachine]:
    """VMs of the hosts linked to the user's vaults; all of them for site admins."""
    qs = VirtualMachine.objects.all()
    ids = visible_vault_ids(user)
    if ids is None:
        return qs
    return qs.filter(host__linked_vaults__in=ids).distinct()


def hook_detail_vm_ids(user: AnyUser) -> set[int] | None:
    """VMs whose hook configuration the user may see: those protected (not in the recycle bin)
    in a vault where the user may `view_hook_details`; None means all of them (site admin,
    who manages the hosts). Seeing a VM through a linked host is not enough."""
    if is_site_admin(user):
        return None
    signed_in = _signed_in(user)
    if signed_in is None:
        return set()
    least = RANK[ACTIONS["view_hook_details"]]
    vaults = [pk for pk, role in _roles(signed_in).items() if RANK[role] >= least]
    return set(ProtectedVM.objects.filter(vault__in=vaults).live().values_list("vm_id", flat=True))


def visible_hosts(user: AnyUser) -> QuerySet[Host]:
    qs = Host.objects.all()
    ids = visible_vault_ids(user)
    if ids is None:
        return qs
    return qs.filter(linked_vaults__in=ids).distinct()


def approvable_vault_ids(user: AnyUser) -> list[int]:
    """Vaults whose MUA approval requests this user may decide (guard approvers only)."""
    signed_in = _signed_in(user)
    if signed_in is None:
        return []
    return list(GuardApprover.objects.filter(user=signed_in).values_list("vault_id", flat=True))
