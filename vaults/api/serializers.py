from datetime import date, datetime
from typing import Any

from django.db.models import Manager
from django.utils.dateparse import parse_date
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from inventory.models import Host
from jobs.models import RestoreKind, RestoreTier
from portal.api.serializers import UNKNOWN, StrictModelSerializer, StrictSerializer
from vaults import access
from vaults.access import AnyUser
from vaults.models import (
    FileRecoverySession,
    GuardApprover,
    ProtectedVM,
    RecoveryPoint,
    Role,
    RPType,
    StorageTarget,
    Vault,
    VaultMembership,
)
from vaults.services.vaults import VAULT_SETTINGS
from vaults.stores import immutability_enforcement


class HostIdsField(serializers.ListField):
    """Host ids in; the (prefetched) related manager out."""

    child = serializers.IntegerField()

    # The stubs' ListField shows lists; this one shows the hosts of a related manager.
    def to_representation(self, value: "Manager[Host]") -> list[int]:  # type: ignore[override]
        return sorted(h.pk for h in value.all())


class EncryptionKeyField(serializers.CharField):
    """The name of the vault's customer-managed key, read from its assignment."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(source="*", **kwargs)

    # A CharField of the whole vault (source="*"), shown as its key's name or null.
    def to_representation(self, vault: Vault) -> str | None:  # type: ignore[override]
        # Views select_related("key_assignment__key"), so this reads no row per vault.
        assignment = getattr(vault, "key_assignment", None)
        return assignment.key.name if assignment is not None else None

    def validate_empty_values(self, data: Any) -> tuple[bool, Any]:
        # null (a GET body sent back for a platform-key vault) names no key: no change.
        if data is None:
            return True, {"encryption_key": None}
        return super().validate_empty_values(data)

    def to_internal_value(self, data: Any) -> dict[str, str]:  # type: ignore[override]
        return {"encryption_key": super().to_internal_value(data)}


class VaultSerializer(StrictModelSerializer):
    """A vault, its settings and what the caller may do in it.

    `role` is the caller's (site administrators count as owners) and `capabilities` maps
    every vault action to whether the caller may do it, so clients never test roles.
    """

    linked_hosts = HostIdsField(required=False)
    # Object-storage locations name their target (site administrators set both).
    storage_target = serializers.SlugRelatedField(
        slug_field="name",
        queryset=StorageTarget.objects.all(),
        required=False,
        allow_null=True,
        help_text="The storage target of an s3:// or az:// store_location (its name).",
    )
    secondary_target = serializers.SlugRelatedField(
        slug_field="name",
        queryset=StorageTarget.objects.all(),
        required=False,
        allow_null=True,
        help_text="The storage target of an s3:// or az:// secondary_location (its name).",
    )
    immutability_enforcement = serializers.SerializerMethodField(
        help_text="Who enforces locked immutability: the store (S3 Object Lock) or Lifeboat."
    )
    # The customer-managed key's name (null: the platform key); see security.keys.
    encryption_key = EncryptionKeyField(required=False)
    role = serializers.SerializerMethodField()
    capabilities = serializers.SerializerMethodField()

    class Meta:
        model = Vault
        fields = [
            "name",
            *VAULT_SETTINGS,
            "encryption_key",
            "linked_hosts",
            "immutability_enforcement",
            "accounted_at",
            "secondary_stored_bytes",
            "secondary_accounted_at",
            "created_at",
            "role",
            "capabilities",
        ]
        read_only_fields = [
            "name",
            "accounted_at",
            "secondary_stored_bytes",
            "secondary_accounted_at",
            "created_at",
        ]

    def _user(self) -> AnyUser:
        user: AnyUser = self.context["request"].user
        return user

    def get_immutability_enforcement(self, vault: Vault) -> str | None:
        return immutability_enforcement(vault)

    def get_role(self, vault: Vault) -> str | None:
        return access.role_of(self._user(), vault)

    def get_capabilities(self, vault: Vault) -> dict[str, bool]:
        return access.capabilities(self._user(), vault)


class VaultCreateSerializer(VaultSerializer):
    # The name rules (and uniqueness, case-insensitively) are checked by the service.
    name = serializers.CharField(max_length=50)

    class Meta(VaultSerializer.Meta):
        read_only_fields = [
            "accounted_at",
            "secondary_stored_bytes",
            "secondary_accounted_at",
            "created_at",
        ]


class MembershipSerializer(StrictModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True)
    mapped_from = serializers.CharField(
        read_only=True,
        help_text="The directory group (directory:group) whose mapping grants this role; "
        "such a membership changes only with the mapping. Empty: a local membership.",
    )

    class Meta:
        model = VaultMembership
        fields = ["id", "user", "role", "mapped_from", "created_at"]
        read_only_fields = ["id", "mapped_from", "created_at"]


class MembershipCreateSerializer(StrictSerializer):
    user = serializers.CharField(help_text="Username.")
    role = serializers.ChoiceField(choices=Role.choices)


class GuardApproverSerializer(StrictModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True)
    assigned_by = serializers.CharField(
        source="assigned_by.username", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = GuardApprover
        fields = ["id", "user", "assigned_by", "created_at"]
        read_only_fields = fields


class GuardApproverCreateSerializer(StrictSerializer):
    user = serializers.CharField(help_text="Username.")


class LunsField(serializers.ListField):
    child = serializers.IntegerField()

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)


class BlankAsNullCharField(serializers.CharField):
    """Model text fields that are empty until set show as null (enums have no "" value)."""

    # Shown as null where the stubs' CharField shows text.
    def to_representation(self, value: str) -> str | None:  # type: ignore[override]
        return value or None


class ProtectedItemSerializer(StrictModelSerializer):
    vm = serializers.IntegerField(source="vm_id", read_only=True)
    vm_name = serializers.CharField(source="vm.name", read_only=True)
    # Policies are named in the API; str(policy) is its name.
    policy = serializers.CharField(required=False)
    included_luns = LunsField()
    excluded_luns = LunsField()
    last_backup_status = BlankAsNullCharField(read_only=True, allow_null=True)
    retention_mode = BlankAsNullCharField(read_only=True, allow_null=True)
    recovery_points = serializers.IntegerField(source="rp_count", read_only=True)

    class Meta:
        model = ProtectedVM
        fields = [
            "vm",
            "vm_name",
            "policy",
            "state",
            "included_luns",
            "excluded_luns",
            "last_backup_at",
            "last_backup_status",
            "retention_mode",
            "recovery_points",
            "unique_bytes",
            "shared_bytes",
            "created_at",
        ]
        read_only_fields = [
            "state",
            "last_backup_at",
            "unique_bytes",
            "shared_bytes",
            "created_at",
        ]


class ProtectCreateSerializer(StrictSerializer):
    vm = serializers.IntegerField(help_text="VM id.")
    policy = serializers.CharField(help_text="Policy name in this vault.")
    included_luns = LunsField()
    excluded_luns = LunsField()


class TiersSerializer(serializers.Serializer):
    snapshot = serializers.BooleanField(source="in_snapshot_tier")
    vault = serializers.BooleanField(source="in_vault_tier")


class RecoveryPointSerializer(serializers.ModelSerializer):
    type = serializers.ChoiceField(choices=RPType.choices, read_only=True)
    # The API's `parent` field; DRF moves declared fields off the class, so it never shadows
    # Field.parent, which the stubs cannot tell.
    parent = serializers.UUIDField(  # type: ignore[assignment]
        source="parent_id", read_only=True, allow_null=True
    )
    tiers = TiersSerializer(source="*", read_only=True)

    class Meta:
        model = RecoveryPoint
        fields = [
            "id",
            "time",
            "type",
            "consistency",
            "expires_at",
            "retain_until",
            "tags",
            "disks",
            "included_luns",
            "excluded_luns",
            "size_bytes",
            "unique_bytes",
            "shared_bytes",
            "secondary_unique_bytes",
            "tiers",
            "in_snapshot_tier",
            "in_vault_tier",
            "transfer_due",
            "snapshot_expires_at",
            "replication",
            "replicated_at",
            "replication_error",
            "verification",
            "verified_at",
            "drill",
            "anomaly",
            "signal",
            "parent",
            "created_at",
        ]
        read_only_fields = fields


# -- actions on protected items and recovery points ------------------------------------------


@extend_schema_field(OpenApiTypes.STR)
class DateOrDateTimeField(serializers.Field):
    """An ISO date (`2030-01-31`: kept through that whole day) or an ISO datetime."""

    default_error_messages = {
        "invalid": "Give an ISO date (YYYY-MM-DD) or datetime (YYYY-MM-DDThh:mm:ssZ).",
    }

    def to_internal_value(self, data: Any) -> date | datetime:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            day = parse_date(data) if len(data) == 10 else None
        except ValueError:  # well formed, but no such day
            self.fail("invalid")
        if day is not None:
            return day
        try:
            return serializers.DateTimeField().to_internal_value(data)
        except serializers.ValidationError:
            self.fail("invalid")

    def to_representation(self, value: date | datetime) -> str:
        return value.isoformat()


class BackupNowSerializer(StrictSerializer):
    retain_until = DateOrDateTimeField(
        required=False,
        help_text="Keep the backup until this date (through the whole day) or time; "
        "default 30 days.",
    )


class RestoreTargetSerializer(serializers.Serializer):
    """Where restored disks go (schema only; the restore service checks every value)."""

    host = serializers.IntegerField(help_text="Id of a host linked to the vault.")
    path = serializers.CharField(help_text="An existing directory inside the host's roots.")
    name = serializers.CharField(required=False, help_text="create_vm: the new VM's name.")
    format = serializers.ChoiceField(
        choices=["qcow2", "raw"],
        required=False,
        help_text="libvirt hosts: the restored files' format (default qcow2, which libvirt "
        "can track changes of; image hosts take raw only).",
    )
    start = serializers.BooleanField(
        required=False, help_text="create_vm on a libvirt host: start the new domain."
    )


TARGET_KEYS = ("host", "path", "name", "format", "start")


@extend_schema_field(RestoreTargetSerializer(allow_null=True))
class RestoreTargetField(serializers.JSONField):
    """A JSON object with `host`, `path` and (create_vm) `name`; other keys are refused as
    `target.<key>`, the way the restore service names the keys it checks."""

    # A JSON object or null (never a list, which the stubs' JSONField also allows).
    def to_internal_value(self, data: Any) -> dict[str, Any] | None:  # type: ignore[override]
        if data is None:
            return None
        if not isinstance(data, dict):
            raise serializers.ValidationError('Give {"host": <id>, "path": "<directory>"}.')
        return data


class DrillSerializer(StrictSerializer):
    tier = serializers.ChoiceField(
        choices=[RestoreTier.AUTO, RestoreTier.VAULT, RestoreTier.SNAPSHOT],
        required=False,
        default=RestoreTier.AUTO,
        help_text="auto: the vault tier, or the snapshot tier while the recovery point has not "
        "reached the vault tier.",
    )


class RestoreSerializer(StrictSerializer):
    kind = serializers.ChoiceField(choices=RestoreKind.values)
    luns = serializers.ListField(
        child=serializers.IntegerField(),
        required=False,
        allow_null=True,
        help_text="Disks to restore; default every disk of the recovery point.",
    )
    tier = serializers.ChoiceField(
        choices=[t for t in RestoreTier.values if t != RestoreTier.SECONDARY],
        required=False,
        default=RestoreTier.AUTO,
    )
    # DRF's metaclass takes declared fields off the class, so `source` shadows nothing.
    source = serializers.ChoiceField(  # type: ignore[assignment]
        choices=["primary", "secondary"],
        required=False,
        default="primary",
        help_text="secondary: read the vault's second copy (replicated recovery points only); "
        "works while the primary stores are unreachable.",
    )
    target = RestoreTargetField(
        required=False,
        allow_null=True,
        help_text="restore_disks, create_vm: where to write; replace_disks: none.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        target = attrs.get("target")
        if isinstance(target, dict):
            unknown = sorted(set(target) - set(TARGET_KEYS))
            if unknown:
                raise serializers.ValidationError({f"target.{k}": [UNKNOWN] for k in unknown})
        return attrs


class FileRecoverySessionSerializer(serializers.ModelSerializer):
    recovery_point = serializers.UUIDField(source="recovery_point_id", read_only=True)
    is_open = serializers.SerializerMethodField()

    class Meta:
        model = FileRecoverySession
        fields = ["id", "recovery_point", "created_at", "expires_at", "ended_at", "is_open"]
        read_only_fields = fields

    def get_is_open(self, session: FileRecoverySession) -> bool:
        return session.is_open()


class FileQuerySerializer(serializers.Serializer):
    """Query parameters of the file listing and download (schema; the service checks them)."""

    disk = serializers.IntegerField(help_text="LUN of a disk in the recovery point.")
    partition = serializers.IntegerField(
        required=False, help_text="Partition index; omit for a whole-disk file system."
    )
    path = serializers.CharField(required=False, help_text="Absolute path; default /.")


class PartitionSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    start = serializers.IntegerField()
    length = serializers.IntegerField()
    description = serializers.CharField()
    fs_type = serializers.CharField(allow_null=True)
    scheme = serializers.CharField()


class FileEntrySerializer(serializers.Serializer):
    name = serializers.CharField()
    path = serializers.CharField()
    kind = serializers.CharField(help_text="file, dir, symlink or other.")
    size = serializers.IntegerField()
    mtime = serializers.DateTimeField(allow_null=True)
    mode = serializers.IntegerField(help_text="POSIX mode: file-type and permission bits.")
    target = serializers.CharField(allow_null=True, help_text="A symlink's target.")


class DirectoryListingSerializer(serializers.Serializer):
    disk = serializers.IntegerField()
    partition = serializers.IntegerField(allow_null=True)
    path = serializers.CharField()
    partitions = PartitionSerializer(many=True)
    entries = FileEntrySerializer(many=True)
