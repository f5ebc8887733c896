"""Jobs: the truth about every unit of work. django-q2 only delivers them."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models

from vaults.models import ScopedQuerySet


class Operation(models.TextChoices):
    BACKUP = "backup", "Backup"
    TRANSFER = "transfer", "Transfer"
    REPLICATE = "replicate", "Replicate"
    RESTORE = "restore", "Restore"
    CONFIGURE_BACKUP = "configure_backup", "Configure backup"
    DISABLE_BACKUP = "disable_backup", "Disable backup"
    DELETE_BACKUP_DATA = "delete_backup_data", "Delete backup data"
    UNDELETE = "undelete", "Undelete"
    PURGE = "purge", "Purge"
    CLEANUP = "cleanup", "Cleanup"
    VERIFY = "verify", "Verify"
    GARBAGE_COLLECT = "garbage_collect", "Garbage collect"
    UPDATE_KEY = "update_key", "Update key"
    EXTEND_LOCKS = "extend_locks", "Extend locks"
    TEST_TARGET = "test_target", "Test storage target"
    DRILL = "drill", "Restore drill"


class Status(models.TextChoices):
    QUEUED = "queued", "Queued"
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    COMPLETED_WITH_WARNINGS = "completed_with_warnings", "Completed with warnings"
    FAILED = "failed", "Failed"
    CANCELLING = "cancelling", "Cancelling"
    CANCELLED = "cancelled", "Cancelled"


FINISHED = {Status.COMPLETED, Status.COMPLETED_WITH_WARNINGS, Status.FAILED, Status.CANCELLED}
# Not finished yet: waiting for a worker, or held by one.
UNFINISHED = [Status.QUEUED, Status.IN_PROGRESS, Status.CANCELLING]
# Held by a worker (its heartbeat runs; only it, or the reaper, finishes the job).
RUNNING = [Status.IN_PROGRESS, Status.CANCELLING]

# Operations done in the catalog at once: their job row only records them and is never
# delivered to a worker, so no handler runs them.
RECORD_ONLY = {Operation.CONFIGURE_BACKUP, Operation.DISABLE_BACKUP, Operation.UNDELETE}


class RestoreKind(models.TextChoices):
    RESTORE_DISKS = "restore_disks", "Restore disks"
    CREATE_VM = "create_vm", "Create new VM"
    REPLACE_DISKS = "replace_disks", "Replace existing disks"


class RestoreTier(models.TextChoices):
    AUTO = "auto", "Automatic (snapshot tier when it still holds the point)"
    SNAPSHOT = "snapshot", "Snapshot tier"
    VAULT = "vault", "Vault tier"
    # The vault's second copy (a restore with "source": "secondary"); never chosen by AUTO.
    SECONDARY = "secondary", "Secondary copy"


class Param:
    """Keys of `Job.params` that a job's code reads back: one name each, so whoever queues a
    job and whoever runs it agree."""

    # backup: an on-demand backup ("backup now") kept until RETAIN_UNTIL, or a scheduled one of
    # SLOT (retention judges the slot's day); REPAIR: validate the backup extension again.
    ON_DEMAND = "on_demand"
    RETAIN_UNTIL = "retain_until"
    SLOT = "slot"
    REPAIR = "repair"
    # transfer and restore: the recovery point's id.
    RP = "rp"
    # restore: what (RestoreKind), from where (RestoreTier), which disks, onto which host, the
    # target directory, the disk files by LUN and a new VM's name.
    KIND = "kind"
    TIER = "tier"
    LUNS = "luns"
    HOST = "host"
    PATH = "path"
    FILES = "files"
    NAME = "name"
    # restore: each file's format by LUN ("raw", or "qcow2" for libvirt hosts) and whether a
    # new libvirt domain is started.
    FORMATS = "formats"
    START = "start"
    # cleanup: the instant expiry is judged at (drills and tests); purge: only this item.
    NOW = "now"
    ITEM = "item"
    # garbage_collect: also sweep unreferenced chunks written up to this instant.
    SWEEP_BEFORE = "sweep_before"
    # extend_locks: the recovery points whose expiry moved later.
    RPS = "rps"
    # test_target: the storage target (id) and the location opened with its credentials.
    TARGET = "target"
    LOCATION = "location"


class Job(models.Model):
    vault = models.ForeignKey(
        "vaults.Vault", null=True, blank=True, on_delete=models.CASCADE, related_name="jobs"
    )
    protected_item = models.ForeignKey(
        "vaults.ProtectedVM", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    recovery_point = models.ForeignKey(
        "vaults.RecoveryPoint",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="jobs",
    )
    # Kept as text so the job reads the same after its item is gone.
    vm_name = models.CharField(max_length=63, blank=True)
    operation = models.CharField(max_length=20, choices=Operation)
    status = models.CharField(max_length=24, choices=Status, default=Status.QUEUED)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # Messages sent to the task queue for this job, and when the last one went (None: at
    # creation). The reaper re-sends the message of a queued job that no worker holds.
    deliveries = models.PositiveSmallIntegerField(default=1)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # Written by the running worker; the reaper fails jobs whose heartbeat stopped.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # The task queue its last message went to (`jobs.routing.queue_of`), who claimed it
    # ("<queue> on <machine> pid <n>"), and, while it waits for a host's worker that is
    # offline, why it has not started (cleared when claimed).
    queue = models.CharField(max_length=80, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    waiting_message = models.CharField(max_length=300, blank=True)
    bytes_total = models.BigIntegerField(default=0)
    bytes_done = models.BigIntegerField(default=0)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)
    # The name of the VM a create-VM restore will register. An unfinished job holds it, so a
    # second restore cannot write disks for the same name; finishing (in any way, the
    # reaper's included) releases it, and a completed job has created the VM by then.
    reserved_vm_name = models.CharField(max_length=63, blank=True)

    objects = ScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The jobs tab and API: one vault's jobs, newest first.
            models.Index(fields=["vault", "-created_at"], name="job_vault_created"),
            # The dispatcher and reaper: unfinished jobs by status.
            models.Index(fields=["status"], name="job_status"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["reserved_vm_name"],
                condition=models.Q(status__in=UNFINISHED) & ~models.Q(reserved_vm_name=""),
                name="job_one_unfinished_reservation_per_vm_name",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_operation_display()} {self.vm_name} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    @property
    def progress_percent(self) -> int:
        """The overall percentage: `jobs.progress` keeps one that only moves forward across a
        job's phases; a job without one shows its bytes done."""
        if self.is_finished and self.status != Status.FAILED:
            return 100
        progress = (self.result or {}).get("progress") or {}
        if "percent" in progress:
            return min(100, int(progress["percent"]))
        if not self.bytes_total:
            return 0
        return min(100, int(self.bytes_done * 100 / self.bytes_total))

    @property
    def duration(self) -> timedelta | None:
        if self.started_at and self.ended_at:
            return self.ended_at - self.started_at
        return None


def vm_name_holder(name: str) -> Job | None:
    """The unfinished create-VM restore that holds `name`, if any."""
    return Job.objects.filter(reserved_vm_name=name, status__in=UNFINISHED).first()


# A worker whose heartbeat is older than this is offline (pages, API, waiting jobs).
WORKER_ONLINE_WITHIN = timedelta(seconds=30)


class WorkerQuerySet(models.QuerySet["Worker"]):
    def online(self, now: datetime) -> "WorkerQuerySet":
        return self.filter(seen_at__gte=now - WORKER_ONLINE_WITHIN, stopped_at=None)


class Worker(models.Model):
    """A running (or once running) `manage.py worker` process: the queue it serves and its
    heartbeat, written every few seconds while its cluster runs."""

    queue = models.CharField(max_length=80)
    # The host whose queue it serves; None for the default worker.
    host = models.ForeignKey(
        "inventory.Host", null=True, blank=True, on_delete=models.CASCADE, related_name="workers"
    )
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField()
    # Set when it stopped on request: offline at once, not WORKER_ONLINE_WITHIN later.
    stopped_at = models.DateTimeField(null=True, blank=True)

    objects = WorkerQuerySet.as_manager()

    class Meta:
        ordering = ["queue", "hostname", "pid"]
        indexes = [
            # Is the worker of this queue online, and since when is it not.
            models.Index(fields=["queue", "-seen_at"], name="worker_queue_seen"),
        ]

    def __str__(self) -> str:
        return f"{self.queue} on {self.hostname} pid {self.pid}"

    def is_online(self, now: datetime) -> bool:
        return self.stopped_at is None and self.seen_at >= now - WORKER_ONLINE_WITHIN


class SubTask(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="subtasks")
    order = models.PositiveSmallIntegerField(default=0)
    name = models.CharField(max_length=60)
    status = models.CharField(max_length=24, choices=Status, default=Status.QUEUED)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    bytes_done = models.BigIntegerField(default=0)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["job", "order"]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"
