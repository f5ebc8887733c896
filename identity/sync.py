"""Group → role mapping applied to a directory user: at every sign-in, at each re-check, and to
every directory user when a mapping changes (with the groups of their last check).

The directory is the truth for what a mapping grants:
- the user gets, in every vault whose name matches a mapping of one of their groups, the
  highest role those mappings give; the membership is marked `mapped_from` ("dir:group");
- a mapped membership whose group or mapping is gone is removed, even the vault's last owner
  (the directory said so; a site admin can name a new owner);
- a local membership in a vault a mapping covers stays as it is when its role is at least the
  mapped one; a lower one is taken over by the mapping (and goes with it);
- site administrator follows the mappings with `site_admin` (directory users only).
Every change is one `directory.sync` audit record listing what was added, changed, removed.
"""

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest

from identity.models import DirectoryAccount, GroupMapping
from vaults import access, audit
from vaults.models import Vault, VaultMembership


@dataclass
class Grants:
    # vault id → (role, "directory:group" that gives it)
    roles: dict[int, tuple[str, str]] = field(default_factory=dict)
    site_admin: bool = False


def grants_for(account: DirectoryAccount, vaults: list[Vault] | None = None) -> Grants:
    groups = set(account.groups)
    mappings = [
        m for m in GroupMapping.objects.filter(directory=account.directory_id) if m.group in groups
    ]
    vaults = vaults if vaults is not None else list(Vault.objects.only("pk", "name"))
    grants = Grants(site_admin=any(m.site_admin for m in mappings))
    for m in mappings:
        if not m.role or not m.vault_pattern:
            continue
        for vault in vaults:
            if not fnmatchcase(vault.name, m.vault_pattern):
                continue
            held = grants.roles.get(vault.pk)
            if held is None or access.RANK[m.role] > access.RANK[held[0]]:
                grants.roles[vault.pk] = (m.role, f"{account.directory.name}:{m.group}")
    return grants


def sync_user(
    account: DirectoryAccount,
    *,
    request: HttpRequest | None = None,
    by: User | None = None,
    reason: str = "sign-in",
    vaults: list[Vault] | None = None,
) -> dict[str, Any]:
    """Make the user's mapped memberships and site-admin flag what the mappings grant now.
    Returns the changes (also audited when there are any)."""
    user: User = account.user
    grants = grants_for(account, vaults)
    added: list[dict[str, str]] = []
    changed: list[dict[str, str]] = []
    removed: list[dict[str, str]] = []
    with transaction.atomic():
        held = {
            m.vault_id: m
            for m in VaultMembership.objects.select_for_update()
            .filter(user=user)
            .select_related("vault")
        }
        for vault_id, (role, source) in grants.roles.items():
            m = held.get(vault_id)
            if m is None:
                m = VaultMembership.objects.create(
                    vault_id=vault_id, user=user, role=role, mapped_from=source
                )
                added.append({"vault": m.vault.name, "role": role, "group": source})
            elif not m.mapped_from and access.RANK[m.role] >= access.RANK[role]:
                continue  # a local role as high as the mapped one: the local one holds
            elif (m.role, m.mapped_from) != (role, source):
                changed.append(
                    {"vault": m.vault.name, "role": role, "was": m.role, "group": source}
                )
                m.role, m.mapped_from = role, source
                m.save(update_fields=["role", "mapped_from"])
        for vault_id, m in held.items():
            if m.mapped_from and vault_id not in grants.roles:
                removed.append({"vault": m.vault.name, "role": m.role, "group": m.mapped_from})
                m.delete()
        admin_before = user.is_superuser
        if admin_before != grants.site_admin:
            user.is_superuser = grants.site_admin
            user.save(update_fields=["is_superuser"])
        changes: dict[str, Any] = {}
        if added:
            changes["added"] = added
        if changed:
            changes["changed"] = changed
        if removed:
            changes["removed"] = removed
        if admin_before != grants.site_admin:
            changes["site_admin"] = grants.site_admin
        if changes:
            audit.record(
                "directory.sync",
                actor=by or user,
                request=request,
                obj=account,
                after={
                    "directory": account.directory.name,
                    "groups": sorted(account.groups),
                    "reason": reason,
                    **changes,
                },
            )
    access.forget(user)
    return changes


def sync_everyone(*, by: User | None, request: HttpRequest | None = None, reason: str) -> int:
    """Apply the mappings to every enabled directory user, with the groups of their last check
    (a mapping change takes effect at once, not at each user's next sign-in)."""
    vaults = list(Vault.objects.only("pk", "name"))
    n = 0
    accounts = DirectoryAccount.objects.filter(disabled=False).select_related("user", "directory")
    for account in accounts:
        if sync_user(account, request=request, by=by, reason=reason, vaults=vaults):
            n += 1
    return n
