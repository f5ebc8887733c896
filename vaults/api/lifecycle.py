"""Protection lifecycle and the recycle bin over REST.

Every write calls `vaults.lifecycle`, which checks the role again, applies the rules and audits.
A rule that refuses the operation (immutability, always-on soft delete, the item's state)
answers 409 `{"detail": "...", "rule": "..."}`; a missing role answers 403.
"""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from portal.api.base import ApiView
from portal.api.serializers import StrictSerializer
from vaults import lifecycle
from vaults.api.serializers import ProtectedItemSerializer
from vaults.api.views import get_item
from vaults.models import BinReason


class StopSerializer(StrictSerializer):
    mode = serializers.ChoiceField(
        choices=list(lifecycle.STOP_MODES),
        help_text="retain_forever, retain_as_per_policy or delete_data (not while the vault "
        "is immutable).",
    )


class ResumeSerializer(StrictSerializer):
    policy = serializers.CharField(
        required=False, help_text="Resume under this policy of the vault (default: the item's)."
    )


class NoBodySerializer(StrictSerializer):
    """No fields: an empty JSON object (or no body)."""


class BinEntrySerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["item", "recovery_point"])
    vault = serializers.CharField()
    vm_name = serializers.CharField()
    recovery_point = serializers.UUIDField(allow_null=True)
    recovery_point_time = serializers.DateTimeField(allow_null=True)
    recovery_points = serializers.IntegerField(help_text="Recovery points the entry holds.")
    reason = serializers.ChoiceField(choices=BinReason.choices)
    deleted_by = serializers.CharField(allow_null=True)
    deleted_at = serializers.DateTimeField(allow_null=True)
    purge_at = serializers.DateTimeField(allow_null=True)
    days_left = serializers.IntegerField(allow_null=True)


def _body(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.data if request.data is not None else {})
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class _ItemAction(ApiView):
    serializer_class = ProtectedItemSerializer

    def respond(self, vm_name: str) -> Response:
        item = get_item(self.vault, self.request.user, vm_name)
        return Response(ProtectedItemSerializer(item, context={"request": self.request}).data)


class StopProtectionView(_ItemAction):
    vault_actions = {"POST": "stop_protection"}

    @extend_schema(request=StopSerializer, responses={200: ProtectedItemSerializer})
    def post(self, request, vault_name: str, vm_name: str):
        """Stop protection (contributors): retain the data forever, retain it as per policy
        (the latest recovery point is kept forever), or delete it (to the recycle bin; at once
        when the vault's soft delete is disabled)."""
        mode = _body(StopSerializer, request)["mode"]
        item = get_item(self.vault, request.user, vm_name)
        lifecycle.stop_protection(item, by=request.user, request=request, mode=mode)
        return self.respond(vm_name)


class ResumeProtectionView(_ItemAction):
    vault_actions = {"POST": "resume_protection"}

    @extend_schema(request=ResumeSerializer, responses={200: ProtectedItemSerializer})
    def post(self, request, vault_name: str, vm_name: str):
        """Resume a stopped item (contributors), optionally under another policy."""
        data = _body(ResumeSerializer, request)
        policy = None
        if "policy" in data:
            policy = self.vault.policies.filter(name=data["policy"]).first()
            if policy is None:
                raise serializers.ValidationError(
                    {"policy": [f"No policy named {data['policy']} in vault {self.vault.name}."]}
                )
        item = get_item(self.vault, request.user, vm_name)
        lifecycle.resume_protection(item, by=request.user, request=request, policy=policy)
        return self.respond(vm_name)


class UndeleteView(_ItemAction):
    vault_actions = {"POST": "undelete"}

    @extend_schema(request=NoBodySerializer, responses={200: ProtectedItemSerializer})
    def post(self, request, vault_name: str, vm_name: str):
        """Undelete a soft-deleted item (contributors): it returns to protection stopped,
        retain forever, with its recovery points."""
        _body(NoBodySerializer, request)
        item = get_item(self.vault, request.user, vm_name)
        lifecycle.undelete(item, by=request.user, request=request)
        return self.respond(vm_name)


class PurgeItemView(_ItemAction):
    vault_actions = {"POST": "stop_protection"}

    @extend_schema(
        request=NoBodySerializer,
        responses={202: inline_serializer("PurgeJob", {"job": serializers.IntegerField()})},
    )
    def post(self, request, vault_name: str, vm_name: str):
        """Purge a soft-deleted item now (contributors). Only while the vault's soft delete is
        disabled and the vault is not immutable; never while soft delete is always on."""
        _body(NoBodySerializer, request)
        item = get_item(self.vault, request.user, vm_name)
        job = lifecycle.purge_now(item, by=request.user, request=request)
        return Response({"job": job.pk}, status=status.HTTP_202_ACCEPTED)


class _BinList(ApiView):
    serializer_class = BinEntrySerializer

    def entries(self) -> list:
        raise NotImplementedError

    def get(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.entries())
        return self.get_paginated_response(BinEntrySerializer(page, many=True).data)


class VaultRecycleBinView(_BinList):
    vault_actions = {"GET": "view"}

    def entries(self) -> list:
        """The vault's recycle bin, soonest purge first."""
        return lifecycle.recycle_bin(self.vault, user=self.request.user)

    @extend_schema(responses={200: BinEntrySerializer(many=True)})
    def get(self, request, vault_name: str):
        """The vault's recycle bin: soft-deleted items and recovery points cut early by a
        retention reduction, who deleted them, when, and when they are purged."""
        return super().get(request)


class SiteRecycleBinView(_BinList):
    site_actions = {"GET": "view_recycle_bin"}

    def entries(self) -> list:
        return lifecycle.site_recycle_bin(user=self.request.user)

    @extend_schema(responses={200: BinEntrySerializer(many=True)})
    def get(self, request):
        """Every vault's recycle bin (site administrators)."""
        return super().get(request)
