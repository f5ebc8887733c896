"""The usage report (per vault or per VM and day) and the overview's storage per vault: logical
size protected against bytes stored, the dedup ratio, a trend and a "full by" estimate.

All of it reads the recorded history (`vaults.usage`): a day without a row is a gap, never a
guess.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.contrib.auth.models import User

from portal.reports.charts import BYTES, Chart, Series, linear_trend
from portal.reports.period import Period
from portal.reports.table import BYTES as BYTES_COLUMN
from portal.reports.table import COUNT, DATE, RATIO, TEXT, Column, Table
from vaults import access
from vaults.models import ItemState, ItemUsage, Vault, VaultUsage

BY_VAULT = "vault"
BY_VM = "vm"

VAULT_COLUMNS = [
    Column("day", "Day", DATE),
    Column("vault", "Vault", TEXT),
    Column("protected_items", "Protected items", COUNT),
    Column("recovery_points", "Recovery points", COUNT),
    Column("logical_bytes", "Logical size (bytes)", BYTES_COLUMN),
    Column("vault_stored_bytes", "Stored in the vault tier (bytes)", BYTES_COLUMN),
    Column("stored_bytes", "Stored on all tiers (bytes)", BYTES_COLUMN),
    Column("dedup_ratio", "Dedup ratio", RATIO),
    Column("free_bytes", "Free space of the vault store (bytes)", BYTES_COLUMN),
]
# By VM: one row per VM over the period (a row per VM and day would be a fleet times the
# days: the history of one VM is its first and last recorded day and the change between).
VM_COLUMNS = [
    Column("vault", "Vault", TEXT),
    Column("vm", "VM", TEXT),
    Column("state", "State", TEXT),
    Column("first_day", "First recorded day", DATE),
    Column("last_day", "Last recorded day", DATE),
    Column("days", "Days recorded", COUNT),
    Column("recovery_points", "Recovery points", COUNT),
    Column("logical_bytes", "Logical size (bytes)", BYTES_COLUMN),
    Column("first_stored_bytes", "Added by its backups, first day (bytes)", BYTES_COLUMN),
    Column("stored_bytes", "Added by its backups (bytes)", BYTES_COLUMN),
    Column("stored_change", "Change in the period (bytes)", BYTES_COLUMN),
]


def vault_rows(user: User, period: Period) -> list[VaultUsage]:
    return list(
        access.visible(VaultUsage.objects.all(), user)
        .filter(day__gte=period.start, day__lte=period.end)
        .select_related("vault")
        .order_by("day", "vault__name")
    )


def _vault_row(u: VaultUsage) -> dict[str, object]:
    known = u.stats_known
    return {
        "day": u.day,
        "vault": u.vault.name,
        "protected_items": u.protected_items,
        "recovery_points": u.recovery_points,
        "logical_bytes": u.logical_bytes,
        # Object storage is not walked: unknown, not zero.
        "vault_stored_bytes": u.vault_stored_bytes if known else None,
        "stored_bytes": u.stored_bytes if known else None,
        "dedup_ratio": round(u.dedup_ratio, 4) if known and u.dedup_ratio else None,
        "free_bytes": u.free_bytes,
    }


def usage_table(user: User, period: Period, by: str = BY_VAULT) -> Table:
    if by == BY_VM:
        return Table(list(VM_COLUMNS), _vm_rows(user, period))
    return Table(list(VAULT_COLUMNS), [_vault_row(u) for u in vault_rows(user, period)])


def _vm_rows(user: User, period: Period) -> list[dict[str, Any]]:
    """One row per VM (and vault: a VM moved between vaults has a row in each) over its
    recorded days of the period; the last day's figures, and the change since the first."""
    rows = (
        access.visible(ItemUsage.objects.all(), user)
        .filter(day__gte=period.start, day__lte=period.end)
        .order_by("vault__name", "vm_name", "day")
        .values_list(
            "vault__name",
            "vm_name",
            "day",
            "state",
            "recovery_points",
            "logical_bytes",
            "stored_bytes",
        )
    )
    out: list[dict[str, Any]] = []
    for vault, vm, day, state, rps, logical, stored in rows:
        last = out[-1] if out else None
        if last is None or (last["vault"], last["vm"]) != (vault, vm):
            last = {
                "vault": vault,
                "vm": vm,
                "first_day": day,
                "days": 0,
                "first_stored_bytes": stored,
            }
            out.append(last)
        last.update(
            state=ItemState(state).label,
            last_day=day,
            days=last["days"] + 1,
            recovery_points=rps,
            logical_bytes=logical,
            stored_bytes=stored,
            stored_change=stored - last["first_stored_bytes"],
        )
    return out


def usage_charts(user: User, period: Period) -> list[Chart]:
    """Totals over the visible vaults per day: sizes, and protected items."""
    per_day: dict[date, list[int]] = defaultdict(lambda: [0, 0, 0])
    for u in vault_rows(user, period):
        t = per_day[u.day]
        t[0] += u.logical_bytes
        t[1] += u.vault_stored_bytes if u.stats_known else 0
        t[2] += u.protected_items
    labels = [d.isoformat() for d in period.days]

    def values(i: int) -> list[float | None]:
        return [per_day[d][i] if d in per_day else None for d in period.days]

    return [
        Chart(
            id="usage-size",
            title="Logical size protected and bytes stored in the vault tier",
            kind="lines",
            unit=BYTES,
            labels=labels,
            series=[
                Series("logical_bytes", "Logical size", values(0), "neutral"),
                Series("vault_stored_bytes", "Stored", values(1), "good"),
            ],
        ),
        Chart(
            id="usage-items",
            title="Protected items",
            kind="bars",
            labels=labels,
            series=[Series("protected_items", "Protected items", values(2), "busy")],
        ),
    ]


# -- the overview's storage per vault -------------------------------------------------------------


@dataclass
class VaultTrend:
    vault: Vault
    latest: VaultUsage | None
    chart: Chart
    growth_per_day: float | None  # bytes per day of the vault tier, least squares
    full_by: date | None
    outlook: str  # what the overview says about running out of space


def vault_trends(user: User, period: Period) -> list[VaultTrend]:
    """Per visible vault: its recorded days in the period as a chart, the vault tier's growth
    and, when the store's free space is known and it grows, the day it would be full."""
    by_vault: dict[int, list[VaultUsage]] = defaultdict(list)
    for u in vault_rows(user, period):
        by_vault[u.vault_id].append(u)
    vaults = list(access.visible(Vault.objects.all(), user).order_by("name"))
    return [_trend(v, by_vault.get(v.pk, []), period) for v in vaults]


def _trend(vault: Vault, rows: list[VaultUsage], period: Period) -> VaultTrend:
    latest = rows[-1] if rows else None
    known = [u for u in rows if u.stats_known]
    fit = linear_trend(
        [float((u.day - period.start).days) for u in known],
        [float(u.vault_stored_bytes) for u in known],
    )
    slope = fit[0] if fit else None
    full_by = None
    if latest is None:
        outlook = "No usage recorded yet."
    elif latest.free_bytes is None:
        outlook = "Free space unknown: the vault store is object storage, which has no fixed size."
    elif not latest.stats_known:
        outlook = "The vault store could not be measured."
    elif fit is None:
        outlook = "A trend needs two recorded days."
    elif slope is not None and slope > 0:
        days_left = latest.free_bytes / slope
        full_by = latest.day + timedelta(days=min(int(days_left), 365 * 100))
        outlook = f"Full by {full_by.isoformat()} at this rate."
    else:
        outlook = "Not growing: no full date."
    by_day = {u.day: u for u in rows}
    labels = [d.isoformat() for d in period.days]
    series = [
        Series(
            "logical_bytes",
            "Logical size",
            [by_day[d].logical_bytes if d in by_day else None for d in period.days],
            "neutral",
        ),
        Series(
            "vault_stored_bytes",
            "Stored",
            [
                by_day[d].vault_stored_bytes if d in by_day and by_day[d].stats_known else None
                for d in period.days
            ],
            "good",
        ),
    ]
    if fit is not None and known:
        first = (known[0].day - period.start).days
        series.append(
            Series(
                "trend",
                "Trend of stored",
                [
                    max(0.0, fit[0] * i + fit[1]) if i >= first else None
                    for i in range(len(period.days))
                ],
                "muted",
                dashed=True,
            )
        )
    chart = Chart(
        id=f"storage-{vault.name}",
        title=f"Storage of vault {vault.name}",
        kind="lines",
        unit=BYTES,
        labels=labels,
        series=series,
    )
    return VaultTrend(vault, latest, chart, slope, full_by, outlook)
