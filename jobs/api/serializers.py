import re
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from jobs import hook_details
from jobs.models import Job, Operation, Status, SubTask
from portal.api.filters import CommaChoices, FilterSerializer, MomentField

# Parameter keys whose values are never shown (a key file, a passphrase, a token...).
SECRET_KEY_RE = re.compile(r"secret|password|passphrase|token|credential|key", re.IGNORECASE)
REDACTED = "********"


def without_secrets(value: Any) -> Any:
    """`params` as shown to readers: values under secret-looking keys are masked."""
    if isinstance(value, dict):
        return {
            k: REDACTED if SECRET_KEY_RE.search(str(k)) else without_secrets(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [without_secrets(v) for v in value]
    return value


class DiskProgressSerializer(serializers.Serializer):
    lun = serializers.IntegerField()
    done = serializers.IntegerField()
    total = serializers.IntegerField()


class ProgressSerializer(serializers.Serializer):
    phase = serializers.CharField(help_text="snapshot, transfer, restore or safety.")
    disks = DiskProgressSerializer(many=True)


class WarningSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class SubTaskSerializer(serializers.ModelSerializer):
    class Meta:
        model = SubTask
        fields = ["name", "status", "started_at", "ended_at", "bytes_done", "message"]
        read_only_fields = fields


class BackupDiskSerializer(serializers.Serializer):
    """One disk of a backup job's result (schema only)."""

    lun = serializers.IntegerField()
    size = serializers.IntegerField()
    target = serializers.CharField(required=False)
    change_detection = serializers.CharField()
    change_reason = serializers.CharField(required=False)
    bytes_read = serializers.IntegerField()
    bytes_changed = serializers.IntegerField()
    bytes_stored = serializers.IntegerField()


class JobSerializer(serializers.ModelSerializer):
    error_code = serializers.SerializerMethodField()
    progress_percent = serializers.IntegerField(read_only=True)
    duration_seconds = serializers.SerializerMethodField()
    throughput_bytes_per_second = serializers.SerializerMethodField()
    recovery_point = serializers.UUIDField(
        source="recovery_point_id", read_only=True, allow_null=True
    )
    created_by = serializers.CharField(
        source="created_by.username", read_only=True, allow_null=True, default=None
    )
    params = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    throughput = serializers.SerializerMethodField()
    eta_seconds = serializers.SerializerMethodField()
    bytes_read = serializers.SerializerMethodField()
    bytes_changed = serializers.SerializerMethodField()
    bytes_stored = serializers.SerializerMethodField()
    consistency = serializers.SerializerMethodField()
    snapshot_method = serializers.SerializerMethodField()
    freeze_seconds = serializers.SerializerMethodField()
    transfer = serializers.SerializerMethodField()
    disks = serializers.SerializerMethodField()
    error_message = serializers.SerializerMethodField()
    warnings = serializers.SerializerMethodField()
    waiting_message = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id",
            "operation",
            "status",
            "waiting_message",
            "queue",
            "worker",
            "vm_name",
            "recovery_point",
            "created_by",
            "created_at",
            "started_at",
            "ended_at",
            "duration_seconds",
            "params",
            "progress",
            "bytes_total",
            "bytes_done",
            "progress_percent",
            "bytes_read",
            "bytes_changed",
            "bytes_stored",
            "throughput",
            "throughput_bytes_per_second",
            "eta_seconds",
            "consistency",
            "snapshot_method",
            "freeze_seconds",
            "transfer",
            "disks",
            "error_code",
            "error_message",
            "warnings",
        ]
        read_only_fields = fields

    def get_waiting_message(self, job: Job) -> str | None:
        """Why a queued job has not started: its host's worker is offline."""
        return job.waiting_message or None if job.status == Status.QUEUED else None

    def get_error_code(self, job: Job) -> str | None:
        return job.error_code or None

    def get_duration_seconds(self, job: Job) -> float | None:
        d = job.duration
        return d.total_seconds() if d is not None else None

    def get_throughput_bytes_per_second(self, job: Job) -> int | None:
        """Bytes done over the time run so far (or in all, once finished)."""
        if job.started_at is None:
            return None
        seconds = ((job.ended_at or timezone.now()) - job.started_at).total_seconds()
        return int(job.bytes_done / seconds) if seconds > 0 else None

    def get_throughput(self, job: Job) -> int | None:
        """Bytes per second (the same as `throughput_bytes_per_second`)."""
        return self.get_throughput_bytes_per_second(job)

    def get_eta_seconds(self, job: Job) -> int | None:
        """Seconds left at the current throughput, while the job runs and its size is known."""
        if job.status != Status.IN_PROGRESS or not job.bytes_total:
            return None
        rate = self.get_throughput_bytes_per_second(job)
        if not rate:
            return None
        return max(0, round((job.bytes_total - job.bytes_done) / rate))

    def get_params(self, job: Job) -> dict:
        """What the job was asked to do; secret-looking values are masked."""
        return without_secrets(job.params or {})

    @extend_schema_field(ProgressSerializer(allow_null=True))
    def get_progress(self, job: Job) -> dict | None:
        """The current phase and each disk's bytes done of its size, while known."""
        return (job.result or {}).get("progress")

    def _result(self, job: Job, key: str) -> Any:
        return (job.result or {}).get(key)

    def get_bytes_read(self, job: Job) -> int | None:
        return self._result(job, "bytes_read")

    def get_bytes_changed(self, job: Job) -> int | None:
        return self._result(job, "bytes_changed")

    def get_bytes_stored(self, job: Job) -> int | None:
        return self._result(job, "bytes_stored")

    def get_consistency(self, job: Job) -> str | None:
        """application, file_system or crash (backups, once the snapshot is taken)."""
        return self._result(job, "consistency")

    def get_snapshot_method(self, job: Job) -> str | None:
        return self._result(job, "snapshot_method")

    def get_freeze_seconds(self, job: Job) -> float | None:
        return self._result(job, "freeze_seconds")

    @extend_schema_field(serializers.DictField(allow_null=True))
    def get_transfer(self, job: Job) -> dict | None:
        """The vault transfer's counters (chunks and bytes copied), once it ran."""
        return self._result(job, "transfer")

    @extend_schema_field(BackupDiskSerializer(many=True, allow_null=True))
    def get_disks(self, job: Job) -> list | None:
        """Backups: per disk, how its changes were found (`change_detection`: dirty_bitmap,
        full_read, full, or the engine's words for image disks) and, when not by the dirty
        bitmap on a libvirt disk, why (`change_reason`), with bytes read, changed, stored."""
        return self._result(job, "disks")

    @property
    def _hook_details(self) -> bool:
        """Set by the views from `view_hook_details`; without it, hook details stay hidden."""
        return bool(self.context.get("hook_details"))

    def get_error_message(self, job: Job) -> str:
        return hook_details.message(job.error_code, job.error_message, details=self._hook_details)

    @extend_schema_field(WarningSerializer(many=True))
    def get_warnings(self, job: Job) -> list:
        """Hook problems name their scripts and quote their output to operators and above."""
        return hook_details.warnings(job.warnings or [], details=self._hook_details)


class JobDetailSerializer(JobSerializer):
    subtasks = SubTaskSerializer(many=True, read_only=True)

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "subtasks"]
        read_only_fields = fields


class JobFilterSerializer(FilterSerializer):
    status = CommaChoices(Status.choices, required=False, help_text="One or more, comma-separated.")
    operation = CommaChoices(
        Operation.choices, required=False, help_text="One or more, comma-separated."
    )
    vm = serializers.CharField(required=False, help_text="VM name.")
    since = MomentField(required=False, help_text="Created at or after: an ISO date or date-time.")
