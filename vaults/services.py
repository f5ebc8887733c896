"""Domain operations on vaults, memberships, policies and protected items.

Pages and the API both call these, so a rule is enforced once. Each function checks the
actor's role through `vaults.access`, validates, changes the rows in one transaction and writes
the audit log. Rule violations raise `ValidationError` keyed by the field at fault.
"""

import os

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest

from inventory.models import VirtualMachine
from policies.models import BackupPolicy, PolicyKind
from policies.spec import validate_policy
from security import keys, mua
from security.models import Approval
from vaults import access, audit, lifecycle, rules
from vaults.models import (
    Encryption,
    GuardApprover,
    Immutability,
    ItemState,
    ProtectedVM,
    Role,
    SoftDeleteState,
    Vault,
    VaultMembership,
)
from vaults.rules import RuleBlocked

VAULT_SETTINGS = (
    "store_location",
    "soft_delete_state",
    "soft_delete_days",
    "immutability",
    "mua_enabled",
    "encryption",
)


def vault_settings(vault: Vault) -> dict:
    return {
        **{f: getattr(vault, f) for f in VAULT_SETTINGS},
        "encryption_key": keys.key_name(vault),
    }


# -- vaults -----------------------------------------------------------------------------------


def create_vault(*, by, request=None, name: str, **fields) -> Vault:
    access.require_site(by, "create_vault")
    unknown = set(fields) - set(VAULT_SETTINGS)
    if unknown:
        raise ValidationError({f: "Unknown field." for f in sorted(unknown)})
    if fields.get("encryption", Encryption.PLATFORM) != Encryption.PLATFORM:
        raise ValidationError(
            {"encryption": "Create the vault first, then choose its key (encryption_key)."}
        )
    if Vault.objects.filter(name__iexact=name).exists():
        raise ValidationError({"name": "A vault with this name already exists."})
    errors = _store_location_errors(Vault(name=name, store_location=fields.get("store_location")))
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        vault = Vault.create(name=name, owner=by, **fields)
        audit.record(
            "vault.create",
            actor=by,
            request=request,
            vault=vault,
            obj=vault,
            after={"name": vault.name, **vault_settings(vault)},
        )
    return vault


def _store_location_errors(vault: Vault) -> dict:
    """A vault's store is an absolute directory that is no other vault's store, and neither
    lies inside one nor holds one: a shared store would mix two vaults' keys and let one
    vault's cleanup count the other's recovery points as its own orphans."""
    if vault.store_location and not os.path.isabs(vault.store_location):
        return {
            "store_location": "Give an absolute directory on the server, or leave it empty "
            "for the default location."
        }
    mine = os.path.realpath(vault.store_path)
    for other in Vault.objects.exclude(pk=vault.pk):
        theirs = os.path.realpath(other.store_path)
        if os.path.commonpath([mine, theirs]) in (mine, theirs):
            return {
                "store_location": f"{mine} would share the store {theirs} of vault "
                f"{other.name}; give each vault a directory of its own."
            }
    return {}


def _check_setting_transitions(vault: Vault, changes: dict) -> dict:
    """Irreversible settings stay put, for everybody (site admins included): those refusals
    raise `RuleBlocked` (409 in the API); the other errors are returned by field."""
    errors = {}
    new_sd = changes.get("soft_delete_state", vault.soft_delete_state)
    if vault.soft_delete_state == SoftDeleteState.ALWAYS_ON and new_sd != SoftDeleteState.ALWAYS_ON:
        raise RuleBlocked(
            "Always-on soft delete cannot be turned off (it is irreversible).",
            rule=rules.RULE_ALWAYS_ON,
            field="soft_delete_state",
        )
    new_imm = changes.get("immutability", vault.immutability)
    if vault.immutability == Immutability.LOCKED and new_imm != Immutability.LOCKED:
        raise RuleBlocked(
            "Locked immutability is irreversible.",
            rule=rules.RULE_IMMUTABILITY_LOCKED,
            field="immutability",
        )
    if new_imm == Immutability.LOCKED and vault.immutability == Immutability.DISABLED:
        raise RuleBlocked(
            "Enable immutability (unlocked) before locking it.",
            rule=rules.RULE_IMMUTABILITY_LOCK_ORDER,
            field="immutability",
        )
    if "store_location" in changes and changes["store_location"] != vault.store_location:
        if vault.protected_items.exists() or vault.recovery_points.exists():
            errors["store_location"] = "The vault store cannot move while the vault holds data."
        else:
            moved = Vault(pk=vault.pk, name=vault.name, store_location=changes["store_location"])
            errors.update(_store_location_errors(moved))
    return errors


def update_vault(vault: Vault, *, by, request=None, **changes) -> Vault:
    """Change vault settings, all or nothing.

    `encryption_key` (a registered customer-managed key's name) chooses the vault's key. With
    MUA on, a critical change waits whole for a guard approver (`security.mua.gate`).
    """
    access.require(by, vault, "change_settings")
    unknown = set(changes) - set(VAULT_SETTINGS) - {"encryption_key"}
    if unknown:
        raise ValidationError({f: "Unknown field." for f in sorted(unknown)})
    if changes.get("store_location", vault.store_location) != vault.store_location:
        # The store location names a directory on the server, like disk paths: site admins only.
        access.require_site(by, "create_vault")
    errors = _check_setting_transitions(vault, changes)
    if errors:
        raise ValidationError(errors)
    new_key = keys.check_vault_encryption(vault, changes)
    mua.check_enable(vault, changes)
    mua.gate(
        vault,
        "vault.update",
        by=by,
        request=request,
        params=changes,
        reasons=mua.vault_update_reasons(vault, changes),
    )
    changes = {k: v for k, v in changes.items() if k != "encryption_key"}
    if new_key is not None:
        changes["encryption"] = Encryption.CUSTOMER_MANAGED
    before = vault_settings(vault)
    for field, value in changes.items():
        setattr(vault, field, value)
    vault.full_clean(exclude=["name"])
    with transaction.atomic():
        vault.save()
        after = vault_settings(vault)
        if new_key is not None:
            after.update(keys.assign_key(vault, new_key, by=by))
        audit.record(
            "vault.update",
            actor=by,
            request=request,
            vault=vault,
            obj=vault,
            before=before,
            after=after,
        )
    return vault


def delete_vault(vault: Vault, *, by, request=None) -> None:
    access.require(by, vault, "delete_vault")
    holdings = vault.holdings()
    if any(holdings.values()):
        raise ValidationError(
            {
                "detail": (
                    f"Vault {vault.name} still holds {holdings['protected_items']} protected "
                    f"item(s) and {holdings['recovery_points']} recovery point(s). Stop "
                    "protection with delete data for every item and wait for the recycle bin "
                    "to be purged first."
                )
            }
        )
    with transaction.atomic():
        audit.record(
            "vault.delete",
            actor=by,
            request=request,
            vault=None,
            obj=vault,
            before={"name": vault.name, **vault_settings(vault)},
        )
        vault.delete()


def link_host(vault: Vault, host, *, by, request=None, linked: bool = True) -> None:
    access.require_site(by, "link_hosts")
    with transaction.atomic():
        if linked:
            vault.linked_hosts.add(host)
        else:
            vault.linked_hosts.remove(host)
        audit.record(
            "vault.link_host" if linked else "vault.unlink_host",
            actor=by,
            request=request,
            vault=vault,
            obj=host,
        )


# -- roles --------------------------------------------------------------------------------------


def add_member(vault: Vault, *, by, request=None, user, role: str) -> VaultMembership:
    access.require(by, vault, "assign_roles")
    if role not in Role.values:
        raise ValidationError({"role": f"Choose one of: {', '.join(Role.values)}."})
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


def remove_member(membership: VaultMembership, *, by, request=None) -> None:
    vault = membership.vault
    access.require(by, vault, "assign_roles")
    if (
        membership.role == Role.OWNER
        and not vault.memberships.filter(role=Role.OWNER).exclude(pk=membership.pk).exists()
    ):
        raise ValidationError({"detail": "A vault keeps at least one owner."})
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


# -- policies -----------------------------------------------------------------------------------


def _policy_errors(errors: dict) -> ValidationError:
    return ValidationError({k: v if isinstance(v, list) else [v] for k, v in errors.items()})


def create_policy(vault: Vault, rep: dict, *, by, request=None) -> BackupPolicy:
    access.require(by, vault, "manage_policies")
    cleaned, errors = validate_policy(rep)
    if not errors and vault.policies.filter(name=cleaned["name"]).exists():
        errors = {"name": ["A policy with this name already exists in this vault."]}
    if errors:
        raise _policy_errors(errors)
    policy = BackupPolicy(vault=vault)
    policy.apply_representation(cleaned)
    with transaction.atomic():
        policy.save()
        audit.record(
            "policy.create", actor=by, request=request, vault=vault, obj=policy, after=cleaned
        )
    return policy


def update_policy(policy: BackupPolicy, rep: dict, *, by, request=None) -> BackupPolicy:
    """Replace a policy's representation (PUT; a PATCH merges first with `merge_patch`)."""
    vault = policy.vault
    access.require(by, vault, "manage_policies")
    cleaned, errors = validate_policy(rep)
    if (
        not errors
        and cleaned["name"] != policy.name
        and vault.policies.filter(name=cleaned["name"]).exists()
    ):
        errors = {"name": ["A policy with this name already exists in this vault."]}
    if errors:
        raise _policy_errors(errors)
    items = policy.protected_items.exclude(state=ItemState.SOFT_DELETED)
    if vault.is_immutable:
        # DESIGN: an immutable vault blocks reducing retention, for everybody — by the rules
        # and for every existing recovery point of the policy's items.
        from policies.retention import retention_reductions

        reasons = retention_reductions(policy.representation(), cleaned, lifecycle.rp_times(items))
        if reasons:
            raise rules.immutability_blocks(
                "a policy's retention cannot be reduced. " + " ".join(reasons),
                vault,
                field="retention",
            )
    from policies.retention import retention_reductions

    cut = retention_reductions(policy.representation(), cleaned, lifecycle.rp_times(items))
    mua.gate(
        vault,
        "policy.update",
        by=by,
        request=request,
        params={"policy": policy.pk, "representation": rep},
        reasons=[f"reduce the retention of policy {policy.name}"] if cut else [],
    )
    before = policy.representation()
    policy.apply_representation(cleaned)
    recomputed = {}
    with transaction.atomic():
        policy.save()
        if {k: v for k, v in before.items() if k != "name"} != {
            k: v for k, v in cleaned.items() if k != "name"
        }:
            # Existing recovery points follow the new retention (cuts go to the recycle bin).
            for item in items.select_related("vault", "policy"):
                recomputed[item.vm_id] = lifecycle.recompute_retention(item, by=by)
        audit.record(
            "policy.update",
            actor=by,
            request=request,
            vault=vault,
            obj=policy,
            before=before,
            after={**cleaned, "recomputed_items": len(recomputed)} if recomputed else cleaned,
        )
    return policy


def delete_policy(policy: BackupPolicy, *, by, request=None) -> None:
    vault = policy.vault
    access.require(by, vault, "manage_policies")
    in_use = policy.protected_items.exclude(state=ItemState.SOFT_DELETED).count()
    if in_use or policy.protected_items.exists():
        raise ValidationError(
            {
                "detail": f"Policy {policy.name} is used by {policy.protected_items.count()} "
                "protected item(s); move them to another policy first."
            }
        )
    with transaction.atomic():
        audit.record(
            "policy.delete",
            actor=by,
            request=request,
            vault=vault,
            obj=policy,
            before=policy.representation(),
        )
        policy.delete()


# -- protection ---------------------------------------------------------------------------------


def _clean_lun_selection(vm: VirtualMachine, policy: BackupPolicy, included, excluded) -> dict:
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


def protect_vm(
    vault: Vault,
    *,
    by,
    request=None,
    vm: VirtualMachine,
    policy: BackupPolicy,
    included_luns=None,
    excluded_luns=None,
) -> ProtectedVM:
    """Enable protection: the VM must run on a host linked to the vault and be unprotected."""
    access.require(by, vault, "protect")
    errors: dict[str, str] = {}
    if policy.vault_id != vault.pk:
        errors["policy"] = "The policy belongs to another vault."
    if not vault.linked_hosts.filter(pk=vm.host_id).exists():
        errors["vm"] = f"{vm.name} runs on host {vm.host.name}, which is not linked to this vault."
    else:
        current = ProtectedVM.objects.filter(vm=vm).exclude(state=ItemState.SOFT_DELETED).first()
        if current is not None:
            errors["vm"] = f"{vm.name} is already protected in vault {current.vault.name}."
        elif ProtectedVM.objects.filter(vault=vault, vm=vm, state=ItemState.SOFT_DELETED).exists():
            errors["vm"] = (
                f"{vm.name} has soft-deleted backups in this vault; undelete them and resume "
                "protection instead, or protect it in another vault."
            )
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
                after=item_summary(item),
            )
    except IntegrityError:
        raise ValidationError({"vm": f"{vm.name} is already protected."}) from None
    return item


def item_summary(item: ProtectedVM) -> dict:
    return {
        "vm": item.vm.name,
        "policy": item.policy.name,
        "state": item.state,
        "included_luns": item.included_luns,
        "excluded_luns": item.excluded_luns,
    }


def update_item(item: ProtectedVM, *, by, request=None, **changes) -> ProtectedVM:
    """Change an item's policy or disk selection (contributor and above)."""
    vault = item.vault
    access.require(by, vault, "change_item_policy")
    unknown = set(changes) - {"policy", "included_luns", "excluded_luns"}
    if unknown:
        raise ValidationError({f: "This field cannot be changed here." for f in sorted(unknown)})
    if item.state == ItemState.SOFT_DELETED:
        raise RuleBlocked(
            "The item is soft-deleted; undelete it first.", rule=rules.RULE_ITEM_STATE
        )
    policy = changes.get("policy", item.policy)
    if policy.vault_id != vault.pk:
        raise ValidationError({"policy": "The policy belongs to another vault."})
    included = changes.get("included_luns", item.included_luns)
    excluded = changes.get("excluded_luns", item.excluded_luns)
    if "included_luns" in changes and "excluded_luns" not in changes:
        excluded = None
    if "excluded_luns" in changes and "included_luns" not in changes:
        included = None
    selection_named = "included_luns" in changes or "excluded_luns" in changes
    if policy.kind != PolicyKind.ENHANCED and not selection_named:
        # A standard policy backs up every disk: moving to one drops the old selection.
        included = excluded = None
    errors = _clean_lun_selection(item.vm, policy, included, excluded)
    if errors:
        raise ValidationError(errors)
    moved = policy.pk != item.policy_id
    if moved and vault.is_immutable:
        from policies.retention import retention_reductions

        reasons = retention_reductions(
            item.policy.representation(), policy.representation(), lifecycle.rp_times([item])
        )
        if reasons:
            raise rules.immutability_blocks(
                f"an item cannot move to a policy with lower retention ({policy.name}: "
                + " ".join(reasons)
                + ")",
                vault,
                field="policy",
            )
    if moved:
        from policies.retention import reduces_retention

        mua.gate(
            vault,
            "protection.update",
            by=by,
            request=request,
            params=mua.item_update_params(item, changes),
            reasons=[f"move {item.vm.name} to a policy with lower retention ({policy.name})"]
            if reduces_retention(
                item.policy.representation(), policy.representation(), lifecycle.rp_times([item])
            )
            else [],
        )
    before = item_summary(item)
    item.policy, item.included_luns, item.excluded_luns = policy, included, excluded
    with transaction.atomic():
        item.save()
        after = item_summary(item)
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


def check_policy(vault: Vault, rep: dict, *, by, policy: BackupPolicy | None = None) -> dict:
    """The errors `create_policy`/`update_policy` would raise for `rep`, without saving.

    Serves inline form validation; `policy` is the one being edited, if any.
    """
    access.require(by, vault, "manage_policies")
    cleaned, errors = validate_policy(rep)
    if not errors:
        others = vault.policies.filter(name=cleaned["name"])
        if policy is not None:
            others = others.exclude(pk=policy.pk)
        if others.exists():
            errors = {"name": ["A policy with this name already exists in this vault."]}
    return errors


# -- linked hosts, role changes, guard approvers (API) --------------------------------------------


def set_linked_hosts(vault: Vault, hosts, *, by, request=None) -> None:
    """Link exactly `hosts` to the vault (site admins only).

    A host stays linked while VMs on it are protected in this vault: unlinking it would leave
    items that members can no longer see the VM of, and restores with no target.
    """
    access.require_site(by, "link_hosts")
    wanted = {h.pk: h for h in hosts}
    current = {h.pk: h for h in vault.linked_hosts.all()}
    dropped = [h for pk, h in current.items() if pk not in wanted]
    busy = sorted(
        {
            name
            for name in ProtectedVM.objects.filter(vault=vault, vm__host__in=dropped)
            .exclude(state=ItemState.SOFT_DELETED)
            .values_list("vm__host__name", flat=True)
        }
    )
    if busy:
        raise ValidationError(
            {
                "linked_hosts": f"Host(s) {', '.join(busy)} run VMs protected in this vault; "
                "stop their protection before unlinking."
            }
        )
    with transaction.atomic():
        for host in dropped:
            link_host(vault, host, by=by, request=request, linked=False)
        for pk, host in wanted.items():
            if pk not in current:
                link_host(vault, host, by=by, request=request, linked=True)


def change_member_role(
    membership: VaultMembership, *, by, request=None, role: str
) -> VaultMembership:
    vault = membership.vault
    access.require(by, vault, "assign_roles")
    if role not in Role.values:
        raise ValidationError({"role": f"Choose one of: {', '.join(Role.values)}."})
    if (
        membership.role == Role.OWNER
        and role != Role.OWNER
        and not vault.memberships.filter(role=Role.OWNER).exclude(pk=membership.pk).exists()
    ):
        raise ValidationError({"role": "A vault keeps at least one owner."})
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


def add_guard_approver(vault: Vault, *, by, request=None, user) -> GuardApprover:
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


def remove_guard_approver(ga: GuardApprover, *, by, request=None) -> None:
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


# -- re-runs of gated operations (MUA runs them once a guard approver approves) -------------------


def _rerun_vault_update(approval: Approval, requester: User, request: HttpRequest | None) -> Vault:
    return update_vault(approval.vault, by=requester, request=request, **approval.params)


mua.register("vault.update", _rerun_vault_update)


def _rerun_policy_update(
    approval: Approval, requester: User, request: HttpRequest | None
) -> BackupPolicy:
    p = approval.params
    policy = BackupPolicy.objects.filter(vault=approval.vault, pk=p["policy"]).first()
    if policy is None:
        raise ValidationError({"detail": "The policy no longer exists."})
    return update_policy(policy, p["representation"], by=requester, request=request)


mua.register("policy.update", _rerun_policy_update)


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
