"""Protection lifecycle and the recycle bin over REST.

Every write calls `vaults.protection` or `vaults.lifecycle`, which check the role again, apply
the rules and audit.
A rule that refuses the operation (immutability, always-on soft delete, the item's state)
answers 409 `{"detail": "...", "rule": "..."}`; a missing role answers 403.
"""

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from portal.api.base import ApiRequest, ApiView
from portal.api.serializers import StrictSerializer
from vaults import lifecycle
from vaults.api.serializers import ProtectedItemSerializer
from vaults.api.views import get_item
from vaults.lifecycle import BinEntry
from vaults.models import BinKind, BinReason, StopMode
from vaults.protection import resume_protection, stop_protection, undelete


class StopSerializer(StrictSerializer):
    mode = serializers.ChoiceField(
        choices=StopMode.values,
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
    kind = serializers.ChoiceField(choices=BinKind.values)
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


def _body(serializer_class: type[StrictSerializer], request: ApiRequest) -> dict[str, Any]:
    serializer = serializer_class(data=request.data if request.data is not None else {})
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class _ItemAction(ApiView):
    serializer_class = ProtectedItemSerializer

    def respond(self, vm_name: str) -> Response:
        item = get_item(self.url_vault, self.request.user, vm_name)
        return Response(ProtectedItemSerializer(item, context={"request": self.request}).data)


class StopProtectionView(_ItemAction):
    vault_actions = {"POST": "stop_protection"}

    @extend_schema(request=StopSerializer, responses={200: ProtectedItemSerializer})
    def post(self, request: ApiRequest, vault_name: str, vm_name: str) -> Response:
        """Stop protection (contributors): retain the data forever, retain it as per policy
        (the latest recovery point is kept forever), or delete it (to the recycle bin; at once
        when the vault's soft delete is disabled)."""
        mode = _body(StopSerializer, request)["mode"]
        item = get_item(self.url_vault, request.user, vm_name)
        stop_protection(item, by=request.user, request=request, mode=mode)
        return self.respond(vm_name)


class ResumeProtectionView(_ItemAction):
    vault_actions = {"POST": "resume_protection"}

    @extend_schema(request=ResumeSerializer, responses={200: ProtectedItemSerializer})
    def post(self, request: ApiRequest, vault_name: str, vm_name: str) -> Response:
        """Resume a stopped item (contributors), optionally under another policy."""
        data = _body(ResumeSerializer, request)
        vault = self.url_vault
        policy = None
        if "policy" in data:
            policy = vault.policies.filter(name=data["policy"]).first()
            if policy is None:
                raise serializers.ValidationError(
                    {"policy": [f"No policy named {data['policy']} in vault {vault.name}."]}
                )
        item = get_item(vault, request.user, vm_name)
        resume_protection(item, by=request.user, request=request, policy=policy)
        return self.respond(vm_name)


class UndeleteView(_ItemAction):
    vault_actions = {"POST": "undelete"}

    @extend_schema(request=NoBodySerializer, responses={200: ProtectedItemSerializer})
    def post(self, request: ApiRequest, vault_name: str, vm_name: str) -> Response:
        """Undelete a soft-deleted item (contributors): it returns to protection stopped,
        retain forever, with its recovery points."""
        _body(NoBodySerializer, request)
        item = get_item(self.url_vault, request.user, vm_name)
        undelete(item, by=request.user, request=request)
        return self.respond(vm_name)


class PurgeItemView(_ItemAction):
    vault_actions = {"POST": "stop_protection"}

    @extend_schema(
        request=NoBodySerializer,
        responses={202: inline_serializer("PurgeJob", {"job": serializers.IntegerField()})},
    )
    def post(self, request: ApiRequest, vault_name: str, vm_name: str) -> Response:
        """Purge a soft-deleted item now (contributors). Only while the vault's soft delete is
        disabled and the vault is not immutable; never while soft delete is always on."""
        _body(NoBodySerializer, request)
        item = get_item(self.url_vault, request.user, vm_name)
        job = lifecycle.purge_now(item, by=request.user, request=request)
        return Response({"job": job.pk}, status=status.HTTP_202_ACCEPTED)


class _BinList(ApiView):
    serializer_class = BinEntrySerializer

    def respond(self, entries: list[BinEntry]) -> Response:
        # DRF pages any sequence; its stubs know querysets only.
        page: list[BinEntry] | None = self.paginate_queryset(entries)  # type: ignore[arg-type]
        return self.get_paginated_response(BinEntrySerializer(page, many=True).data)


class VaultRecycleBinView(_BinList):
    vault_actions = {"GET": "view"}

    @extend_schema(responses={200: BinEntrySerializer(many=True)})
    def get(self, request: ApiRequest, vault_name: str) -> Response:
        """The vault's recycle bin: soft-deleted items and recovery points cut early by a
        retention reduction, who deleted them, when, and when they are purged."""
        return self.respond(lifecycle.recycle_bin(self.url_vault, user=request.user))


class SiteRecycleBinView(_BinList):
    site_actions = {"GET": "view_recycle_bin"}

    @extend_schema(responses={200: BinEntrySerializer(many=True)})
    def get(self, request: ApiRequest) -> Response:
        """Every vault's recycle bin (site administrators)."""
        return self.respond(lifecycle.site_recycle_bin(user=request.user))
