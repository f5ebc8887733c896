"""The Prometheus metrics of `/metrics`: read from the catalog at each scrape.

Every value is computed from the database when Prometheus asks (no counters kept in the web
processes, so every gunicorn worker answers the same and a restart loses nothing):

| metric | labels | what |
|---|---|---|
| `lifeboat_jobs` | operation, status | jobs in the catalog |
| `lifeboat_job_duration_seconds` (summary) | operation, status | finished backups and restores: count and total seconds |
| `lifeboat_job_bytes_total` | operation, status | bytes those jobs moved |
| `lifeboat_recovery_points` | vault | live recovery points (outside the recycle bin) |
| `lifeboat_vault_logical_bytes` | vault | disk bytes the live recovery points describe |
| `lifeboat_vault_stored_bytes` | vault, tier | bytes in each local store (object storage is not walked) |
| `lifeboat_item_seconds_since_last_backup` | vault, item | since the last successful backup (never backed up: since protection began) |
| `lifeboat_item_backup_allowed_seconds` | vault, item | how long the policy allows: since its latest slot `BACKUP_GRACE_MINUTES` ago |
| `lifeboat_alerts_active` | vault, severity | active alerts |
| `lifeboat_queue_workers_online` | queue | online workers of the default queue and of each dedicated host |
| `lifeboat_worker_last_heartbeat_seconds` | queue, hostname, pid | since each worker's heartbeat |
| `lifeboat_queue_oldest_message_seconds` | queue | the oldest waiting message's wait |

Items whose schedule runs (protected, initial backup pending, protection error) get the two
item metrics; stopped and deleted items have no deadline.
"""

from collections.abc import Iterator
from datetime import datetime, timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Q, Sum
from django.utils import timezone
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from inventory.models import Host
from jobs import queue, routing, workers
from jobs.models import Job, Operation, Status
from policies import schedule
from portal.options import option
from security.models import Alert, AlertStatus
from vaults.models import ItemState, ProtectedVM, RecoveryPoint, Vault
from vaults.storage import vault_storage

TIMED = (Operation.BACKUP, Operation.RESTORE)
SUCCEEDED = (Status.COMPLETED, Status.COMPLETED_WITH_WARNINGS)
SCHEDULED_STATES = (
    ItemState.PROTECTED,
    ItemState.INITIAL_BACKUP_PENDING,
    ItemState.PROTECTION_ERROR,
)


def _jobs() -> Iterator[Metric]:
    counts = GaugeMetricFamily(
        "lifeboat_jobs", "Jobs in the catalog.", labels=["operation", "status"]
    )
    for operation, status, n in (
        Job.objects.order_by().values_list("operation", "status").annotate(n=Count("pk"))
    ):
        counts.add_metric([operation, status], n)
    yield counts
    durations = SummaryMetricFamily(
        "lifeboat_job_duration_seconds",
        "Finished backups and restores: how many and their total duration.",
        labels=["operation", "status"],
    )
    moved = CounterMetricFamily(
        "lifeboat_job_bytes",
        "Bytes moved by finished backups and restores.",
        labels=["operation", "status"],
    )
    took = ExpressionWrapper(F("ended_at") - F("started_at"), output_field=DurationField())
    rows = (
        Job.objects.filter(operation__in=TIMED, started_at__isnull=False, ended_at__isnull=False)
        .order_by()
        .values_list("operation", "status")
        .annotate(n=Count("pk"), seconds=Sum(took), moved=Sum("bytes_done"))
    )
    for operation, status, n, seconds, total in rows:
        spent = seconds.total_seconds() if isinstance(seconds, timedelta) else 0.0
        durations.add_metric([operation, status], count_value=n, sum_value=spent)
        moved.add_metric([operation, status], total or 0)
    yield durations
    yield moved


def _vaults() -> Iterator[Metric]:
    points = GaugeMetricFamily(
        "lifeboat_recovery_points", "Live recovery points.", labels=["vault"]
    )
    logical = GaugeMetricFamily(
        "lifeboat_vault_logical_bytes",
        "Disk bytes described by the live recovery points.",
        labels=["vault"],
    )
    stored = GaugeMetricFamily(
        "lifeboat_vault_stored_bytes",
        "Bytes stored in each local store of the vault (cached for a minute).",
        labels=["vault", "tier"],
    )
    live = dict(
        RecoveryPoint.objects.live()
        .order_by()
        .values_list("vault_id")
        .annotate(n=Count("pk"))
        .values_list("vault_id", "n")
    )
    for vault in Vault.objects.order_by("name"):
        points.add_metric([vault.name], live.get(vault.pk, 0))
        use = vault_storage(vault)
        logical.add_metric([vault.name], use.logical_bytes)
        for tier in use.tiers:
            if "://" not in tier.path:
                stored.add_metric([vault.name, tier.label], tier.stats.stored_bytes)
    yield points
    yield logical
    yield stored


def _items(now: datetime) -> Iterator[Metric]:
    since = GaugeMetricFamily(
        "lifeboat_item_seconds_since_last_backup",
        "Seconds since the item's last successful backup (or since its protection began).",
        labels=["vault", "item"],
    )
    allowed = GaugeMetricFamily(
        "lifeboat_item_backup_allowed_seconds",
        "Seconds the item's policy allows since its last successful backup at this moment.",
        labels=["vault", "item"],
    )
    items = (
        ProtectedVM.objects.filter(state__in=SCHEDULED_STATES)
        .select_related("vault", "vm", "policy")
        .annotate(
            last_success=Max(
                "jobs__ended_at",
                filter=Q(jobs__operation=Operation.BACKUP, jobs__status__in=SUCCEEDED),
            )
        )
        .order_by("vault__name", "vm__name")
    )
    grace = timedelta(minutes=option("BACKUP_GRACE_MINUTES", 120))
    deadlines: dict[int, datetime] = {}
    for item in items:
        labels = [item.vault.name, item.vm.name]
        last = item.last_success or item.created_at
        since.add_metric(labels, max(0.0, (now - last).total_seconds()))
        # The latest slot whose backup should have finished by now: a success after it is
        # in time, none since is overdue.
        if item.policy_id not in deadlines:
            deadlines[item.policy_id] = schedule.previous_run(
                item.policy.representation(), now - grace
            )
        allowed.add_metric(labels, max(0.0, (now - deadlines[item.policy_id]).total_seconds()))
    yield since
    yield allowed


def _alerts() -> Iterator[Metric]:
    active = GaugeMetricFamily(
        "lifeboat_alerts_active", "Active alerts.", labels=["vault", "severity"]
    )
    for vault, severity, n in (
        Alert.objects.filter(status=AlertStatus.ACTIVE)
        .order_by()
        .values_list("vault__name", "severity")
        .annotate(n=Count("pk"))
    ):
        active.add_metric([vault, severity], n)
    yield active


def _workers(now: datetime) -> Iterator[Metric]:
    online = GaugeMetricFamily(
        "lifeboat_queue_workers_online",
        "Online workers serving each queue: the default one and each dedicated host's.",
        labels=["queue"],
    )
    seen = GaugeMetricFamily(
        "lifeboat_worker_last_heartbeat_seconds",
        "Seconds since each worker process's heartbeat.",
        labels=["queue", "hostname", "pid"],
    )
    queues = {routing.DEFAULT_QUEUE: 0}
    for host in Host.objects.filter(dedicated_worker=True):
        queues[routing.host_queue(host.name)] = 0
    for listed in workers.listed(now):
        row = listed.row
        seen.add_metric(
            [row.queue, row.hostname, str(row.pid)], max(0.0, (now - row.seen_at).total_seconds())
        )
        if listed.online:
            queues[row.queue] = queues.get(row.queue, 0) + 1
    for name, n in sorted(queues.items()):
        online.add_metric([name], n)
    yield online
    yield seen
    waiting = GaugeMetricFamily(
        "lifeboat_queue_oldest_message_seconds",
        "Seconds the oldest waiting message of each queue has waited.",
        labels=["queue"],
    )
    for name, oldest in sorted(queue.oldest_waiting().items()):
        waiting.add_metric([name], max(0.0, (now - oldest).total_seconds()))
    yield waiting


class CatalogCollector(Collector):
    """Everything above, read at each scrape."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        yield from _jobs()
        yield from _vaults()
        yield from _items(now)
        yield from _alerts()
        yield from _workers(now)


def registry() -> CollectorRegistry:
    """A registry of Lifeboat's metrics alone (no process metrics of one web worker, which
    would differ from scrape to scrape as the balancer picks workers)."""
    found = CollectorRegistry(auto_describe=False)
    found.register(CatalogCollector())
    return found
