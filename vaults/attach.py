"""A catalog rebuilt from the store: attach an existing vault store to this installation.

The store is the source of truth (DESIGN §4): after losing the Lifeboat server, a fresh
install with the platform master key put back (`manage.py master_key export` made the copy)
attaches each vault store. Its manifests, authenticated with the vault's key, give back every
recovery point with its id, VM, time, consistency, disks, tags, parent, and the expiry and slot
retention gave it at backup time (`jobs.backup` writes them as manifest labels). The vault is
recreated with its DefaultPolicy; each VM's item comes back as "protection stopped, retain
data" (kept forever until somebody re-protects it or decides otherwise), its points in the
vault tier, their hosts linked to the vault. The VMs must be registered in the inventory first (hosts and disks name files on
the server: a site admin's act); the attach names the ones missing.

The store is a directory, or an `s3://bucket/prefix` / `az://container/prefix` location with
the registered storage target that reaches it (endpoint and credentials, read at use as for any
vault on object storage); the vault keeps that target. A location is checked as a new vault's is
(`vaults.services.vaults.store_location_errors`): a target of its kind, and no other vault's
store in it or around it. A store the key does not open is refused with an error naming the key,
a store that cannot be reached with the reason; either way nothing is created.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest

import engine
from engine.store import parse_iso
from inventory.models import VirtualMachine
from security import master_key
from vaults import access, audit
from vaults.models import (
    ItemState,
    ProtectedVM,
    RecoveryPoint,
    RetentionMode,
    StorageTarget,
    Vault,
)
from vaults.services.vaults import store_location_errors
from vaults.stores import TargetUnusable, object_target

# The form's and the command's field names for a vault's place.
_FIELDS = {"store_location": "location", "storage_target": "storage_target"}


def _check_place(name: str, location: str, target: StorageTarget | None) -> None:
    """The location and its target as a new vault's (module doc), errors by this form's fields."""
    errors = store_location_errors(Vault(name=name, store_location=location, storage_target=target))
    if errors:
        raise ValidationError({_FIELDS.get(f, f): [m] for f, m in errors.items()})


def _open(location: str, target: StorageTarget | None) -> engine.Store:
    try:
        kek = master_key.kek()
    except engine.KeyUnavailable as e:
        raise ValidationError({"key": [f"The master key is unavailable: {e}"]}) from e
    try:
        engine_target = object_target(target) if target is not None else None
    except TargetUnusable as e:
        raise ValidationError({"storage_target": [str(e)]}) from e
    try:
        return engine.open_store(location, kek, target=engine_target)
    except engine.StoreNotFound as e:
        raise ValidationError({"location": [f"No vault store at {location}: {e}"]}) from e
    except engine.KeyUnavailable as e:  # WrongKey is a kind of it
        raise ValidationError(
            {
                "key": [
                    f"The installed master key (fingerprint "
                    f"{engine.kek_fingerprint(kek)}) does not open the vault store at "
                    f"{location}: put back the master key this store was made with. ({e})"
                ]
            }
        ) from e
    except engine.EngineError as e:  # the bucket or container cannot be reached, or refuses us
        raise ValidationError(
            {"location": [f"The vault store at {location} cannot be read: {e}"]}
        ) from e


def _time(labels: dict[str, str], key: str) -> datetime | None:
    return parse_iso(labels.get(key) or None)


def _row(vault: Vault, item: ProtectedVM, rp: engine.RecoveryPoint) -> RecoveryPoint:
    expires = _time(rp.labels, "expires_at") or rp.retain_until
    return RecoveryPoint(
        id=rp.rp_id,
        vault=vault,
        protected_item=item,
        time=rp.created,
        slot=_time(rp.labels, "slot"),
        consistency=rp.consistency or "crash",
        in_snapshot_tier=False,
        in_vault_tier=True,
        tags=list(rp.tags),
        expires_at=expires,
        retain_until=rp.retain_until if "on_demand" in rp.tags else None,
        disks=[
            {
                "lun": d.lun,
                "size": d.size,
                "bytes_read": d.bytes_read,
                "bytes_changed": d.bytes_changed,
                "bytes_stored": d.bytes_stored,
                "change_detection": d.change_detection,
            }
            for d in rp.disks
        ],
        size_bytes=rp.size,
    )


def attach_vault(
    *,
    name: str,
    location: str,
    storage_target: StorageTarget | None = None,
    by: User,
    request: HttpRequest | None = None,
) -> Vault:
    """Recreate vault ``name`` from the store at ``location``, reached through
    ``storage_target`` when it is object storage (module doc); site admins only."""
    access.require_site(by, "create_vault")
    if Vault.objects.filter(name__iexact=name).exists():
        raise ValidationError({"name": [f"A vault named {name} exists already."]})
    _check_place(name, location, storage_target)
    store = _open(location, storage_target)
    damaged: list[engine.Damage] = []
    try:
        points = engine.list_recovery_points(store, damaged=damaged)
    except engine.EngineError as e:
        raise ValidationError(
            {"location": [f"The vault store at {location} cannot be read: {e}"]}
        ) from e
    if damaged:
        names = ", ".join(sorted({d.rp_id or "?" for d in damaged}))
        raise ValidationError({"location": [f"Manifests fail authentication: {names}."]})
    vm_names = sorted({rp.vm_name for rp in points})
    vms = {vm.name: vm for vm in VirtualMachine.objects.filter(name__in=vm_names)}
    missing = [n for n in vm_names if n not in vms]
    if missing:
        raise ValidationError(
            {"location": [f"Register these VMs in the inventory first: {', '.join(missing)}."]}
        )
    busy = ProtectedVM.objects.live().filter(vm__name__in=vm_names).select_related("vm")
    if busy:
        taken = ", ".join(sorted(i.vm.name for i in busy))
        raise ValidationError({"location": [f"Already protected in another vault: {taken}."]})
    with transaction.atomic():
        vault = Vault.create(
            name=name, owner=by, store_location=location, storage_target=storage_target
        )
        policy = vault.policies.get()
        # The VMs' hosts are linked, so members see the items and can restore to them.
        vault.linked_hosts.add(*{vm.host_id for vm in vms.values()})
        items: dict[str, ProtectedVM] = {}
        for vm_name in vm_names:
            items[vm_name] = ProtectedVM.objects.create(
                vault=vault,
                vm=vms[vm_name],
                policy=policy,
                state=ItemState.PROTECTION_STOPPED,
                retention_mode=RetentionMode.RETAIN_FOREVER,
            )
        rows = [_row(vault, items[rp.vm_name], rp) for rp in points]
        RecoveryPoint.objects.bulk_create(rows)
        known = {str(r.pk) for r in rows}
        for rp, row in zip(points, rows, strict=True):
            if rp.parent in known:
                RecoveryPoint.objects.filter(pk=row.pk).update(parent_id=rp.parent)
        summary: dict[str, Any] = {
            "location": location,
            "storage_target": storage_target.name if storage_target is not None else None,
            "items": vm_names,
            "recovery_points": len(rows),
        }
        audit.record(
            "vault.attach", actor=by, request=request, vault=vault, obj=vault, after=summary
        )
    return vault
