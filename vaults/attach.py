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

A store the key does not open is refused with an error naming the key; nothing is created.
Object-storage locations are not attached yet (directories only).
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
    Vault,
    location_scheme,
)


def _open(location: str) -> engine.Store:
    if location_scheme(location) is not None:
        raise ValidationError({"location": ["Only directories can be attached for now."]})
    try:
        kek = master_key.kek()
    except engine.KeyUnavailable as e:
        raise ValidationError({"key": [f"The master key is unavailable: {e}"]}) from e
    try:
        return engine.open_store(location, kek)
    except engine.StoreNotFound as e:
        raise ValidationError({"location": [f"No vault store at {location}: {e}"]}) from e
    except engine.KeyUnavailable as e:  # WrongKey and KeyMismatch are kinds of it
        raise ValidationError(
            {
                "key": [
                    f"The installed master key (fingerprint "
                    f"{engine.kek_fingerprint(kek)}) does not open the vault store at "
                    f"{location}: put back the master key this store was made with. ({e})"
                ]
            }
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
    *, name: str, location: str, by: User, request: HttpRequest | None = None
) -> Vault:
    """Recreate vault ``name`` from the store at ``location`` (module doc); site admins only."""
    access.require_site(by, "create_vault")
    if Vault.objects.filter(name__iexact=name).exists():
        raise ValidationError({"name": [f"A vault named {name} exists already."]})
    store = _open(location)
    damaged: list[engine.Damage] = []
    points = engine.list_recovery_points(store, damaged=damaged)
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
        vault = Vault.create(name=name, owner=by, store_location=location)
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
            "items": vm_names,
            "recovery_points": len(rows),
        }
        audit.record(
            "vault.attach", actor=by, request=request, vault=vault, obj=vault, after=summary
        )
    return vault
