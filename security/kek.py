"""Reading a vault's key-encryption key (KEK): what opening its stores needs, nothing more.

A vault uses the platform master key (`security.master_key`) unless it is set to a
customer-managed key (CMK), whose file the vault's `VaultKey` names. The database keeps a
fingerprint of each CMK file (a hash that reveals nothing of the key), so a file that now holds
another key is caught, never used. Key management (registering, rotating) is `security.keys`.
"""

import hashlib

import engine
from security import master_key
from security.models import VaultKey
from vaults.models import Encryption, Vault

FINGERPRINT_CONTEXT = b"lifeboat customer-managed key fingerprint v1\0"


def fingerprint(kek: bytes) -> str:
    return hashlib.sha256(FINGERPRINT_CONTEXT + kek).hexdigest()[:32]


def read_key_file(path: str, name: str) -> bytes:
    """The key in the file of the customer-managed key `name` (KeyUnavailable naming it)."""
    try:
        return engine.load_key_file(path)
    except engine.KeyUnavailable as e:
        raise engine.KeyUnavailable(f"customer-managed key {name}: {e}") from e


def customer_kek(vault: Vault) -> bytes:
    """The KEK of a CMK vault, or `engine.KeyUnavailable` naming the key and the cause.

    A disabled, missing, unreadable or different key is unavailable: backups and restores
    report it as `key_unavailable` (and their failure raises the vault's key alert). Putting
    the file back or re-enabling the key heals it.
    """
    vk = VaultKey.objects.select_related("key").filter(vault=vault).first()
    if vk is None:
        raise engine.KeyUnavailable(
            f"vault {vault.name} is set to a customer-managed key but has none assigned"
        )
    if not vk.key.enabled:
        raise engine.KeyUnavailable(f"customer-managed key {vk.key.name} is disabled")
    kek = read_key_file(vk.path, vk.key.name)
    if fingerprint(kek) != vk.fingerprint:
        raise engine.WrongKey(
            f"customer-managed key {vk.key.name}: the file {vk.path} holds a different key "
            "than the one the vault is wrapped with"
        )
    return kek


def kek_for(vault: Vault) -> bytes:
    """The KEK that wraps this vault's data keys, or KeyUnavailable saying why.

    A customer-managed key as `customer_kek` reads it; otherwise the platform master key
    (`master_key.vault_kek`: unavailable, with a Sev-0 alert, when its file is missing or holds
    another key; it is never recreated).
    """
    if vault.encryption == Encryption.CUSTOMER_MANAGED:
        return customer_kek(vault)
    return master_key.vault_kek(vault)
