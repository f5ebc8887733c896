"""The policy representation, for the schema and the browsable docs only.

Input is validated by `policies.spec.validate_policy` (through `vaults.services`), which
reports errors keyed by field path, e.g. `schedule.interval_hours` or `retention.daily.days`.
"""

from typing import TYPE_CHECKING, Any, TypedDict

from rest_framework import serializers

from policies.models import BackupPolicy, Consistency, PolicyKind

if TYPE_CHECKING:  # a typing aid of django-stubs, not installed to run
    from django_stubs_ext import WithAnnotations


class PolicyUse(TypedDict):
    n_items: int  # protected items using the policy


class PolicySerializer(serializers.Serializer):
    name = serializers.CharField(max_length=50)
    kind = serializers.ChoiceField(choices=PolicyKind.choices, default=PolicyKind.STANDARD)
    timezone = serializers.CharField(default="UTC", help_text="IANA time zone.")
    consistency = serializers.ChoiceField(choices=Consistency.choices, default="default")
    schedule = serializers.DictField(
        help_text='{"frequency": "daily"|"weekly"|"hourly", "time": "HH:MM", "weekdays": [...],'
        ' "interval_hours": 4|6|8|12, "window_start": "HH:MM", "window_hours": 4..24}'
    )
    instant_restore_days = serializers.IntegerField(required=False)
    retention = serializers.DictField(
        help_text='{"daily": {"days"}, "weekly": {"weeks", "weekdays"}, "monthly": {"months", '
        '"weeks"+"weekdays" | "days"}, "yearly": {"years", "months", ...}}'
    )
    protected_items = serializers.IntegerField(
        read_only=True, help_text="Protected items using the policy (read-only)."
    )

    def to_representation(
        self, policy: "WithAnnotations[BackupPolicy, PolicyUse]"
    ) -> dict[str, Any]:
        # `n_items` is annotated by the views' queryset.
        return {**policy.representation(), "protected_items": policy.n_items}


class SimulateSerializer(serializers.Serializer):
    """The simulate body, for the schema (the service validates it, naming each field)."""

    policy = serializers.DictField(
        required=False, help_text="A draft policy representation (its name may be left out)."
    )
    name = serializers.CharField(
        required=False, help_text="An existing policy: simulated itself, or changed to `policy`."
    )
    item = serializers.CharField(
        required=False, help_text="A protected VM whose change rate estimates storage."
    )
    months = serializers.IntegerField(required=False, min_value=1, max_value=24, default=3)
