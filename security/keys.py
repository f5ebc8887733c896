"""Customer-managed keys (CMK): registered by reference, chosen per vault, rotated by jobs.

The key lives in a file on the server; the database keeps its path and a fingerprint (a hash
that reveals nothing of the key) so a file that now holds another key is caught, never used.

- Site admins register keys (`register_key`), disable/enable them (`set_key_enabled`) and
  rotate them (`rotate_key`: one update_key job per vault using the key).
- A vault contributor switches a vault that never protected anything from the platform key to
  a CMK (`vaults.services.vaults.update_vault` with `encryption_key`); irreversible. Existing stores
  of such a vault (created empty) are re-wrapped at once. A CMK vault may move to another
  registered key: a gated (MUA) change that runs as an update_key job.
- Reading a vault's key (`security.kek.customer_kek`) is below this module: opening stores
  needs it, key management does not come with it.
"""

import os
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

import engine
from jobs import runner
from jobs.models import Job, Operation
from security import master_key
from security.kek import customer_kek, fingerprint, read_key_file
from security.models import CustomerKey, VaultKey
from vaults import access, audit, rules, stores
from vaults.models import AuditEvent, Encryption, Vault


def key_problem(key: CustomerKey) -> str:
    """Why the key cannot be used right now ("" when it can)."""
    if not key.enabled:
        return f"customer-managed key {key.name} is disabled"
    try:
        kek = read_key_file(key.path, key.name)
    except engine.KeyUnavailable as e:
        return str(e)
    if fingerprint(kek) != key.fingerprint:
        return f"customer-managed key {key.name}: the file {key.path} holds a different key"
    return ""


def _valid_key_file(path: object) -> bytes:
    if not isinstance(path, str) or not os.path.isabs(path):
        raise ValidationError({"path": "Give the absolute path of the key file on the server."})
    try:
        return engine.load_key_file(path)
    except engine.KeyUnavailable as e:
        raise ValidationError({"path": str(e)}) from None


def _summary(key: CustomerKey) -> dict[str, object]:
    return {
        "name": key.name,
        "path": key.path,
        "fingerprint": key.fingerprint,
        "enabled": key.enabled,
        "version": key.version,
    }


# -- site administration --------------------------------------------------------------------------


def register_key(
    *, by: User, request: HttpRequest | None = None, name: str, path: str
) -> CustomerKey:
    access.require_site(by, "manage_keys")
    kek = _valid_key_file(path)
    if CustomerKey.objects.filter(name__iexact=name).exists():
        raise ValidationError({"name": f"A key named {name} already exists."})
    key = CustomerKey(name=name, path=path, fingerprint=fingerprint(kek), created_by=by)
    key.full_clean()
    with transaction.atomic():
        key.save()
        audit.record("key.create", actor=by, request=request, obj=key, after=_summary(key))
    return key


def set_key_enabled(
    key: CustomerKey, enabled: bool, *, by: User, request: HttpRequest | None = None
) -> CustomerKey:
    """Disable (backups and restores of its vaults fail) or re-enable a key."""
    access.require_site(by, "manage_keys")
    if key.enabled == enabled:
        return key
    before = _summary(key)
    with transaction.atomic():
        key.enabled = enabled
        key.save(update_fields=["enabled"])
        audit.record(
            "key.enable" if enabled else "key.disable",
            actor=by,
            request=request,
            obj=key,
            before=before,
            after=_summary(key),
        )
        for vk in key.assignments.select_related("vault"):
            audit.record(
                "vault.key_enable" if enabled else "vault.key_disable",
                actor=by,
                request=request,
                vault=vk.vault,
                obj=key,
                before={"enabled": not enabled},
                after={"enabled": enabled},
            )
    return key


def rotate_key(
    key: CustomerKey, *, by: User, request: HttpRequest | None = None, path: str
) -> list[Job]:
    """Point the key at a new file and queue one update_key job per vault using it.

    Each vault keeps reading its stores with the file it is wrapped with until its job has
    re-wrapped them (VaultKey.path), so vaults stay usable throughout.
    """
    access.require_site(by, "manage_keys")
    if not key.enabled:
        raise rules.blocked(
            f"Key {key.name} is disabled; enable it before rotating.",
            rule=rules.RULE_KEY_UNUSABLE,
        )
    new = _valid_key_file(path)
    fp = fingerprint(new)
    if fp == key.fingerprint:
        raise ValidationError({"path": "This file holds the key's current version."})
    if key.assignments.filter(version__lt=key.version).exists():
        raise rules.blocked(
            f"A rotation of key {key.name} is still in progress; wait for its update_key jobs "
            "to finish.",
            rule=rules.RULE_KEY_ROTATION,
        )
    problem = key_problem(key)
    if problem:
        raise rules.blocked(
            f"The current version cannot be read: {problem}.", rule=rules.RULE_KEY_UNUSABLE
        )
    before = _summary(key)
    jobs = []
    with transaction.atomic():
        key.path, key.fingerprint = path, fp
        key.version += 1
        key.rotated_at = timezone.now()
        key.save(update_fields=["path", "fingerprint", "version", "rotated_at"])
        for vk in key.assignments.select_related("vault"):
            jobs.append(_update_key_job(vk.vault, key, by=by))
            audit.record(
                "vault.key_rotate",
                actor=by,
                request=request,
                vault=vk.vault,
                obj=key,
                before={"version": before["version"]},
                after={"version": key.version, "job": jobs[-1].pk},
            )
        audit.record(
            "key.rotate",
            actor=by,
            request=request,
            obj=key,
            before=before,
            after={**_summary(key), "jobs": [j.pk for j in jobs]},
        )
    return jobs


def _update_key_job(vault: Vault, key: CustomerKey, *, by: User) -> Job:
    return runner.create_job(
        operation=Operation.UPDATE_KEY,
        vault=vault,
        by=by,
        params={
            "key": key.name,
            "path": key.path,
            "fingerprint": key.fingerprint,
            "version": key.version,
        },
    )


# -- vaults -------------------------------------------------------------------------------------------


def key_name(vault: Vault) -> str | None:
    vk = VaultKey.objects.filter(vault=vault).select_related("key").first()
    return vk.key.name if vk is not None else None


def has_protected(vault: Vault) -> bool:
    """True once the vault has protected anything, even if the items are long gone (the
    append-only audit log remembers every protection.enable)."""
    return (
        vault.protected_items.exists()
        or vault.recovery_points.exists()
        or AuditEvent.objects.filter(vault=vault, action="protection.enable").exists()
    )


def check_vault_encryption(vault: Vault, changes: dict[str, Any]) -> CustomerKey | None:
    """Validate an encryption change of `update_vault`; the key to move to, or None.

    `changes` may hold `encryption` and `encryption_key` (a registered key's name).
    """
    wanted = changes.get("encryption", vault.encryption)
    name = changes.get("encryption_key")
    if vault.encryption == Encryption.CUSTOMER_MANAGED and wanted != Encryption.CUSTOMER_MANAGED:
        raise rules.blocked(
            "A vault that uses a customer-managed key cannot go back to the platform key (the "
            "choice is irreversible).",
            rule=rules.RULE_CMK_IRREVERSIBLE,
            field="encryption",
        )
    if name is None:
        if wanted == Encryption.CUSTOMER_MANAGED and vault.encryption != wanted:
            raise ValidationError(
                {"encryption_key": "Name the customer-managed key (encryption_key)."}
            )
        return None
    if not isinstance(name, str) or not name:
        raise ValidationError({"encryption_key": "Give the name of a registered key."})
    if wanted != Encryption.CUSTOMER_MANAGED:
        raise ValidationError(
            {"encryption_key": 'A key is chosen together with "encryption": "customer_managed".'}
        )
    key = CustomerKey.objects.filter(name=name).first()
    if key is None:
        raise ValidationError({"encryption_key": f"No registered key named {name}."})
    if vault.encryption == Encryption.PLATFORM and has_protected(vault):
        raise rules.blocked(
            f"Vault {vault.name} has protected VMs (now or before): its encryption can only be "
            "switched to a customer-managed key before the first protection.",
            rule=rules.RULE_CMK_AFTER_PROTECTION,
            field="encryption",
        )
    current = VaultKey.objects.filter(vault=vault).first()
    if current is not None and current.key_id == key.pk:
        return None
    problem = key_problem(key)
    if problem:
        raise rules.blocked(
            f"The key cannot be used: {problem}.",
            rule=rules.RULE_KEY_UNUSABLE,
            field="encryption_key",
        )
    return key


def assign_key(vault: Vault, key: CustomerKey, *, by: User) -> dict[str, object]:
    """Make `key` the vault's key-encryption key; call inside the vault update's transaction.

    From the platform key (the vault never protected anything): re-wrap any store that
    already exists (made empty by an earlier job) now, and assign. From another CMK: queue an
    update_key job that re-wraps every store and then moves the assignment.
    """
    current = VaultKey.objects.filter(vault=vault).first()
    if current is not None:
        job = _update_key_job(vault, key, by=by)
        return {"encryption_key": key.name, "job": job.pk}
    new = read_key_file(key.path, key.name)
    if fingerprint(new) != key.fingerprint:
        raise rules.blocked(
            f"The file of key {key.name} holds a different key.",
            rule=rules.RULE_KEY_UNUSABLE,
            field="encryption_key",
        )
    try:
        existing = stores.existing_store_places(vault)
    except (engine.EngineError, OSError) as e:
        raise rules.blocked(
            f"The vault's stores cannot be reached to re-wrap them: {e}.",
            rule=rules.RULE_KEY_UNUSABLE,
            field="encryption_key",
        ) from e
    if existing:
        try:
            platform = master_key.kek()
        except engine.KeyUnavailable as e:
            raise rules.blocked(
                f"The vault's stores cannot be re-wrapped: {e}.",
                rule=rules.RULE_KEY_UNUSABLE,
                field="encryption_key",
            ) from e
    for place in existing:
        engine.rewrap_keys(place.location, platform, new, target=place.target)
    VaultKey.objects.create(
        vault=vault, key=key, path=key.path, fingerprint=key.fingerprint, version=key.version
    )
    return {"encryption_key": key.name}


# -- the update_key job ----------------------------------------------------------------------------------


@runner.handles(Operation.UPDATE_KEY)
def run_update_key(ctx: runner.JobContext) -> None:
    """Re-wrap every store of the vault (vault store, snapshot stores, secondary copy; local
    or on object storage) to the job's key file.

    1. Read the current KEK (the vault's assignment) and the new one (checked against the
       fingerprint recorded when the job was queued).
    2. Re-wrap each existing store (`stores.existing_store_places`); a store already wrapped with the new key (a re-run) is
       accepted when the new key opens it.
    3. Move the vault's assignment to the new file/key, audited.
    """
    job = ctx.job
    vault, p = job.vault, job.params
    assert vault is not None  # update_key jobs are queued for a vault (_update_key_job)
    key = CustomerKey.objects.filter(name=p.get("key")).first()
    if key is None:
        raise runner.JobError(
            "key_unavailable", f"customer-managed key {p.get('key')} is not registered"
        )
    try:
        old = customer_kek(vault)
        new = read_key_file(p["path"], key.name)
    except engine.KeyUnavailable as e:
        raise runner.JobError(
            "key_unavailable", f"The vault's encryption key is unavailable: {e}"
        ) from e
    if fingerprint(new) != p["fingerprint"]:
        raise runner.JobError(
            "key_unavailable",
            f"customer-managed key {key.name}: the file {p['path']} no longer holds the key "
            "it held when the rotation was asked for",
        )
    try:
        places = stores.existing_store_places(vault)
    except (engine.EngineError, OSError) as e:
        # A store left out would keep the old wrap and be unreadable once the old key goes.
        raise runner.JobError("store", f"The vault's stores cannot be reached: {e}") from e
    done = 0
    for place in places:
        try:
            engine.rewrap_keys(place.location, old, new, target=place.target)
        except engine.WrongKey:
            try:
                # re-run: this store already has the new wrap
                engine.open_store(place.location, new, target=place.target)
            except engine.EngineError as e:
                raise runner.JobError(
                    "key_unavailable", f"{place.what} ({place.location}): {e}"
                ) from e
        except (engine.EngineError, OSError) as e:
            raise runner.JobError("store", f"{place.what} ({place.location}): {e}") from e
        done += 1
        ctx.check_cancel()
    vk = VaultKey.objects.get(vault=vault)
    before = {"encryption_key": vk.key.name if vk.key_id else None, "version": vk.version}
    with transaction.atomic():
        vk.key, vk.path, vk.fingerprint, vk.version = key, p["path"], p["fingerprint"], p["version"]
        vk.save()
        audit.record(
            "vault.key_update",
            actor=job.created_by,
            vault=vault,
            obj=vk,
            before=before,
            after={"encryption_key": key.name, "version": vk.version, "stores": done},
        )
    ctx.set_result(stores_rewrapped=done, key=key.name, version=vk.version)
