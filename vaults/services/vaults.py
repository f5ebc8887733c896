"""A vault's settings, and creating and deleting vaults."""

import os
from collections.abc import Mapping
from typing import Any, TypedDict, Unpack

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest

from security import keys, mua
from security.models import Approval
from vaults import access, audit, rules
from vaults.models import (
    OBJECT_SCHEMES,
    Encryption,
    Immutability,
    Replication,
    SoftDeleteState,
    StorageTarget,
    Vault,
    location_errors,
    location_scheme,
)
from vaults.rules import RuleBlocked


class VaultSettings(TypedDict, total=False):
    """A vault's settings, as pages and the API name them."""

    store_location: str
    storage_target: StorageTarget | None
    secondary_location: str
    secondary_target: StorageTarget | None
    soft_delete_state: str
    soft_delete_days: int
    immutability: str
    mua_enabled: bool
    encryption: str
    drill_every_days: int


class VaultChanges(VaultSettings, total=False):
    """What `update_vault` may change: the settings, and `encryption_key`, the name of a
    registered customer-managed key that becomes the vault's key."""

    encryption_key: str


VAULT_SETTINGS = tuple(VaultSettings.__annotations__)
# Where the vault's data lives: a directory or a bucket on the server's side, site admins only.
PLACE_SETTINGS = ("store_location", "storage_target", "secondary_location", "secondary_target")


def vault_settings(vault: Vault) -> dict[str, Any]:
    """The settings as the audit log records them (targets by name)."""
    values = {f: getattr(vault, f) for f in VAULT_SETTINGS}
    for field in ("storage_target", "secondary_target"):
        values[field] = values[field].name if values[field] is not None else None
    return {**values, "encryption_key": keys.key_name(vault)}


def _unknown_fields(given: Mapping[str, object], known: set[str]) -> None:
    unknown = set(given) - known
    if unknown:
        raise ValidationError({f: "Unknown field." for f in sorted(unknown)})


def create_vault(
    *,
    by: User,
    request: HttpRequest | None = None,
    name: str,
    **fields: Unpack[VaultSettings],
) -> Vault:
    access.require_site(by, "create_vault")
    _unknown_fields(fields, set(VAULT_SETTINGS))
    if fields.get("encryption", Encryption.PLATFORM) != Encryption.PLATFORM:
        raise ValidationError(
            {"encryption": "Create the vault first, then choose its key (encryption_key)."}
        )
    if Vault.objects.filter(name__iexact=name).exists():
        raise ValidationError({"name": "A vault with this name already exists."})
    errors = store_location_errors(
        Vault(
            name=name,
            store_location=fields.get("store_location", ""),
            storage_target=fields.get("storage_target"),
            secondary_location=fields.get("secondary_location", ""),
            secondary_target=fields.get("secondary_target"),
        )
    )
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


def _place_key(location: str) -> str:
    """A location compared with others: a local directory resolved, an object location as
    `scheme://bucket/prefix/`, so that one nested in another shows as a prefix."""
    if location_scheme(location) is None:
        return os.path.realpath(location).rstrip("/") + "/"
    return location.rstrip("/") + "/"


def _target_errors(
    location: str, target: StorageTarget | None, location_field: str, target_field: str
) -> dict[str, str]:
    """An object location needs a storage target of its kind; a directory needs none."""
    scheme = location_scheme(location)
    if scheme is None:
        if target is not None:
            return {target_field: "Only s3:// and az:// locations use a storage target."}
        return {}
    if target is None:
        return {target_field: f"Choose the storage target that holds {location}."}
    if OBJECT_SCHEMES[scheme] != target.kind:
        return {
            target_field: f"Storage target {target.name} is {target.get_kind_display()}; "
            f"{scheme}:// locations need a {OBJECT_SCHEMES[scheme]} target."
        }
    return {}


def store_location_errors(vault: Vault) -> dict[str, str]:
    """A vault's store is an absolute directory or an object-storage location (with its
    target) that is no other vault's store, and neither lies inside one nor holds one: a shared
    store would mix two vaults' keys and let one vault's cleanup count the other's recovery
    points as its own orphans. The secondary location follows the same rules and is not the
    primary."""
    errors: dict[str, str] = {}
    for location_field, target_field in (
        ("store_location", "storage_target"),
        ("secondary_location", "secondary_target"),
    ):
        location = getattr(vault, location_field)
        target = getattr(vault, target_field)
        if not location:
            if target is not None:
                errors[target_field] = "Give an s3:// or az:// location for this target."
            continue
        why = location_errors(location)
        if why:
            errors[location_field] = (
                why
                if "://" in location
                else "Give an absolute directory on the server, "
                "s3://bucket/prefix or az://container/prefix, or leave it empty"
                + (" for the default location." if location_field == "store_location" else ".")
            )
            continue
        errors.update(_target_errors(location, target, location_field, target_field))
    if errors:
        return errors
    mine = {"store_location": _place_key(vault.vault_location)}
    if vault.secondary_location:
        mine["secondary_location"] = _place_key(vault.secondary_location)
        if _overlap(mine["store_location"], mine["secondary_location"]):
            return {
                "secondary_location": "The secondary copy must live apart from the vault store."
            }
    for other in Vault.objects.exclude(pk=vault.pk):
        theirs = [other.vault_location, other.secondary_location]
        for field, here in mine.items():
            for there in filter(None, theirs):
                if _overlap(here, _place_key(there)):
                    return {
                        field: f"{here.rstrip('/')} would share the store {there} of vault "
                        f"{other.name}; give each vault a place of its own."
                    }
    return {}


def _overlap(a: str, b: str) -> bool:
    return a.startswith(b) or b.startswith(a)


def _check_setting_transitions(vault: Vault, changes: VaultChanges) -> dict[str, str]:
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
    moved = {f: changes[f] for f in PLACE_SETTINGS if f in changes}  # type: ignore[literal-required]
    moved = {f: v for f, v in moved.items() if v != getattr(vault, f)}
    if moved:
        primary = {"store_location", "storage_target"} & set(moved)
        if primary and (vault.protected_items.exists() or vault.recovery_points.exists()):
            errors["store_location"] = "The vault store cannot move while the vault holds data."
        secondary = {"secondary_location", "secondary_target"} & set(moved)
        holds_copies = vault.recovery_points.exclude(replication=Replication.NONE).exists()
        if secondary and vault.secondary_location and holds_copies:
            errors["secondary_location"] = (
                "The secondary copy cannot move while it holds recovery points."
            )
        if not errors:
            place = Vault(
                pk=vault.pk,
                name=vault.name,
                **{f: changes.get(f, getattr(vault, f)) for f in PLACE_SETTINGS},  # type: ignore[misc]
            )
            errors.update(store_location_errors(place))
    return errors


def update_vault(
    vault: Vault,
    *,
    by: User,
    request: HttpRequest | None = None,
    **changes: Unpack[VaultChanges],
) -> Vault:
    """Change vault settings, all or nothing.

    `encryption_key` (a registered customer-managed key's name) chooses the vault's key. With
    MUA on, a critical change waits whole for a guard approver (`security.mua.gate`).
    """
    access.require(by, vault, "change_settings")
    _unknown_fields(changes, set(VaultChanges.__annotations__))
    if any(f in changes and changes[f] != getattr(vault, f) for f in PLACE_SETTINGS):  # type: ignore[literal-required]
        # Store locations name directories and buckets of the server, like disk paths: site
        # admins only.
        access.require_site(by, "create_vault")
    errors = _check_setting_transitions(vault, changes)
    if errors:
        raise ValidationError(errors)
    new_key = keys.check_vault_encryption(vault, dict(changes))
    mua.check_enable(vault, dict(changes))
    mua.gate(
        vault,
        "vault.update",
        by=by,
        request=request,
        params=_by_name(dict(changes)),
        reasons=mua.vault_update_reasons(vault, dict(changes)),
    )
    settings: dict[str, Any] = {k: v for k, v in changes.items() if k != "encryption_key"}
    if new_key is not None:
        settings["encryption"] = Encryption.CUSTOMER_MANAGED
    before = vault_settings(vault)
    for field, value in settings.items():
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


def delete_vault(vault: Vault, *, by: User, request: HttpRequest | None = None) -> None:
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


# -- re-runs of gated operations (MUA runs them once a guard approver approves) ---------------


_TARGET_FIELDS = ("storage_target", "secondary_target")


def _by_name(changes: dict[str, Any]) -> dict[str, Any]:
    """Changes as an approval stores them (JSON): storage targets by name."""
    return {
        k: (v.name if isinstance(v, StorageTarget) else v) if k in _TARGET_FIELDS else v
        for k, v in changes.items()
    }


def _rerun_vault_update(approval: Approval, requester: User, request: HttpRequest | None) -> Vault:
    params = dict(approval.params)
    for field in _TARGET_FIELDS:
        if params.get(field) is not None:
            params[field] = StorageTarget.objects.filter(name=params[field]).first()
    return update_vault(approval.vault, by=requester, request=request, **params)


mua.register("vault.update", _rerun_vault_update)
