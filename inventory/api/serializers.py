from rest_framework import serializers

from inventory.models import Host, OSType, PowerState
from portal.api.serializers import StrictModelSerializer, StrictSerializer


class HostSerializer(StrictModelSerializer):
    allowed_roots = serializers.ListField(child=serializers.CharField(max_length=500))

    class Meta:
        model = Host
        fields = ["id", "name", "connector", "snapshot_root", "allowed_roots", "created_at"]
        read_only_fields = ["id", "created_at"]
        # Name rules and uniqueness are checked by the service (model validation).
        extra_kwargs = {"name": {"validators": []}}


class DiskSerializer(StrictSerializer):
    # `size` is read from the file; a client may send it back, it is ignored.
    ignore_read_only = True

    lun = serializers.IntegerField(min_value=-1, max_value=63, help_text="-1 is the OS disk.")
    path = serializers.CharField(max_length=500)
    size = serializers.IntegerField(read_only=True)


class BlankAsNullCharField(serializers.CharField):
    def to_representation(self, value):
        return value or None


class ExtensionSerializer(StrictSerializer):
    """The backup extension: its state (read-only) and its consistency-hook configuration."""

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
    created_at = serializers.DateTimeField(read_only=True)
