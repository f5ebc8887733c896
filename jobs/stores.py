"""Opening a vault's chunk stores: its vault store and, per host, its snapshot-tier store.

Both tiers share the vault's keys (the snapshot store is initialised with the vault store's
wrapped keys), so chunk ids match across tiers and one key-encryption key governs both.
"""

from pathlib import Path

import engine

# The vault tier trades CPU for space; the snapshot tier must be fast (instant restore).
VAULT_CODEC = "zstd:1"
SNAPSHOT_CODEC = "none"


def kek_for(vault) -> bytes:
    """The key-encryption key that wraps this vault's data keys.

    A customer-managed key comes from `security.keys` (KeyUnavailable naming the key when it is
    disabled, missing or not the registered one); otherwise the platform master key from
    `security.master_key` (KeyUnavailable, and a Sev-0 alert, when its file is missing or
    holds another key: it is never recreated).
    """
    if vault.encryption == "customer_managed":
        from security.keys import customer_kek

        return customer_kek(vault)
    from security.master_key import vault_kek

    return vault_kek(vault)


def _open_or_init(path: Path, kek: bytes, **init_args) -> engine.Store:
    try:
        return engine.open_store(path, kek)
    except engine.StoreNotFound:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return engine.init_store(path, kek, **init_args)
    except engine.StoreExists:  # another job created it a moment ago
        return engine.open_store(path, kek)


def vault_store(vault, kek: bytes | None = None) -> engine.Store:
    return _open_or_init(vault.store_path, kek or kek_for(vault), codec=VAULT_CODEC)


def snapshot_store(vault, host, kek: bytes | None = None) -> engine.Store:
    kek = kek or kek_for(vault)
    store = existing_snapshot_store(vault, host, kek)
    if store is not None:
        return store
    vault_store(vault, kek)  # a new snapshot store copies the vault store's wrapped keys
    return _open_or_init(
        host.snapshot_store_path(vault), kek, codec=SNAPSHOT_CODEC, keys_from=vault.store_path
    )


def existing_snapshot_store(vault, host, kek: bytes | None = None) -> engine.Store | None:
    try:
        return engine.open_store(host.snapshot_store_path(vault), kek or kek_for(vault))
    except engine.StoreNotFound:
        return None
