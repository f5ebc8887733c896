"""Opening a vault's chunk stores: its vault store and, per host, its snapshot-tier store.

Both tiers share the vault's keys (the snapshot store is initialised with the vault store's
wrapped keys), so chunk ids match across tiers and one key-encryption key governs both.

Only writing a backup creates stores (`open_or_create_snapshot_store`, which creates the vault
store first to copy its keys; a transfer's destination, `open_or_create_vault_store`). Every
other use opens what exists, and a missing store is `engine.StoreNotFound` naming the vault and
the tier: a store created afresh where the real one went missing (a disk not mounted) would hold
new data keys, which no other store of the vault shares, and would hide the loss.

Which store holds a recovery point is decided here only: `rp_store(rp, tier)` opens the vault
store, or the snapshot store on the host of the RP's VM; a read that may use either tier
prefers the snapshot tier while it holds the RP (`preferred_tier`, `read_store`).
"""

from dataclasses import dataclass
from pathlib import Path

import engine
from inventory.models import Host
from jobs.models import RestoreTier
from security.kek import kek_for
from vaults.models import RecoveryPoint, Vault

# The tiers of a recovery point.

# The vault tier trades CPU for space; the snapshot tier must be fast (instant restore).
VAULT_CODEC = "zstd:1"
SNAPSHOT_CODEC = "none"


# -- opening what exists ------------------------------------------------------------------------


def _open(path: Path, kek: bytes, what: str) -> engine.Store:
    try:
        return engine.open_store(path, kek)
    except engine.StoreNotFound as e:
        raise engine.StoreNotFound(f"{what} is missing ({e})") from e


def _vault_store_name(vault: Vault) -> str:
    return f"the vault store of vault {vault.name}"


def _snapshot_store_name(vault: Vault, host: Host) -> str:
    return f"the snapshot store of vault {vault.name} on host {host.name}"


def open_vault_store(vault: Vault, kek: bytes | None = None) -> engine.Store:
    """The vault's vault-tier store; StoreNotFound naming it when it does not exist."""
    return _open(vault.store_path, kek or kek_for(vault), _vault_store_name(vault))


def open_snapshot_store(vault: Vault, host: Host, kek: bytes | None = None) -> engine.Store:
    """The vault's snapshot-tier store on `host`; StoreNotFound naming it when it does not exist."""
    path = host.snapshot_store_path(vault)
    return _open(path, kek or kek_for(vault), _snapshot_store_name(vault, host))


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

    def holding(self, rp: RecoveryPoint, tier: str) -> engine.Store | None:
        """The store of `tier` that holds `rp`, when it exists."""
        if tier == RestoreTier.VAULT:
            return self.vault
        return self.snapshots.get(rp.protected_item.vm.host_id)

    def all(self) -> list[engine.Store]:
        """Each store once (hosts may share a snapshot root)."""
        stores = (self.vault, *self.snapshots.values())
        return list({s.path: s for s in stores if s is not None}.values())


def existing_stores(vault: Vault, hosts: list[Host], kek: bytes | None = None) -> VaultStores:
    """The vault store and the vault's snapshot stores on `hosts`; none is created.

    A vault that has stored nothing yet (no recovery point, no snapshot store) has no vault
    store either; once it has, a missing vault store is lost, and StoreNotFound names it.
    """
    kek = kek or kek_for(vault)
    snapshots = {}
    for host in hosts:
        store = existing_snapshot_store(vault, host, kek)
        if store is not None:
            snapshots[host.pk] = store
    try:
        return VaultStores(open_vault_store(vault, kek), snapshots)
    except engine.StoreNotFound:
        if snapshots or RecoveryPoint.objects.filter(vault=vault).exists():
            raise
        return VaultStores(None, snapshots)


def existing_store_paths(vault: Vault) -> list[Path]:
    """Where the vault's stores are: its vault store and its snapshot store on any host, those
    that exist (initialised: their wrapped keys are there)."""
    paths = [vault.store_path, *(h.snapshot_store_path(vault) for h in Host.objects.all())]
    return [path for path in paths if (path / "keys.json").exists()]


# -- which store holds a recovery point -----------------------------------------------------------


def preferred_tier(rp: RecoveryPoint) -> str:
    """The tier a read of `rp` uses when either will do: the snapshot tier while it holds the RP
    (local and uncompressed), else the vault tier."""
    return RestoreTier.SNAPSHOT if rp.in_snapshot_tier else RestoreTier.VAULT


def rp_store(rp: RecoveryPoint, tier: str, kek: bytes | None = None) -> engine.Store:
    """The store of `tier` that holds `rp`: the vault store, or the snapshot store on the host
    of the RP's VM. Never created: StoreNotFound naming the vault and the tier."""
    if tier == RestoreTier.VAULT:
        return open_vault_store(rp.vault, kek)
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


# -- creating: backups only ---------------------------------------------------------------------


def _open_or_init(
    path: Path, kek: bytes, codec: str, keys_from: Path | None = None
) -> engine.Store:
    try:
        return engine.open_store(path, kek)
    except engine.StoreNotFound:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return engine.init_store(path, kek, codec=codec, keys_from=keys_from)
    except engine.StoreExists:  # another job created it a moment ago
        return engine.open_store(path, kek)


def open_or_create_vault_store(vault: Vault, kek: bytes | None = None) -> engine.Store:
    """The vault store, created when missing: for a backup's and a transfer's writes only."""
    return _open_or_init(vault.store_path, kek or kek_for(vault), VAULT_CODEC)


def open_or_create_snapshot_store(
    vault: Vault, host: Host, kek: bytes | None = None
) -> engine.Store:
    """The vault's snapshot store on `host`, created (with the vault store, whose wrapped keys
    it copies) when missing: for a backup's writes only."""
    kek = kek or kek_for(vault)
    store = existing_snapshot_store(vault, host, kek)
    if store is not None:
        return store
    open_or_create_vault_store(vault, kek)
    return _open_or_init(
        host.snapshot_store_path(vault), kek, SNAPSHOT_CODEC, keys_from=vault.store_path
    )
