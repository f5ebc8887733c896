"""The daily usage history: one row per vault and per protected item and day.

`record_day` is the periodic task's work (`jobs.tasks.record_usage`). It writes today's rows
from what exists now (the catalog and `vaults.storage`'s store statistics), rewriting them on
each run of the same day, so running it twice changes nothing but the figures' freshness. It
never writes a day other than today: a past nobody recorded stays empty.
"""

import shutil
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from vaults.models import ItemUsage, ProtectedVM, Vault, VaultUsage
from vaults.storage import vault_storage


@dataclass(frozen=True)
class Space:
    free: int
    capacity: int


def store_space(vault: Vault) -> Space | None:
    """Free space of the file system holding a local vault store (its nearest existing
    folder, before the first backup creates it); None for object storage, whose free space
    nobody can tell."""
    if not vault.store_is_local:
        return None
    path = vault.store_path
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        usage = shutil.disk_usage(Path(path))
    except OSError:
        return None
    return Space(free=usage.free, capacity=usage.total)


def _item_figures(vault: Vault) -> dict[int, tuple[int, int, int]]:
    """item id → (recovery points, logical bytes, stored bytes) over its live RPs."""
    figures: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    rows = vault.recovery_points.live().values_list("protected_item_id", "size_bytes", "disks")
    for item_id, size, disks in rows:
        f = figures[item_id]
        f[0] += 1
        f[1] += size
        f[2] += sum(int(d.get("bytes_stored") or 0) for d in disks or [])
    return {k: (v[0], v[1], v[2]) for k, v in figures.items()}


def record_vault(vault: Vault, now: datetime) -> VaultUsage:
    day = timezone.localdate(now)
    storage = vault_storage(vault)
    space = store_space(vault)
    vault_tier = storage.vault_tier
    items = list(vault.protected_items.live().select_related("vm"))
    figures = _item_figures(vault)
    # Upserts on the one-row-per-day constraints: two workers running the schedule's message
    # at once both write, and the later figures stand (no duplicate, no IntegrityError).
    vault_fields = {
        "logical_bytes": storage.logical_bytes,
        "stored_bytes": storage.stored_bytes,
        "vault_stored_bytes": vault_tier.stored_bytes,
        "referenced_bytes": vault_tier.referenced_bytes,
        "unique_bytes": vault_tier.unique_bytes,
        # Object stores are measured too where the web process can read them; a tier
        # that could not be measured says so (its figures are zeros that mean unknown).
        "stats_known": not storage.tiers[0].error,
        "free_bytes": space.free if space else None,
        "capacity_bytes": space.capacity if space else None,
        "recovery_points": sum(f[0] for f in figures.values()),
        "protected_items": len(items),
        "recorded_at": now,
    }
    item_rows = []
    for item in items:
        count, logical, stored = figures.get(item.pk, (0, 0, 0))
        item_rows.append(
            ItemUsage(
                vault=vault,
                protected_item=item,
                day=day,
                vm_name=item.vm.name,
                state=item.state,
                logical_bytes=logical,
                stored_bytes=stored,
                recovery_points=count,
                recorded_at=now,
            )
        )
    with transaction.atomic():
        VaultUsage.objects.bulk_create(
            [VaultUsage(vault=vault, day=day, **vault_fields)],
            update_conflicts=True,
            unique_fields=["vault", "day"],
            update_fields=list(vault_fields),
        )
        ItemUsage.objects.bulk_create(
            item_rows,
            update_conflicts=True,
            unique_fields=["protected_item", "day"],
            update_fields=[
                "vm_name",
                "state",
                "logical_bytes",
                "stored_bytes",
                "recovery_points",
                "recorded_at",
            ],
        )
    row = VaultUsage.objects.get(vault=vault, day=day)
    return row


def record_day(now: datetime | None = None) -> dict[str, int]:
    """Today's usage rows of every vault and its live items (rewritten if already there)."""
    now = now or timezone.now()
    vaults = list(Vault.objects.all())
    for vault in vaults:
        record_vault(vault, now)
    items = ProtectedVM.objects.live().filter(vault__in=vaults).count()
    return {"vaults": len(vaults), "items": items}
