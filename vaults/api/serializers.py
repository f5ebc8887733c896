from rest_framework import serializers

from portal.api.serializers import StrictModelSerializer, StrictSerializer
from vaults import access
from vaults.models import (
    GuardApprover,
    ProtectedVM,
    RecoveryPoint,
    Role,
    Vault,
    VaultMembership,
)
from vaults.services import VAULT_SETTINGS


class HostIdsField(serializers.ListField):
    """Host ids in; the (prefetched) related manager out."""

    child = serializers.IntegerField()

    def to_representation(self, value):
        return sorted(h.pk for h in value.all())


class VaultSerializer(StrictModelSerializer):
    """A vault, its settings and what the caller may do in it.

    `role` is the caller's (site administrators count as owners) and `capabilities` maps
    every vault action to whether the caller may do it, so clients never test roles.
    """

    linked_hosts = HostIdsField(required=False)
    role = serializers.SerializerMethodField()
    capabilities = serializers.SerializerMethodField()

    class Meta:
        model = Vault
        fields = ["name", *VAULT_SETTINGS, "linked_hosts", "created_at", "role", "capabilities"]
        read_only_fields = ["name", "created_at"]

    def _user(self):
        return self.context["request"].user

    def get_role(self, vault) -> str | None:
        return access.role_of(self._user(), vault)

    def get_capabilities(self, vault) -> dict[str, bool]:
        return access.capabilities(self._user(), vault)


class VaultCreateSerializer(VaultSerializer):
    # The name rules (and uniqueness, case-insensitively) are checked by the service.
    name = serializers.CharField(max_length=50)

    class Meta(VaultSerializer.Meta):
        read_only_fields = ["created_at"]


class MembershipSerializer(StrictModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = VaultMembership
        fields = ["id", "user", "role", "created_at"]
        read_only_fields = ["id", "created_at"]


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

    def __init__(self, **kwargs):
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)


class BlankAsNullCharField(serializers.CharField):
    """Model text fields that are empty until set show as null (enums have no "" value)."""

    def to_representation(self, value):
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
            "created_at",
        ]
        read_only_fields = ["state", "last_backup_at", "created_at"]


class ProtectCreateSerializer(StrictSerializer):
    vm = serializers.IntegerField(help_text="VM id.")
    policy = serializers.CharField(help_text="Policy name in this vault.")
    included_luns = LunsField()
    excluded_luns = LunsField()


class RecoveryPointSerializer(serializers.ModelSerializer):
    type = serializers.CharField(read_only=True)
    parent = serializers.UUIDField(source="parent_id", read_only=True, allow_null=True)

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
            "in_snapshot_tier",
            "in_vault_tier",
            "snapshot_expires_at",
            "parent",
            "created_at",
        ]
        read_only_fields = fields
