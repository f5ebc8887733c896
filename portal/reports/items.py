"""The backup items report: every live protected item the user sees, its health, its last
(successful) backup, and its backups within the period; also the overview's health counts."""

from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Count, DateTimeField, Max, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.urls import reverse

from jobs.models import Job, Operation, Status
from portal.reports.charts import Chart, Series
from portal.reports.period import Period
from portal.reports.table import BYTES, COUNT, MOMENT, TEXT, Column, Table
from vaults import access
from vaults.models import (
    Health,
    ItemState,
    ProtectedVM,
    RecoveryPoint,
    health_filter,
    health_of,
)

HEALTH_TONES = {
    Health.PROTECTED: "good",
    Health.WARNING: "warn",
    Health.FAILED: "bad",
    Health.INITIAL_BACKUP_PENDING: "busy",
    Health.STOPPED: "muted",
}

COLUMNS = [
    Column("vault", "Vault", TEXT),
    Column("vm", "VM", TEXT, link="url"),
    Column("host", "Host", TEXT),
    Column("policy", "Policy", TEXT),
    Column("health", "Health", TEXT),
    Column("last_backup_at", "Last backup", MOMENT),
    Column("last_backup_status", "Last backup status", TEXT),
    Column("last_success_at", "Last successful backup", MOMENT),
    Column("recovery_points", "Recovery points", COUNT),
    Column("latest_size", "Latest recovery point size (bytes)", BYTES),
    Column("backups_succeeded", "Backups succeeded in the period", COUNT),
    Column("backups_failed", "Backups failed in the period", COUNT),
]


def health_counts(user: User) -> dict[str, int]:
    """Live items the user sees per `Health` (every health present, zeros included)."""
    items = access.visible(ProtectedVM.objects.live(), user)
    rows = items.order_by().values_list("state", "last_backup_status").annotate(n=Count("pk"))
    counts = {h.value: 0 for h in Health}
    for state, status, n in rows:
        health = health_of(state, status)
        if health is not None:
            counts[health] += n
    return counts


def last_success() -> Subquery:
    """The time of an item's newest recovery point (a backup that succeeded far enough to
    leave one), for `OuterRef("pk")` items."""
    newest = RecoveryPoint.objects.filter(protected_item=OuterRef("pk")).order_by("-time")
    return Subquery(newest.values("time")[:1], output_field=DateTimeField())


def items_in(user: User, period: Period) -> QuerySet[ProtectedVM]:
    """Live items the user sees that existed before the period ended."""
    return access.visible(ProtectedVM.objects.live(), user).filter(created_at__lt=period.end_at)


def _backup_counts(items: QuerySet[ProtectedVM], period: Period) -> dict[int, tuple[int, int]]:
    """item id → (backups succeeded, failed) in the period, in one grouped query (a count per
    item as a correlated subquery scans every item's jobs once per item)."""
    ok = Q(status=Status.COMPLETED) | Q(status=Status.COMPLETED_WITH_WARNINGS)
    rows = (
        Job.objects.filter(
            protected_item__in=items.values("pk"),
            operation=Operation.BACKUP,
            created_at__gte=period.start_at,
            created_at__lt=period.end_at,
        )
        .order_by()
        .values("protected_item")
        .annotate(ok=Count("pk", filter=ok), failed=Count("pk", filter=Q(status=Status.FAILED)))
    )
    return {r["protected_item"]: (r["ok"], r["failed"]) for r in rows}


def _rp_figures(items: QuerySet[ProtectedVM]) -> dict[int, tuple[int, datetime | None]]:
    """item id → (live recovery points, time of the newest one ever), in one grouped query."""
    rows = (
        RecoveryPoint.objects.filter(protected_item__in=items.values("pk"))
        .order_by()
        .values("protected_item")
        .annotate(live=Count("pk", filter=Q(soft_deleted_at=None)), newest=Max("time"))
    )
    return {r["protected_item"]: (r["live"], r["newest"]) for r in rows}


def items_table(user: User, period: Period, health: str | None = None) -> Table:
    chosen = items_in(user, period)
    if health:
        chosen = chosen.filter(health_filter(health))
    newest_live = (
        RecoveryPoint.objects.live().filter(protected_item=OuterRef("pk")).order_by("-time", "-pk")
    )
    items = (
        chosen.select_related("vault", "vm", "vm__host", "policy")
        .annotate(latest_size=Coalesce(Subquery(newest_live.values("size_bytes")[:1]), 0))
        .order_by("vault__name", "vm__name")
    )
    backups = _backup_counts(chosen, period)
    rps = _rp_figures(chosen)
    statuses = dict(Status.choices)
    rows: list[dict[str, Any]] = []
    for item in items:
        h = health_of(item.state, item.last_backup_status)
        succeeded, failed = backups.get(item.pk, (0, 0))
        live, newest = rps.get(item.pk, (0, None))
        rows.append(
            {
                "vault": item.vault.name,
                "vm": item.vm.name,
                "url": reverse("item-detail", args=[item.vault.name, item.vm.name]),
                "host": item.vm.host.name,
                "policy": item.policy.name,
                "health": Health(h).label if h else ItemState(item.state).label,
                "last_backup_at": item.last_backup_at,
                "last_backup_status": statuses.get(item.last_backup_status, "")
                if item.last_backup_status
                else "",
                "last_success_at": newest,
                "recovery_points": live,
                "latest_size": item.latest_size,
                "backups_succeeded": succeeded,
                "backups_failed": failed,
            }
        )
    return Table(list(COLUMNS), rows)


def health_chart(counts: dict[str, int], chart_id: str = "items-health") -> Chart:
    return Chart(
        id=chart_id,
        title="Protected items by health",
        kind="bars",
        labels=[Health(h).label for h in counts],
        series=[
            Series(
                "items",
                "Protected items",
                [float(n) for n in counts.values()],
                tones=[HEALTH_TONES[Health(h)] for h in counts],
            )
        ],
    )
