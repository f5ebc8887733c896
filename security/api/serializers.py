from typing import Any

from rest_framework import serializers

from portal.api.filters import FilterSerializer
from portal.api.serializers import StrictSerializer
from security import alerts, keys
from security.models import Alert, AlertStatus, Approval, ApprovalStatus, CustomerKey, Severity
from vaults.models import AuditEvent

# -- approvals -------------------------------------------------------------------------------------


class ApprovalSerializer(serializers.ModelSerializer):
    vault = serializers.CharField(source="vault.name", read_only=True)
    status = serializers.SerializerMethodField()
    requested_by = serializers.CharField(source="requested_by_name", read_only=True)
    decided_by = serializers.CharField(
        source="decided_by.username", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = Approval
        fields = [
            "id",
            "vault",
            "operation",
            "summary",
            "reasons",
            "params",
            "status",
            "requested_by",
            "requested_at",
            "expires_at",
            "decided_by",
            "decided_at",
            "note",
            "executed_at",
            "error",
        ]
        read_only_fields = fields

    def get_status(self, approval: Approval) -> str:
        """pending, approved, rejected, expired or executed (a pending request past its
        expiry reads expired)."""
        return approval.current_status()


class ApprovalFilterSerializer(FilterSerializer):
    status = serializers.ChoiceField(
        choices=ApprovalStatus.choices,
        required=False,
        help_text="A pending request past its expiry counts as expired.",
    )


class DecisionSerializer(StrictSerializer):
    note = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    # Approving: a fresh code from the approver's second factor, when they have one.
    otp = serializers.CharField(max_length=32, required=False, allow_blank=True, default="")


class ApprovalPendingSerializer(serializers.Serializer):
    """The answer to a critical operation while MUA is on (202): nothing changed yet."""

    approval = serializers.IntegerField()
    status = serializers.ChoiceField(choices=ApprovalStatus.choices)
    detail = serializers.CharField()


# -- keys -------------------------------------------------------------------------------------------


class KeySerializer(serializers.ModelSerializer):
    """A customer-managed key as site administrators see it (the key itself is never shown)."""

    created_by = serializers.CharField(
        source="created_by.username", read_only=True, allow_null=True, default=None
    )
    vaults = serializers.SerializerMethodField()
    problem = serializers.SerializerMethodField()

    class Meta:
        model = CustomerKey
        fields = [
            "name",
            "path",
            "fingerprint",
            "enabled",
            "version",
            "rotated_at",
            "created_by",
            "created_at",
            "vaults",
            "problem",
        ]
        read_only_fields = fields

    def get_vaults(self, key: CustomerKey) -> list[dict[str, Any]]:
        """Vaults using the key; `version` below the key's means its re-wrap is pending."""
        return [
            {"vault": a.vault.name, "version": a.version}
            for a in sorted(key.assignments.all(), key=lambda a: a.vault.name)
        ]

    def get_problem(self, key: CustomerKey) -> str:
        """Why the key cannot be used now (disabled, file missing or different); "" if usable."""
        return keys.key_problem(key)


class KeyPublicSerializer(serializers.ModelSerializer):
    """What vault contributors see when they choose a key: no server paths."""

    class Meta:
        model = CustomerKey
        fields = ["name", "enabled", "version"]
        read_only_fields = fields


class KeyCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=50)
    path = serializers.CharField(max_length=500, help_text="Absolute path of the key file.")


class KeyUpdateSerializer(StrictSerializer):
    enabled = serializers.BooleanField(
        help_text="false disables the key: backups and restores of its vaults fail."
    )


class KeyRotateSerializer(StrictSerializer):
    path = serializers.CharField(max_length=500, help_text="Absolute path of the new key file.")


class KeyRotateResultSerializer(serializers.Serializer):
    key = KeySerializer()
    jobs = serializers.ListField(child=serializers.IntegerField())


# -- alerts ----------------------------------------------------------------------------------------------


class AlertSerializer(serializers.ModelSerializer):
    title = serializers.SerializerMethodField()
    severity = serializers.ChoiceField(choices=Severity.choices, read_only=True)
    status = serializers.ChoiceField(choices=AlertStatus.choices, read_only=True)
    acknowledged_by = serializers.CharField(
        source="acknowledged_by.username", read_only=True, allow_null=True, default=None
    )
    resolved_by = serializers.CharField(
        source="resolved_by.username", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = Alert
        fields = [
            "id",
            "severity",
            "kind",
            "title",
            "status",
            "message",
            "object_type",
            "object_id",
            "object_repr",
            "occurrences",
            "created_at",
            "last_seen_at",
            "acknowledged_by",
            "acknowledged_at",
            "resolved_by",
            "resolved_at",
        ]
        read_only_fields = fields

    def get_title(self, alert: Alert) -> str:
        return alerts.title(alert.kind)


class AlertFilterSerializer(FilterSerializer):
    status = serializers.ChoiceField(choices=AlertStatus.choices, required=False)
    severity = serializers.ChoiceField(choices=Severity.choices, required=False)
    kind = serializers.ChoiceField(
        choices=sorted({**alerts.SECURITY_KINDS, **alerts.JOB_KINDS}.items()), required=False
    )


class AlertSettingsSerializer(StrictSerializer):
    job_alerts = serializers.BooleanField(
        help_text="Sev-1 job alerts (backup and restore failures). Security alerts (Sev 0) "
        "cannot be turned off."
    )


class AlertCountSerializer(serializers.Serializer):
    active = serializers.IntegerField()


# -- audit --------------------------------------------------------------------------------------------------


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_name", read_only=True)
    vault = serializers.CharField(source="vault_name", read_only=True)

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "time",
            "actor",
            "action",
            "vault",
            "object_type",
            "object_id",
            "object_repr",
            "before",
            "after",
            "source_ip",
        ]
        read_only_fields = fields
