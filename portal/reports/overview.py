"""What the overview shows: item health, jobs of the last 7 and 30 days, storage per vault,
the failures of the last 24 hours, approvals waiting for this user and active alerts."""

from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import User
from django.utils import timezone

from jobs.models import Job, Status
from portal.reports import items, jobs, usage
from portal.reports.charts import Chart
from portal.reports.period import Period, last_days
from portal.reports.table import Table
from security.models import Alert, AlertStatus, Approval, ApprovalStatus
from vaults import access

RECENT_FAILURES = 20
ALERTS_SHOWN = 10


@dataclass
class Overview:
    health: dict[str, int]
    jobs_7: Table
    jobs_30: Table
    charts: list[Chart]  # jobs of 7 days, jobs of 30 days
    storage: list[usage.VaultTrend]
    storage_period: Period
    failed: list[Job]
    approvals: list[Approval]
    alerts: list[Alert]
    alert_count: int


def overview(user: User) -> Overview:
    now = timezone.now()
    month = last_days(30)
    jobs_30 = jobs.job_days(user, month)
    jobs_7 = Table(jobs_30.columns, jobs_30.rows[-7:])
    failed = list(
        access.visible(Job.objects.all(), user)
        # A vault's jobs: site jobs (a storage target's Test) answer on their own page.
        .filter(status=Status.FAILED, created_at__gte=now - timedelta(hours=24))
        .exclude(vault=None)
        .select_related("vault")
        .order_by("-created_at", "-id")[:RECENT_FAILURES]
    )
    approvals = list(
        Approval.objects.filter(
            vault__in=access.approvable_vault_ids(user),
            status=ApprovalStatus.PENDING,
            expires_at__gt=now,
        )
        .select_related("vault")
        .order_by("-requested_at", "-id")
    )
    active = access.visible(Alert.objects.all(), user).filter(status=AlertStatus.ACTIVE)
    return Overview(
        health=items.health_counts(user),
        jobs_7=jobs_7,
        jobs_30=jobs_30,
        charts=[
            jobs.outcome_chart(jobs_7, "jobs-7", "Jobs of the last 7 days"),
            jobs.outcome_chart(jobs_30, "jobs-30", "Jobs of the last 30 days"),
        ],
        storage=usage.vault_trends(user, month),
        storage_period=month,
        failed=failed,
        approvals=approvals,
        alerts=list(active.select_related("vault").order_by("-created_at", "-id")[:ALERTS_SHOWN]),
        alert_count=active.count(),
    )
