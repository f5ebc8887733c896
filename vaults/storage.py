"""A vault's storage use (cached) and its replication lag, for the overview page.

Measuring a store costs a listing of its chunks and a read of every index (`engine.stats`,
through the store's backend: a directory, S3 or Azure Blob), so each store's figures are kept
in Django's cache per location for `CACHE_SECONDS`, or `OBJECT_CACHE_SECONDS` on object
storage, where every listing page and index read is a billed request. The logical size comes
from the catalog and is always current.

Object stores are measured by this process with the storage target's credentials read here
(`vaults.stores.object_target`); where this process cannot read them, or the service does not
answer, the tier says so instead of showing zeros.
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.cache import cache
from django.db.models import Count, Min, Q, QuerySet, Sum
from django.utils import timezone

import engine
from engine.stats import StoreStats, store_stats
from inventory.models import Host
from vaults.models import Replication, StorageTarget, Vault, location_scheme
from vaults.stores import object_target

CACHE_SECONDS = 60
OBJECT_CACHE_SECONDS = 300


@dataclass(frozen=True)
class TierUse:
    label: str
    path: str
    stats: StoreStats
    error: str = ""  # why the store could not be measured (its figures are then zeros)


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


def _measure(location: str, target: StorageTarget | None) -> tuple[StoreStats, str]:
    if location_scheme(location) is None:
        return store_stats(location), ""
    if target is None:
        return StoreStats(), f"{location} has no storage target."
    try:
        return store_stats(location, object_target(target)), ""
    except (engine.EngineError, OSError) as e:
        return StoreStats(), f"Not measured by the web server: {e}"


def _tier(label: str, location: str, target: StorageTarget | None) -> TierUse:
    """One store's figures, from the cache when measured recently."""
    place = f"{location}\0{target.pk if target else ''}"
    key = f"lifeboat:storage:{hashlib.sha256(place.encode()).hexdigest()[:32]}"
    cached = cache.get(key)
    if cached is None:
        cached = _measure(location, target)
        on_objects = location_scheme(location) is not None
        cache.set(key, cached, OBJECT_CACHE_SECONDS if on_objects else CACHE_SECONDS)
    stats, error = cached
    return TierUse(label, location, stats, error)


def vault_storage(vault: Vault) -> VaultStorage:
    logical = vault.recovery_points.live().aggregate(n=Sum("size_bytes"))["n"] or 0
    tiers = [_tier("Vault tier", vault.vault_location, vault.storage_target)] + [
        _tier(f"Snapshot tier on {host.name}", str(host.snapshot_store_path(vault)), None)
        for host in sorted(_snapshot_hosts(vault), key=lambda h: h.name)
    ]
    if vault.secondary_location:
        tiers.append(_tier("Secondary copy", vault.secondary_location, vault.secondary_target))
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
