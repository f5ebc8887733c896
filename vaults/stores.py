"""Opening a vault's chunk stores: its vault store, per host its snapshot-tier store, and its
secondary copy.

All of a vault's stores share its keys (the snapshot and secondary stores are initialised with
the vault store's wrapped keys), so chunk ids match across them and one key-encryption key
governs every copy.

Where a store lives is a *location*: an absolute local directory, or `s3://bucket/prefix` /
`az://container/prefix` together with a `StorageTarget` (the endpoint and where the worker finds
the credentials). The credentials are read here, when a store is opened, in the process that
opens it: the database never holds a secret. The snapshot tier is always local (instant
restore).

Only writing a backup creates primary stores (`open_or_create_snapshot_store`, which creates the
vault store first to copy its keys; a transfer's destination, `open_or_create_vault_store`), and
only a `replicate` job creates the secondary (`open_or_create_secondary_store`). Every other use
opens what exists, and a missing store is `engine.StoreNotFound` naming the vault and the tier:
a store created afresh where the real one went missing (a disk not mounted, a wrong bucket)
would hold new data keys, which no other store of the vault shares, and would hide the loss.

Which store holds a recovery point is decided here only: `rp_store(rp, tier)` opens the vault
store, the snapshot store on the host of the RP's VM, or the secondary copy; a read that may use
either primary tier prefers the snapshot tier while it holds the RP (`preferred_tier`,
`read_store`).
"""

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import engine
from inventory.models import Host
from jobs.models import RestoreTier
from security.kek import kek_for
from vaults.models import (
    CREDENTIAL_KEYS,
    OBJECT_SCHEMES,
    CredentialsSource,
    RecoveryPoint,
    SoftDeleteState,
    StorageTarget,
    TargetKind,
    Vault,
    location_scheme,
)

# The vault tier trades CPU for space; the snapshot tier must be fast (instant restore). The
# secondary copy is a vault-tier copy elsewhere.
VAULT_CODEC = "zstd:1"
SNAPSHOT_CODEC = "none"
SECONDARY_CODEC = VAULT_CODEC


class TargetUnusable(engine.EngineError):
    """A storage target's credentials cannot be read (a variable unset, a file unreadable), or
    a location needs a target it lacks. The message names what is missing."""


# -- storage targets: credentials read at use -----------------------------------------------------


def _env_credentials(target: StorageTarget) -> dict[str, str]:
    names: Mapping[str, str] = target.credentials_env or {}
    creds, unset = {}, []
    for key, var in names.items():
        value = os.environ.get(var)
        if value:
            creds[key] = value
        else:
            unset.append(var)
    if unset:
        raise TargetUnusable(
            f"storage target {target.name}: environment variable(s) {', '.join(unset)} "
            "not set for this worker"
        )
    return creds


def _file_credentials(target: StorageTarget) -> dict[str, str]:
    path = target.credentials_file
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise TargetUnusable(
            f"storage target {target.name}: credentials file {path} cannot be read: "
            f"{e.strerror or e}"
        ) from e
    except ValueError as e:
        raise TargetUnusable(
            f"storage target {target.name}: credentials file {path} is not JSON: {e}"
        ) from e
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise TargetUnusable(
            f"storage target {target.name}: credentials file {path} must hold a JSON object "
            "of strings"
        )
    known = CREDENTIAL_KEYS[target.kind]
    return {k: v for k, v in data.items() if k in known and v}


def missing_credentials(kind: str, keys: set[str]) -> str:
    """What a target of `kind` lacks among the credential keys it has, said for a person;
    empty when nothing. S3: an access key id and secret; Azure: the account name, and its
    key or a SAS token."""
    if kind == TargetKind.S3:
        missing = [k for k in ("access_key_id", "secret_access_key") if k not in keys]
        return " and ".join(missing)
    if "account_name" not in keys:
        return "account_name" + (
            "" if keys & {"account_key", "sas_token"} else " and account_key (or sas_token)"
        )
    if not keys & {"account_key", "sas_token"}:
        return "account_key (or sas_token)"
    return ""


def credentials(target: StorageTarget) -> dict[str, str]:
    """The target's credentials as the engine takes them, read now from the environment or
    the file; TargetUnusable naming the missing variable, file or key."""
    if target.credentials_source == CredentialsSource.FILE:
        creds = _file_credentials(target)
    else:
        creds = _env_credentials(target)
    where = (
        f"credentials file {target.credentials_file}"
        if target.credentials_source == CredentialsSource.FILE
        else "its environment variables"
    )
    missing = missing_credentials(target.kind, set(creds))
    if missing:
        raise TargetUnusable(f"storage target {target.name}: {where} lack {missing}")
    return creds


def object_target(target: StorageTarget, *, object_lock: bool = False) -> engine.ObjectTarget:
    """`engine.ObjectTarget` for `target`, its credentials read now. `object_lock`: the store's
    objects get the bucket's retention (locked vaults on an object-lock target)."""
    return engine.ObjectTarget(
        endpoint=target.endpoint or None,
        region=target.region or None,
        path_style=target.path_style,
        credentials=credentials(target),
        object_lock=object_lock and target.object_lock,
    )


def _target_for(
    location: str, target: StorageTarget | None, *, object_lock: bool, what: str
) -> engine.ObjectTarget | None:
    """The engine target a location needs: None for a local directory."""
    scheme = location_scheme(location)
    if scheme is None:
        return None
    if target is None:
        raise TargetUnusable(f"{what} at {location} has no storage target")
    if OBJECT_SCHEMES[scheme] != target.kind:
        raise TargetUnusable(f"{what} at {location}: storage target {target.name} is {target.kind}")
    return object_target(target, object_lock=object_lock)


def _engine_open(
    location: str, kek: bytes, target: engine.ObjectTarget | None = None
) -> engine.Store:
    return engine.open_store(location, kek, target=target)


def _engine_init(
    location: str,
    kek: bytes,
    codec: str,
    keys_from: engine.Store | None,
    target: engine.ObjectTarget | None,
) -> engine.Store:
    """A new store at `location`; with `keys_from`, that store's wrapped keys."""
    if target is None:
        Path(location).parent.mkdir(parents=True, exist_ok=True)
    return engine.init_store(location, kek, codec=codec, keys_from=keys_from, target=target)


def location_of(store: engine.Store) -> str:
    """Where an open store lives (its directory, or its object-storage location)."""
    return str(store.location)


def probe_location(location: str, target: StorageTarget | None, kek: bytes | None = None) -> str:
    """Reach a location now (the targets' Test button): "empty" when no store is there yet,
    "store" when one is; raises the engine's error (or TargetUnusable) saying why not."""
    engine_target = _target_for(location, target, object_lock=False, what="the location")
    try:
        _engine_open(location, kek or b"\0" * 32, engine_target)
    except engine.StoreNotFound:
        return "empty"
    except engine.KeyUnavailable:
        return "store"  # reachable, and a store is there: its keys are another matter
    return "store"


@dataclass(frozen=True)
class Reach:
    """A store location as a health check found it."""

    ok: bool
    text: str  # what was found, or why it failed
    free_bytes: int | None  # local file systems only


def _free_bytes(location: str) -> int | None:
    """Free space of the file system a local location is (or will be) on."""
    path = Path(location)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def reach(location: str, target: StorageTarget | None, *, holds_data: bool) -> Reach:
    """Reach a store location now (health checks; one request on object storage). A location
    with no store yet is fine until recovery points live there (`holds_data`): then the store
    is missing (a disk not mounted, a wrong bucket), which is a failure."""
    local = location_scheme(location) is None
    try:
        found = probe_location(location, target)
    except (engine.EngineError, OSError) as e:
        return Reach(False, f"unreachable: {e}", None)
    free = _free_bytes(location) if local else None
    if found == "empty":
        if holds_data:
            return Reach(False, "the store is missing", free)
        return Reach(True, "no store yet", free)
    return Reach(True, "reachable", free)


# -- opening what exists ------------------------------------------------------------------------


def _open(
    location: str, kek: bytes, what: str, target: engine.ObjectTarget | None = None
) -> engine.Store:
    try:
        return _engine_open(location, kek, target)
    except engine.StoreNotFound as e:
        raise engine.StoreNotFound(f"{what} is missing ({e})") from e


def _vault_store_name(vault: Vault) -> str:
    return f"the vault store of vault {vault.name}"


def _snapshot_store_name(vault: Vault, host: Host) -> str:
    return f"the snapshot store of vault {vault.name} on host {host.name}"


def _secondary_store_name(vault: Vault) -> str:
    return f"the secondary copy of vault {vault.name}"


def object_lock_applies(vault: Vault, target: StorageTarget | None) -> bool:
    """Locked immutability on a target whose bucket has S3 Object Lock: the store enforces it."""
    return (
        vault.immutability_locked
        and target is not None
        and target.kind == TargetKind.S3
        and target.object_lock
    )


def store_retain_until(vault: Vault, expires: datetime) -> datetime:
    """The date the stores keep an RP's data until (what S3 Object Lock locks it to): its
    expiry, plus the vault's soft-delete days while soft delete is on, since an RP expired
    into the recycle bin can still come back that long."""
    if vault.soft_delete_state == SoftDeleteState.DISABLED:
        return expires
    return expires + timedelta(days=vault.soft_delete_days)


def vault_store_locked(vault: Vault) -> bool:
    """The vault store holds its RPs under S3 Object Lock (locked vault, object-lock bucket)."""
    return location_scheme(vault.vault_location) is not None and object_lock_applies(
        vault, vault.storage_target
    )


def secondary_locked(vault: Vault) -> bool:
    """The secondary copy holds its RPs under S3 Object Lock."""
    return (
        vault.has_secondary
        and location_scheme(vault.secondary_location) is not None
        and object_lock_applies(vault, vault.secondary_target)
    )


def immutability_enforcement(vault: Vault) -> str | None:
    """Who enforces a vault's locked immutability, for its settings page; None unless locked."""
    if not vault.immutability_locked:
        return None
    if location_scheme(vault.vault_location) and object_lock_applies(vault, vault.storage_target):
        return "Enforced by the store (S3 Object Lock, COMPLIANCE)"
    return "Enforced by Lifeboat only"


def _vault_target(vault: Vault) -> engine.ObjectTarget | None:
    return _target_for(
        vault.vault_location,
        vault.storage_target,
        object_lock=object_lock_applies(vault, vault.storage_target),
        what=_vault_store_name(vault),
    )


def _secondary_target(vault: Vault) -> engine.ObjectTarget | None:
    return _target_for(
        vault.secondary_location,
        vault.secondary_target,
        object_lock=object_lock_applies(vault, vault.secondary_target),
        what=_secondary_store_name(vault),
    )


def open_vault_store(vault: Vault, kek: bytes | None = None) -> engine.Store:
    """The vault's vault-tier store; StoreNotFound naming it when it does not exist."""
    return _open(
        vault.vault_location, kek or kek_for(vault), _vault_store_name(vault), _vault_target(vault)
    )


def open_snapshot_store(vault: Vault, host: Host, kek: bytes | None = None) -> engine.Store:
    """The vault's snapshot-tier store on `host`; StoreNotFound naming it when it does not exist."""
    path = str(host.snapshot_store_path(vault))
    return _open(path, kek or kek_for(vault), _snapshot_store_name(vault, host))


def open_secondary_store(vault: Vault, kek: bytes | None = None) -> engine.Store:
    """The vault's secondary copy; StoreNotFound naming it when it does not exist (or the
    vault has no secondary location)."""
    if not vault.has_secondary:
        raise engine.StoreNotFound(f"vault {vault.name} has no secondary location")
    return _open(
        vault.secondary_location,
        kek or kek_for(vault),
        _secondary_store_name(vault),
        _secondary_target(vault),
    )


def existing_snapshot_store(
    vault: Vault, host: Host, kek: bytes | None = None
) -> engine.Store | None:
    """The vault's snapshot store on `host`, or None where the vault never wrote to that host."""
    try:
        return open_snapshot_store(vault, host, kek)
    except engine.StoreNotFound:
        return None


@dataclass(frozen=True)
class VaultStores:
    """The existing stores of one vault, opened once for a job that walks many RPs."""

    vault: engine.Store | None  # None only while the vault has stored nothing at all
    snapshots: dict[int, engine.Store]  # by host id
    secondary: engine.Store | None = None  # None: no secondary, none yet, or unreachable
    secondary_error: str = ""  # why a configured secondary could not be opened

    def holding(self, rp: RecoveryPoint, tier: str) -> engine.Store | None:
        """The store of `tier` that holds `rp`, when it exists."""
        if tier == RestoreTier.VAULT:
            return self.vault
        if tier == RestoreTier.SECONDARY:
            return self.secondary
        return self.snapshots.get(rp.protected_item.vm.host_id)

    def all(self) -> list[engine.Store]:
        """Each store once (hosts may share a snapshot root)."""
        stores = (self.vault, *self.snapshots.values(), self.secondary)
        return list({location_of(s): s for s in stores if s is not None}.values())


def _existing_secondary(vault: Vault, kek: bytes) -> tuple[engine.Store | None, str]:
    """The secondary copy if it exists and answers; else None and why (empty: not created
    yet). An unreachable secondary never stops the primary's work."""
    if not vault.has_secondary:
        return None, ""
    try:
        return open_secondary_store(vault, kek), ""
    except engine.StoreNotFound:
        return None, ""
    except engine.KeyUnavailable:
        raise
    except (engine.EngineError, OSError) as e:
        return None, str(e)


def existing_stores(vault: Vault, hosts: list[Host], kek: bytes | None = None) -> VaultStores:
    """The vault store, the vault's snapshot stores on `hosts` and its secondary; none is
    created.

    A vault that has stored nothing yet (no recovery point, no snapshot store) has no vault
    store either; once it has, a missing vault store is lost, and StoreNotFound names it.
    """
    kek = kek or kek_for(vault)
    snapshots = {}
    for host in hosts:
        store = existing_snapshot_store(vault, host, kek)
        if store is not None:
            snapshots[host.pk] = store
    secondary, why = _existing_secondary(vault, kek)
    try:
        return VaultStores(open_vault_store(vault, kek), snapshots, secondary, why)
    except engine.StoreNotFound:
        if snapshots or RecoveryPoint.objects.filter(vault=vault).exists():
            raise
        return VaultStores(None, snapshots, secondary, why)


@dataclass(frozen=True)
class StorePlace:
    """Where one of a vault's stores lives: a location and, on object storage, the engine
    target (credentials read when it was made) that reaches it."""

    location: str
    target: engine.ObjectTarget | None
    what: str


def existing_store_places(vault: Vault) -> list[StorePlace]:
    """Every store of the vault that exists (initialised: its wrapped keys are there): the
    vault store, its snapshot store on any host and its secondary copy, local or on object
    storage. Key changes walk these, so no copy keeps a wrap nobody can open any more.

    A location on object storage is asked whether a store is there (one request); one that
    cannot be reached raises the engine's error, since skipping it would leave it wrapped
    with a key about to go."""
    places: list[StorePlace] = []
    for location, target, what in (
        (vault.vault_location, _vault_target, _vault_store_name),
        (vault.secondary_location, _secondary_target, _secondary_store_name),
    ):
        if not location:
            continue
        if location_scheme(location) is None:
            if (Path(location) / "keys.json").exists():
                places.append(StorePlace(location, None, what(vault)))
            continue
        engine_target = target(vault)
        try:
            _engine_open(location, b"\0" * 32, engine_target)
        except engine.StoreNotFound:
            continue
        except engine.KeyUnavailable:
            pass  # a store is there; which key opens it is the caller's matter
        places.append(StorePlace(location, engine_target, what(vault)))
    for host in Host.objects.all():
        path = host.snapshot_store_path(vault)
        if (path / "keys.json").exists():
            places.append(StorePlace(str(path), None, _snapshot_store_name(vault, host)))
    return list({p.location: p for p in places}.values())  # hosts may share a snapshot root


def store_places(vault: Vault) -> list[tuple[str, str]]:
    """(what, where) of each place the vault keeps data, for its settings page."""
    places = [("Vault tier", vault.vault_location)]
    if vault.storage_target is not None:
        places[0] = ("Vault tier", f"{vault.vault_location} (target {vault.storage_target.name})")
    places += [
        (f"Snapshot tier on {h.name}", str(h.snapshot_store_path(vault)))
        for h in vault.linked_hosts.order_by("name")
    ]
    if vault.has_secondary:
        where = vault.secondary_location
        if vault.secondary_target is not None:
            where += f" (target {vault.secondary_target.name})"
        places.append(("Secondary copy", where))
    return places


# -- which store holds a recovery point -----------------------------------------------------------


def preferred_tier(rp: RecoveryPoint) -> str:
    """The tier a read of `rp` uses when either will do: the snapshot tier while it holds the RP
    (local and uncompressed), else the vault tier. Never the secondary: that is asked for."""
    return RestoreTier.SNAPSHOT if rp.in_snapshot_tier else RestoreTier.VAULT


def rp_store(rp: RecoveryPoint, tier: str, kek: bytes | None = None) -> engine.Store:
    """The store of `tier` that holds `rp`: the vault store, the snapshot store on the host of
    the RP's VM, or the secondary copy. Never created: StoreNotFound naming the vault and the
    tier."""
    if tier == RestoreTier.VAULT:
        return open_vault_store(rp.vault, kek)
    if tier == RestoreTier.SECONDARY:
        return open_secondary_store(rp.vault, kek)
    return open_snapshot_store(rp.vault, rp.protected_item.vm.host, kek)


def read_store(rp: RecoveryPoint, kek: bytes | None = None) -> engine.Store:
    """The store a read of `rp` uses: the preferred tier's while it still holds the RP's
    manifest, else the vault store."""
    kek = kek or kek_for(rp.vault)
    if preferred_tier(rp) == RestoreTier.SNAPSHOT:
        try:
            store = rp_store(rp, RestoreTier.SNAPSHOT, kek)
            if store.has_manifest(str(rp.pk)):
                return store
        except engine.StoreNotFound:
            pass
    return rp_store(rp, RestoreTier.VAULT, kek)


# -- creating: backups and replication only -----------------------------------------------------


def _open_or_init(
    location: str,
    kek: bytes,
    codec: str,
    keys_from: engine.Store | None = None,
    target: engine.ObjectTarget | None = None,
) -> engine.Store:
    try:
        return _engine_open(location, kek, target)
    except engine.StoreNotFound:
        pass
    try:
        return _engine_init(location, kek, codec, keys_from, target)
    except engine.StoreExists:  # another job created it a moment ago
        return _engine_open(location, kek, target)


def open_or_create_vault_store(vault: Vault, kek: bytes | None = None) -> engine.Store:
    """The vault store, created when missing: for a backup's and a transfer's writes only."""
    return _open_or_init(
        vault.vault_location, kek or kek_for(vault), VAULT_CODEC, target=_vault_target(vault)
    )


def open_or_create_snapshot_store(
    vault: Vault, host: Host, kek: bytes | None = None
) -> engine.Store:
    """The vault's snapshot store on `host`, created (with the vault store, whose wrapped keys
    it copies) when missing: for a backup's writes only."""
    kek = kek or kek_for(vault)
    store = existing_snapshot_store(vault, host, kek)
    if store is not None:
        return store
    vault_store = open_or_create_vault_store(vault, kek)
    return _open_or_init(
        str(host.snapshot_store_path(vault)), kek, SNAPSHOT_CODEC, keys_from=vault_store
    )


def open_or_create_secondary_store(
    vault: Vault, vault_store: engine.Store, kek: bytes | None = None
) -> engine.Store:
    """The vault's secondary copy, created with the vault store's wrapped keys when missing:
    for a `replicate` job's writes only."""
    if not vault.has_secondary:
        raise engine.StoreNotFound(f"vault {vault.name} has no secondary location")
    return _open_or_init(
        vault.secondary_location,
        kek or kek_for(vault),
        SECONDARY_CODEC,
        keys_from=vault_store,
        target=_secondary_target(vault),
    )
