"""A vault's backup policies: create, change (existing recovery points follow), delete."""

from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest

from policies.models import BackupPolicy
from policies.retention import retention_reductions
from policies.spec import validate_policy
from security import mua
from security.models import Approval
from vaults import access, audit, lifecycle, rules
from vaults.models import Vault
from vaults.services.simulation import expiring_earlier

Representation = dict[str, Any]
NAME_TAKEN = "A policy with this name already exists in this vault."


def _policy_errors(errors: dict[str, Any]) -> ValidationError:
    return ValidationError({k: v if isinstance(v, list) else [v] for k, v in errors.items()})


def create_policy(
    vault: Vault, rep: Representation, *, by: User, request: HttpRequest | None = None
) -> BackupPolicy:
    access.require(by, vault, "manage_policies")
    cleaned, errors = validate_policy(rep)
    if not errors and vault.policies.filter(name=cleaned["name"]).exists():
        errors = {"name": [NAME_TAKEN]}
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


def update_policy(
    policy: BackupPolicy, rep: Representation, *, by: User, request: HttpRequest | None = None
) -> BackupPolicy:
    """Replace a policy's representation (PUT; a PATCH merges first with `merge_patch`)."""
    vault = policy.vault
    access.require(by, vault, "manage_policies")
    cleaned, errors = validate_policy(rep)
    if (
        not errors
        and cleaned["name"] != policy.name
        and vault.policies.filter(name=cleaned["name"]).exists()
    ):
        errors = {"name": [NAME_TAKEN]}
    if errors:
        raise _policy_errors(errors)
    items = policy.protected_items.live()
    cut = retention_reductions(policy.representation(), cleaned, lifecycle.rp_times(items))
    if vault.is_immutable and cut:
        # DESIGN: an immutable vault blocks reducing retention, for everybody — by the rules
        # and for every existing recovery point of the policy's items.
        raise rules.immutability_blocks(
            "a policy's retention cannot be reduced. " + " ".join(cut),
            vault,
            field="retention",
        )
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
        if _without_name(before) != _without_name(cleaned):
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


def preview_policy_update(policy: BackupPolicy, rep: Representation, *, by: User) -> dict[str, Any]:
    """What `update_policy` would do, changing nothing (the page's confirmation and the API's
    dry run): the retention rules it shortens, the recovery points that would expire earlier
    and when (those expiring at once go to the recycle bin; the simulator's list, one rule),
    and whether the vault refuses it
    (immutable) or holds it for approval (MUA). Raises the same field errors."""
    vault = policy.vault
    access.require(by, vault, "manage_policies")
    cleaned, errors = validate_policy(rep)
    if (
        not errors
        and cleaned["name"] != policy.name
        and vault.policies.filter(name=cleaned["name"]).exists()
    ):
        errors = {"name": [NAME_TAKEN]}
    if errors:
        raise _policy_errors(errors)
    items = list(policy.protected_items.live().select_related("vm"))
    reductions = retention_reductions(policy.representation(), cleaned, lifecycle.rp_times(items))
    expiring = expiring_earlier(items, cleaned)
    return {
        "reduces_retention": bool(reductions),
        "reductions": reductions,
        "blocked_by_immutability": bool(reductions) and vault.is_immutable,
        "needs_approval": bool(reductions) and vault.mua_enabled,
        "expiring": expiring,
    }


def _without_name(rep: Representation) -> Representation:
    return {k: v for k, v in rep.items() if k != "name"}


def delete_policy(policy: BackupPolicy, *, by: User, request: HttpRequest | None = None) -> None:
    vault = policy.vault
    access.require(by, vault, "manage_policies")
    if policy.protected_items.exists():
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


def check_policy(
    vault: Vault, rep: Representation, *, by: User, policy: BackupPolicy | None = None
) -> dict[str, list[str]]:
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
            errors = {"name": [NAME_TAKEN]}
    return errors


# -- re-runs of gated operations (MUA runs them once a guard approver approves) ---------------


def _rerun_policy_update(
    approval: Approval, requester: User, request: HttpRequest | None
) -> BackupPolicy:
    p = approval.params
    policy = BackupPolicy.objects.filter(vault=approval.vault, pk=p["policy"]).first()
    if policy is None:
        raise ValidationError({"detail": "The policy no longer exists."})
    return update_policy(policy, p["representation"], by=requester, request=request)


mua.register("policy.update", _rerun_policy_update)
