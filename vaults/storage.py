"""A vault's storage use for the overview page, cached for a minute.

Walking a store costs a directory scan and a read of every index, so the numbers are kept in
Django's cache per (vault, store locations) for `CACHE_SECONDS`; the logical size comes from the
catalog and is always current.
"""

import hashlib
from dataclasses import dataclass

from django.core.cache import cache
from django.db.models import Q, QuerySet, Sum

from engine.stats import StoreStats, store_stats
from inventory.models import Host
from vaults.models import Vault

CACHE_SECONDS = 60


@dataclass(frozen=True)
class TierUse:
    label: str
    path: str
    stats: StoreStats


@dataclass(frozen=True)
class VaultStorage:
    logical_bytes: int  # sum of the disk sizes of the live recovery points
    tiers: list[TierUse]

    @property
    def stored_bytes(self) -> int:
        return sum(t.stats.stored_bytes for t in self.tiers)

    @property
    def vault_tier(self) -> StoreStats:
        return self.tiers[0].stats

    @property
    def dedup_ratio(self) -> float | None:
        return self.vault_tier.dedup_ratio

    @property
    def compression_ratio(self) -> float | None:
        return self.vault_tier.compression_ratio


def _snapshot_hosts(vault: Vault) -> QuerySet[Host]:
    """Linked hosts plus the hosts of the vault's protected VMs (a host may be unlinked later)."""
    return Host.objects.filter(Q(linked_vaults=vault) | Q(vms__protections__vault=vault)).distinct()


def _stats(location: str) -> StoreStats:
    """A local store's use; object storage is not walked from the web process (its listing
    costs requests, and its credentials are the workers')."""
    return StoreStats() if "://" in location else store_stats(location)


def vault_storage(vault: Vault) -> VaultStorage:
    logical = vault.recovery_points.live().aggregate(n=Sum("size_bytes"))["n"] or 0
    places = [("Vault tier", vault.vault_location)] + [
        (f"Snapshot tier on {host.name}", str(host.snapshot_store_path(vault)))
        for host in sorted(_snapshot_hosts(vault), key=lambda h: h.name)
    ]
    if vault.secondary_location:
        places.append(("Secondary copy", vault.secondary_location))
    digest = hashlib.sha256("\0".join(p for _, p in places).encode()).hexdigest()[:32]
    key = f"lifeboat:storage:{vault.pk}:{digest}"
    tiers = cache.get(key)
    if tiers is None:
        tiers = [TierUse(label, path, _stats(path)) for label, path in places]
        cache.set(key, tiers, CACHE_SECONDS)
    return VaultStorage(logical_bytes=logical, tiers=tiers)
