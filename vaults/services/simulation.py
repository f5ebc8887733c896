"""Simulate a policy for a vault: the pure `policies.simulator` fed with what the catalog knows.

A draft (or an existing policy) is planned over the next months; storage is estimated from the
observed sizes of the items that use the policy (or of one named item); for a change from an
existing policy, every live scheduled recovery point of its items that would expire earlier is
listed with both dates (`expiring_earlier`: the same list a policy change's confirmation shows,
page and API dry run). Nothing is changed. Errors name their field (`policy.<field>`,
`months`, `item`, `name`).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone

from policies import simulator
from policies.models import BackupPolicy
from policies.retention import add_months
from policies.spec import validate_policy
from vaults.models import ProtectedVM, RecoveryPoint, RetentionMode, Vault

MAX_MONTHS = 24
# Recent backups an item's change rate is taken from (their median).
CHANGE_SAMPLE = 14


@dataclass(frozen=True)
class Observed:
    """What the items' history says: a full copy's bytes and a backup's changed bytes."""

    items: int
    full_bytes: int
    change_bytes: int


@dataclass(frozen=True)
class CutEntry:
    """A recovery point whose expiry a policy change moves earlier."""

    vm_name: str
    rp_id: str
    time: datetime
    expires_at: datetime | None
    new_expires_at: datetime
    # Its new expiry has passed: it goes to the recycle bin (or is deleted) when saved.
    expires_now: bool


@dataclass(frozen=True)
class Simulation:
    policy: dict[str, Any]
    start: datetime
    until: datetime
    points: list[simulator.PlannedPoint]
    observed: Observed
    peak: simulator.TierBytes
    at_end: simulator.TierBytes
    earlier: list[CutEntry]


def expiring_earlier(
    items: Iterable[ProtectedVM], policy: Mapping[str, Any], *, now: datetime | None = None
) -> list[CutEntry]:
    """Which live scheduled recovery points of `items` would expire earlier under `policy`,
    and when, soonest first; read only. The rules of `lifecycle.recompute_retention`:
    on-demand RPs keep their own date; the latest RP of each item and every RP of a
    retain-forever item are kept; an RP is its day's representative when it is in (or bound
    for) the vault tier; the new expiry is compared with the one stored."""
    now = now or timezone.now()
    rps = {
        rp.pk: rp
        for rp in RecoveryPoint.objects.live()
        .filter(protected_item__in=items)
        .exclude(protected_item__retention_mode=RetentionMode.RETAIN_FOREVER)
        .except_latest()
        .select_related("protected_item__vm")
        if not rp.is_on_demand
    }
    points = [
        simulator.ExistingPoint(
            pk,
            rp.slot or rp.time,
            is_daily_last=rp.in_vault_tier or rp.transfer_due,
            expires_at=rp.expires_at,
        )
        for pk, rp in rps.items()
    ]
    cut = [
        CutEntry(
            vm_name=rps[e.key].protected_item.vm.name,
            rp_id=str(e.key),
            time=rps[e.key].time,
            expires_at=e.expires_at,
            new_expires_at=e.new_expires_at,
            expires_now=e.new_expires_at <= now,
        )
        for e in simulator.expiring_earlier(policy, points)
    ]
    return sorted(cut, key=lambda c: (c.new_expires_at, c.vm_name, c.time))


def observed_sizes(items: list[ProtectedVM]) -> Observed:
    """Sum over the items of the latest RP's size and the median changed bytes per backup."""
    full = change = 0
    for item in items:
        rps = list(
            RecoveryPoint.objects.live()
            .filter(protected_item=item)
            .order_by("-time")[:CHANGE_SAMPLE]
        )
        if not rps:
            continue
        full += rps[0].size_bytes
        changed = [
            sum(int(d.get("bytes_changed", 0)) for d in rp.disks) for rp in rps if rp.parent_id
        ]
        change += int(statistics.median(changed)) if changed else 0
    return Observed(len(items), full, change)


def _draft(data: Any, base: BackupPolicy | None) -> dict[str, Any]:
    if data is None:
        if base is None:
            raise ValidationError({"policy": ["Give a policy or the name of an existing one."]})
        return base.representation()
    if isinstance(data, dict) and not data.get("name"):
        data = {**data, "name": "Draft"}  # a draft needs no name to be simulated
    cleaned, errors = validate_policy(data, ignore_keys=("protected_items",))
    if errors:
        raise ValidationError({f"policy.{key}": value for key, value in errors.items()})
    return cleaned


def simulate(
    vault: Vault,
    *,
    draft: Any = None,
    name: str | None = None,
    item: str | None = None,
    months: int = 3,
    now: datetime | None = None,
) -> Simulation:
    """Plan ``draft`` (or the policy ``name``) from ``now`` for ``months``; a change when both."""
    if isinstance(months, bool) or not isinstance(months, int) or not 1 <= months <= MAX_MONTHS:
        raise ValidationError({"months": [f"A whole number from 1 to {MAX_MONTHS}."]})
    base = None
    if name is not None:
        base = vault.policies.filter(name=name).first()
        if base is None:
            raise ValidationError({"name": [f"No policy named {name!r} in this vault."]})
    policy = _draft(draft, base)
    if item is not None:
        chosen = ProtectedVM.objects.live().filter(vault=vault, vm__name=item).first()
        if chosen is None:
            raise ValidationError({"item": [f"No protected item {item!r} in this vault."]})
        items = [chosen]
    else:
        items = list(base.protected_items.live()) if base else []
    now = now or timezone.now()
    until_wall = add_months(now.replace(tzinfo=None), months)
    until = until_wall.replace(tzinfo=now.tzinfo)
    points = simulator.plan(policy, now, until)
    seen = observed_sizes(items)
    sizes = {"full_bytes": seen.full_bytes, "change_bytes": seen.change_bytes}
    earlier: list[CutEntry] = []
    if base is not None and draft is not None:
        earlier = expiring_earlier(base.protected_items.live(), policy, now=now)
    return Simulation(
        policy=policy,
        start=now,
        until=until,
        points=points,
        observed=seen,
        peak=simulator.peak_storage(points, **sizes),
        at_end=simulator.storage(points, until, **sizes),
        earlier=earlier,
    )


def calendar_weeks(sim: Simulation) -> list[dict[str, Any]]:
    """The plan as a calendar: weeks (Monday first) of days with their points, for the page."""
    days = simulator.calendar(sim.policy, sim.points)
    if not days:
        return []
    first = min(days)
    first -= timedelta(days=first.weekday())
    last = max(days)
    weeks = []
    day = first
    while day <= last:
        week = []
        for _ in range(7):
            points = days.get(day, [])
            tags = sorted({tag for p in points for tag in p.tags}, key=_TAG_ORDER.index)
            week.append({"date": day, "points": points, "tags": tags})
            day += timedelta(days=1)
        weeks.append({"days": week})
    return weeks


_TAG_ORDER = ["daily", "weekly", "monthly", "yearly"]
