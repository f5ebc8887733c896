from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from inventory.models import Host, OSType, PowerState, VirtualMachine
from jobs import hook_details, workers
from portal.api.serializers import StrictModelSerializer, StrictSerializer


class WorkerStatusSerializer(serializers.Serializer):
    online = serializers.BooleanField()
    last_seen = serializers.DateTimeField(allow_null=True)
    status = serializers.CharField(help_text='"online", or "offline (last seen … ago)".')


class HostListSerializer(serializers.ListSerializer):
    def to_representation(self, data: Any) -> list[Any]:
        # The workers of every listed host in one query (HostSerializer.get_worker reads it).
        hosts = list(data.all() if hasattr(data, "all") else data)
        self.context["worker_statuses"] = workers.statuses(hosts)
        return super().to_representation(hosts)


class HostSerializer(StrictModelSerializer):
    allowed_roots = serializers.ListField(child=serializers.CharField(max_length=500))
    worker = serializers.SerializerMethodField(
        help_text="The host's own worker (`manage.py worker --host <name>`); null without "
        "`dedicated_worker`."
    )

    class Meta:
        model = Host
        fields = [
            "id",
            "name",
            "connector",
            "libvirt_uri",
            "snapshot_root",
            "allowed_roots",
            "dedicated_worker",
            "worker",
            "created_at",
        ]
        read_only_fields = ["id", "created_at"]
        list_serializer_class = HostListSerializer
        # Name rules and uniqueness are checked by the service (model validation).
        extra_kwargs: dict[str, dict[str, object]] = {"name": {"validators": []}}

    @extend_schema_field(WorkerStatusSerializer(allow_null=True))
    def get_worker(self, host: Host) -> dict[str, Any] | None:
        known = self.context.get("worker_statuses")
        status = known.get(host.pk) if known is not None else workers.status_of(host)
        if status is None:
            return None
        return {"online": status.online, "last_seen": status.last_seen, "status": status.describe()}


class DiskSerializer(StrictSerializer):
    # `size` is read from the file; a client may send it back, it is ignored.
    ignore_read_only = True

    lun = serializers.IntegerField(min_value=-1, max_value=63, help_text="-1 is the OS disk.")
    path = serializers.CharField(max_length=500)
    size = serializers.IntegerField(read_only=True)
    # libvirt disks, as discovery found them: the device in the domain and the image format.
    target = serializers.CharField(read_only=True)
    format = serializers.CharField(read_only=True)


# The extension's hook configuration: shown with `view_hook_details` only (as is the VM's
# power probe command, another command run on the host).
HOOK_FIELDS = (
    "pre_script",
    "pre_script_params",
    "post_script",
    "post_script_params",
    "freeze_command",
    "thaw_command",
)


class BlankAsNullCharField(serializers.CharField):
    # Shows an empty code as null: a representation CharField's own type does not allow.
    def to_representation(self, value: str) -> str | None:  # type: ignore[override]
        return value or None


class ExtensionSerializer(StrictSerializer):
    """The backup extension: its state (read-only) and its consistency-hook configuration.

    Scripts, their parameters and the freeze/thaw commands are shown to site administrators
    and to operators and above of a vault that protects the VM; to anybody else they are left
    out, and `message` says in general words what `code` means."""

    ignore_read_only = True

    state = serializers.CharField(source="extension_state", read_only=True)
    code = BlankAsNullCharField(source="extension_code", read_only=True, allow_null=True)
    message = serializers.CharField(source="extension_message", read_only=True)
    pre_script = serializers.CharField(max_length=500, allow_blank=True, required=False)
    pre_script_params = serializers.ListField(
        child=serializers.CharField(allow_blank=True), required=False
    )
    post_script = serializers.CharField(max_length=500, allow_blank=True, required=False)
    post_script_params = serializers.ListField(
        child=serializers.CharField(allow_blank=True), required=False
    )
    script_timeout = serializers.IntegerField(min_value=1, max_value=1800, required=False)
    script_retries = serializers.IntegerField(min_value=0, max_value=5, required=False)
    continue_on_failure = serializers.BooleanField(required=False)
    freeze_enabled = serializers.BooleanField(required=False)
    freeze_command = serializers.CharField(max_length=1000, allow_blank=True, required=False)
    thaw_command = serializers.CharField(max_length=1000, allow_blank=True, required=False)
    freeze_timeout = serializers.IntegerField(min_value=1, max_value=600, required=False)


class VmSerializer(StrictSerializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(max_length=63)
    host = serializers.IntegerField(source="host_id", help_text="Host id.")
    os_type = serializers.ChoiceField(choices=OSType.choices, required=False)
    power_state = serializers.ChoiceField(choices=PowerState.choices, required=False)
    power_probe_command = serializers.CharField(max_length=1000, allow_blank=True, required=False)
    # Keys sent inside `extension` change one by one; the others stay as they are.
    extension = ExtensionSerializer(source="*", required=False)
    disks = DiskSerializer(many=True, help_text="Exactly one OS disk (lun -1).")
    # libvirt hosts: set by discovery.
    domain_uuid = serializers.CharField(read_only=True)
    vanished_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="The domain is gone from its host."
    )
    discovery_changes = serializers.ListField(
        child=serializers.DictField(), read_only=True, help_text="What the last discovery changed."
    )
    created_at = serializers.DateTimeField(read_only=True)

    def to_representation(self, vm: VirtualMachine) -> dict[str, Any]:
        data = super().to_representation(vm)
        # Set by the views from access.hook_detail_vm_ids (None: every VM); absent: none.
        shown = self.context.get("hook_vm_ids", set())
        if shown is not None and vm.pk not in shown:
            data.pop("power_probe_command", None)
            extension = data["extension"]
            for name in HOOK_FIELDS:
                extension.pop(name, None)
            extension["message"] = hook_details.message(
                vm.extension_code, vm.extension_message, details=False
            )
        return data


class HostInfoSerializer(serializers.Serializer):
    """What "Test connection" found."""

    uri = serializers.CharField()
    hostname = serializers.CharField()
    libvirt_version = serializers.CharField()
    hypervisor_version = serializers.CharField()


class DiscoveredDiskSerializer(serializers.Serializer):
    target = serializers.CharField()
    path = serializers.CharField()
    format = serializers.CharField()
    virtual_size = serializers.IntegerField()
    lun = serializers.IntegerField()


class ChangeSerializer(serializers.Serializer):
    change = serializers.ChoiceField(
        choices=[
            "disk_added",
            "disk_removed",
            "disk_resized",
            "disk_replaced",
            "vanished",
            "returned",
        ]
    )
    target = serializers.CharField()
    detail = serializers.CharField()


class DiscoveredVmSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="vm.pk")
    name = serializers.CharField(source="vm.name")
    domain = serializers.CharField()
    domain_uuid = serializers.CharField(source="vm.domain_uuid")
    power_state = serializers.CharField()
    vanished_at = serializers.DateTimeField(source="vm.vanished_at", allow_null=True)
    disks = DiscoveredDiskSerializer(many=True)
    changes = ChangeSerializer(many=True)


class ConflictSerializer(serializers.Serializer):
    domain = serializers.CharField()
    uuid = serializers.CharField()
    reason = serializers.CharField()


class DiscoveryResultSerializer(serializers.Serializer):
    host = serializers.CharField(source="host.name")
    new = DiscoveredVmSerializer(many=True)
    changed = DiscoveredVmSerializer(many=True)
    vanished = DiscoveredVmSerializer(many=True)
    unchanged = DiscoveredVmSerializer(many=True)
    conflicts = ConflictSerializer(many=True)
