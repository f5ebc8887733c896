from django.utils import timezone
from rest_framework import serializers

from jobs.models import Job, Operation, Status, SubTask


class SubTaskSerializer(serializers.ModelSerializer):
    class Meta:
        model = SubTask
        fields = ["name", "status", "started_at", "ended_at", "bytes_done", "message"]
        read_only_fields = fields


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

    class Meta:
        model = Job
        fields = [
            "id",
            "operation",
            "status",
            "vm_name",
            "recovery_point",
            "created_by",
            "created_at",
            "started_at",
            "ended_at",
            "duration_seconds",
            "bytes_total",
            "bytes_done",
            "progress_percent",
            "throughput_bytes_per_second",
            "error_code",
            "error_message",
            "warnings",
        ]
        read_only_fields = fields

    def get_error_code(self, job) -> str | None:
        return job.error_code or None

    def get_duration_seconds(self, job) -> float | None:
        d = job.duration
        return d.total_seconds() if d is not None else None

    def get_throughput_bytes_per_second(self, job) -> int | None:
        """Bytes done over the time run so far (or in all, once finished)."""
        if job.started_at is None:
            return None
        seconds = ((job.ended_at or timezone.now()) - job.started_at).total_seconds()
        return int(job.bytes_done / seconds) if seconds > 0 else None


class JobDetailSerializer(JobSerializer):
    subtasks = SubTaskSerializer(many=True, read_only=True)

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "subtasks"]
        read_only_fields = fields


class CommaChoices(serializers.CharField):
    """`a,b` → ["a", "b"], each one of `choices`."""

    def __init__(self, choices, **kwargs):
        self.allowed = [c for c, _ in choices]
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        values = [v.strip() for v in super().to_internal_value(data).split(",") if v.strip()]
        bad = [v for v in values if v not in self.allowed]
        if bad:
            raise serializers.ValidationError(
                f"Unknown value {', '.join(bad)}; use {', '.join(self.allowed)}."
            )
        return values


class JobFilterSerializer(serializers.Serializer):
    status = CommaChoices(Status.choices, required=False, help_text="One or more, comma-separated.")
    operation = CommaChoices(
        Operation.choices, required=False, help_text="One or more, comma-separated."
    )
    vm = serializers.CharField(required=False, help_text="VM name.")
    since = serializers.DateTimeField(required=False, help_text="Created at or after (ISO 8601).")
