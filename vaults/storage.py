"""A vault's storage use (cached for a minute) and its replication lag, for the overview page.

Walking a store costs a directory scan and a read of every index, so the numbers are kept in
Django's cache per (vault, store locations) for `CACHE_SECONDS`; the logical size comes from the
catalog and is always current.
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.cache import cache
from django.db.models import Count, Min, Q, QuerySet, Sum
from django.utils import timezone

from engine.stats import StoreStats, store_stats
from inventory.models import Host
from vaults.models import Replication, Vault

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


@dataclass(frozen=True)
class ReplicationLag:
    """How far the secondary copy is behind, for the vault page."""

    pending: int
    failed: int
    oldest_owed: datetime | None  # the time of the oldest RP still owed to the secondary
    last_error: str

    @property
    def lag(self) -> timedelta | None:
        return timezone.now() - self.oldest_owed if self.oldest_owed else None


def replication_lag(vault: Vault) -> ReplicationLag | None:
    """Owed copies of the vault's live RPs (None: the vault has no secondary location)."""
    if not vault.secondary_location:
        return None
    owed = vault.recovery_points.live().filter(
        replication__in=[Replication.PENDING, Replication.FAILED]
    )
    counts = owed.aggregate(
        pending=Count("pk", filter=Q(replication=Replication.PENDING)),
        failed=Count("pk", filter=Q(replication=Replication.FAILED)),
        oldest=Min("time"),
    )
    last = owed.filter(replication=Replication.FAILED).order_by("-last_replication_at").first()
    return ReplicationLag(
        counts["pending"],
        counts["failed"],
        counts["oldest"],
        last.replication_error if last else "",
    )
