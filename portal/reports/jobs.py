"""The jobs report and the overview's jobs chart: per day, how many jobs completed, completed
with warnings or failed, their success rate, duration and data read, changed and stored."""

from collections import defaultdict
from datetime import date
from typing import Any

from django.contrib.auth.models import User
from django.db.models import BigIntegerField, Count, DurationField, F, Q, QuerySet, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, TruncDate

from jobs.models import Job, Operation, Status
from portal.reports.charts import Chart, Series
from portal.reports.period import Period
from portal.reports.table import BYTES, COUNT, DATE, PERCENT, SECONDS, Column, Table
from vaults import access

# What the jobs chart counts by default: the work people asked for or scheduled. Periodic
# housekeeping (cleanup every hour, GC, reconcile's sweeps) would bury it.
DEFAULT_OPERATIONS = [Operation.BACKUP, Operation.TRANSFER, Operation.REPLICATE, Operation.RESTORE]
OUTCOMES = [
    (Status.COMPLETED, "Completed", "good"),
    (Status.COMPLETED_WITH_WARNINGS, "Completed with warnings", "warn"),
    (Status.FAILED, "Failed", "bad"),
]

COLUMNS = [
    Column("day", "Day", DATE),
    Column("completed", "Completed", COUNT),
    Column("completed_with_warnings", "Completed with warnings", COUNT),
    Column("failed", "Failed", COUNT),
    Column("cancelled", "Cancelled", COUNT),
    Column("success_rate", "Success rate (%)", PERCENT),
    Column("average_seconds", "Average duration (s)", SECONDS),
    Column("bytes_read", "Data read (bytes)", BYTES),
    Column("bytes_changed", "Data changed (bytes)", BYTES),
    Column("bytes_stored", "Data stored (bytes)", BYTES),
]


def _bytes(path: str) -> Cast:
    return Cast(KT(f"result__{path}"), BigIntegerField())


def finished_jobs(user: User, period: Period, operations: list[str]) -> QuerySet[Job]:
    """The user's visible jobs of these operations created within the period."""
    return access.visible(Job.objects.all(), user).filter(
        operation__in=operations,
        created_at__gte=period.start_at,
        created_at__lt=period.end_at,
    )


def job_days(user: User, period: Period, operations: list[str] | None = None) -> Table:
    """One row per day of the period (days without jobs included, as zeros), by the day each
    job was created. "Data stored" is what a backup added to the snapshot tier plus what a
    transfer copied into the vault tier."""
    operations = operations or list(DEFAULT_OPERATIONS)
    # Summed in the database per day and status: a month of a large fleet is tens of
    # thousands of jobs, and only a few hundred sums leave the database.
    timed = Q(started_at__isnull=False, ended_at__isnull=False) & ~Q(status=Status.CANCELLED)
    rows = (
        finished_jobs(user, period, operations)
        .order_by()
        .annotate(day=TruncDate("created_at"))
        .values("day", "status")
        .annotate(
            n=Count("pk"),
            read=Sum(_bytes("bytes_read")),
            changed=Sum(_bytes("bytes_changed")),
            stored=Sum(_bytes("bytes_stored")),
            copied=Sum(_bytes("transfer__bytes_copied")),
            timed=Count("pk", filter=timed),
            spent=Sum(F("ended_at") - F("started_at"), filter=timed, output_field=DurationField()),
        )
    )
    counts: dict[date, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    durations: dict[date, list[float]] = defaultdict(lambda: [0.0, 0])
    for r in rows:
        c = counts[r["day"]]
        c[r["status"]] += r["n"]
        c["bytes_read"] += r["read"] or 0
        c["bytes_changed"] += r["changed"] or 0
        c["bytes_stored"] += (r["stored"] or 0) + (r["copied"] or 0)
        if r["timed"]:
            totals = durations[r["day"]]
            totals[0] += r["spent"].total_seconds()
            totals[1] += r["timed"]
    table = Table(list(COLUMNS))
    for day in period.days:
        c = counts.get(day, {})
        done = c.get(Status.COMPLETED, 0) + c.get(Status.COMPLETED_WITH_WARNINGS, 0)
        judged = done + c.get(Status.FAILED, 0)
        seconds, timed_jobs = durations.get(day, [0.0, 0])
        table.rows.append(
            {
                "day": day,
                "completed": c.get(Status.COMPLETED, 0),
                "completed_with_warnings": c.get(Status.COMPLETED_WITH_WARNINGS, 0),
                "failed": c.get(Status.FAILED, 0),
                "cancelled": c.get(Status.CANCELLED, 0),
                "success_rate": round(100 * done / judged, 1) if judged else None,
                "average_seconds": round(seconds / timed_jobs, 1) if timed_jobs else None,
                "bytes_read": c.get("bytes_read", 0),
                "bytes_changed": c.get("bytes_changed", 0),
                "bytes_stored": c.get("bytes_stored", 0),
            }
        )
    return table


def outcome_chart(table: Table, chart_id: str, title: str) -> Chart:
    """Completed / with warnings / failed per day, stacked, from a `job_days` table."""
    return Chart(
        id=chart_id,
        title=title,
        kind="bars",
        labels=[_day_label(r["day"]) for r in table.rows],
        series=[
            Series(str(value), label, [r[str(value)] for r in table.rows], tone)
            for value, label, tone in OUTCOMES
        ],
    )


def data_chart(table: Table, chart_id: str) -> Chart:
    return Chart(
        id=chart_id,
        title="Data read, changed and stored per day",
        kind="lines",
        unit="bytes",
        labels=[_day_label(r["day"]) for r in table.rows],
        series=[
            Series("bytes_read", "Read", [r["bytes_read"] for r in table.rows], "neutral"),
            Series("bytes_changed", "Changed", [r["bytes_changed"] for r in table.rows], "busy"),
            Series("bytes_stored", "Stored", [r["bytes_stored"] for r in table.rows], "good"),
        ],
    )


def _day_label(day: date) -> str:
    return day.isoformat()
