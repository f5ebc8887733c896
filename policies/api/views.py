"""Backup policies of a vault, in exactly `BackupPolicy.representation()` plus read-only
extras. What a GET returns can be PUT back unchanged; a PATCH replaces each top-level object
it names (`schedule`, `retention`) whole."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from django.db.models import Count, QuerySet
from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings

from policies.api.serializers import PolicySerializer, PolicyUse, SimulateSerializer
from policies.models import BackupPolicy
from policies.simulator import PlannedPoint, TierBytes
from policies.spec import merge_patch
from portal.api.base import ApiListView, ApiRequest, ApiView
from portal.api.filters import FilterSerializer
from portal.api.serializers import READ_ONLY
from vaults.models import Vault
from vaults.services.policies import (
    create_policy,
    delete_policy,
    preview_policy_update,
    update_policy,
)
from vaults.services.simulation import Simulation, simulate

if TYPE_CHECKING:  # a typing aid of django-stubs, not installed to run
    from django_stubs_ext import WithAnnotations

    UsedPolicy = WithAnnotations[BackupPolicy, PolicyUse]

# Shown by GET, accepted back unchanged, never written.
READ_ONLY_EXTRAS = ("protected_items",)


def policies_of(vault: Vault) -> QuerySet[UsedPolicy]:
    return BackupPolicy.objects.filter(vault=vault).annotate(n_items=Count("protected_items"))


def show(policy: UsedPolicy) -> dict[str, Any]:
    return PolicySerializer().to_representation(policy)


def body_without_extras(data: object, current: dict[str, Any] | None) -> dict[str, Any]:
    """The request body minus read-only extras, which must equal what a GET shows."""
    if not isinstance(data, Mapping):
        raise serializers.ValidationError(
            {api_settings.NON_FIELD_ERRORS_KEY: ["Must be a JSON object."]}
        )
    body = dict(data)
    errors = {}
    for key in READ_ONLY_EXTRAS:
        if key in body:
            value = body.pop(key)
            if current is None or current.get(key) != value:
                errors[key] = [READ_ONLY]
    if errors:
        raise serializers.ValidationError(errors)
    return body


class PolicyListView(ApiListView):
    serializer_class = PolicySerializer
    vault_actions = {"GET": "view", "POST": "manage_policies"}

    def get_queryset(self) -> QuerySet[BackupPolicy]:
        if self.schema_only:
            return BackupPolicy.objects.none()
        return policies_of(self.url_vault).order_by("name")

    @extend_schema(responses={201: PolicySerializer})
    def post(self, request: ApiRequest, vault_name: str) -> Response:
        rep = body_without_extras(request.data, {"protected_items": 0})
        policy = create_policy(self.url_vault, rep, by=request.user, request=request)
        policy = policies_of(self.url_vault).get(pk=policy.pk)
        return Response(show(policy), status=status.HTTP_201_CREATED)


class DryRun(FilterSerializer):
    dry_run = serializers.BooleanField(
        required=False,
        default=False,
        help_text="true: change nothing; answer which retention rules the change shortens "
        "and which recovery points would expire earlier, and when.",
    )


class CutSerializer(serializers.Serializer):
    vm_name = serializers.CharField()
    recovery_point = serializers.CharField(source="rp_id")
    time = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)
    new_expires_at = serializers.DateTimeField()
    expires_now = serializers.BooleanField(
        help_text="Its new expiry has passed: it goes to the recycle bin when saved."
    )


class DryRunSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    reduces_retention = serializers.BooleanField()
    reductions = serializers.ListField(child=serializers.CharField())
    blocked_by_immutability = serializers.BooleanField()
    needs_approval = serializers.BooleanField()
    expiring = CutSerializer(many=True)


class PolicyDetailView(ApiView):
    serializer_class = PolicySerializer
    vault_actions = {
        "GET": "view",
        "PUT": "manage_policies",
        "PATCH": "manage_policies",
        "DELETE": "manage_policies",
    }

    def get_policy(self) -> UsedPolicy:
        try:
            return policies_of(self.url_vault).get(name=self.kwargs["policy_name"])
        except BackupPolicy.DoesNotExist:
            raise Http404("No such policy.") from None

    def _updated(self, policy: BackupPolicy, rep: dict[str, Any]) -> Response:
        user = cast(ApiRequest, self.request).user
        if DryRun.values(self.request.query_params)["dry_run"]:
            preview = preview_policy_update(policy, rep, by=user)
            return Response(DryRunSerializer({"dry_run": True, **preview}).data)
        policy = update_policy(
            policy, rep, by=cast(ApiRequest, self.request).user, request=self.request
        )
        return Response(show(policies_of(self.url_vault).get(pk=policy.pk)))

    def get(self, request: Request, vault_name: str, policy_name: str) -> Response:
        return Response(show(self.get_policy()))

    @extend_schema(parameters=[DryRun], responses={200: PolicySerializer})
    def put(self, request: Request, vault_name: str, policy_name: str) -> Response:
        """Replace the whole policy (a GET's body can be sent back as is)."""
        policy = self.get_policy()
        return self._updated(policy, body_without_extras(request.data, show(policy)))

    @extend_schema(parameters=[DryRun], responses={200: PolicySerializer})
    def patch(self, request: Request, vault_name: str, policy_name: str) -> Response:
        """Replace the top-level fields named; `schedule` and `retention` are replaced whole."""
        policy = self.get_policy()
        patch = body_without_extras(request.data, show(policy))
        return self._updated(policy, merge_patch(policy.representation(), patch))

    @extend_schema(responses={204: None})
    def delete(self, request: ApiRequest, vault_name: str, policy_name: str) -> Response:
        """Delete a policy no protected item uses."""
        delete_policy(self.get_policy(), by=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _point(point: PlannedPoint) -> dict[str, Any]:
    return {
        "slot": point.slot,
        "tags": list(point.tags),
        "tier": point.tier,
        "expires_at": point.expires_at,
        "snapshot_expires_at": point.snapshot_expires_at,
    }


def _bytes(tiers: TierBytes) -> dict[str, int]:
    return {"snapshot": tiers.snapshot, "vault": tiers.vault}


def simulation_data(sim: Simulation) -> dict[str, Any]:
    return {
        "policy": sim.policy,
        "from": sim.start,
        "until": sim.until,
        "recovery_points": [_point(p) for p in sim.points],
        "storage": {
            "items": sim.observed.items,
            "full_bytes": sim.observed.full_bytes,
            "change_bytes_per_backup": sim.observed.change_bytes,
            "peak_bytes": _bytes(sim.peak),
            "bytes_at_end": _bytes(sim.at_end),
        },
        # The same list a policy change's confirmation gives (`?dry_run=true`'s `expiring`).
        "earlier_expiries": [
            {
                "recovery_point": cut.rp_id,
                "item": cut.vm_name,
                "time": cut.time,
                "expires_at": cut.expires_at,
                "expires_at_after_change": cut.new_expires_at,
                "expires_now": cut.expires_now,
            }
            for cut in sim.earlier
        ],
    }


class PolicySimulateView(ApiView):
    """Simulate a draft `policy` and/or the existing policy `name` for `months` (1-24, default
    3): the recovery points it makes and keeps, each tier's bytes from the observed change rate
    of its items (or of `item`), and, for a change of `name` to `policy`, the existing recovery
    points that would expire earlier. Nothing is saved."""

    serializer_class = SimulateSerializer
    vault_actions = {"POST": "view"}

    @extend_schema(request=SimulateSerializer, responses={200: None})
    def post(self, request: ApiRequest, vault_name: str) -> Response:
        body = request.data
        if not isinstance(body, Mapping):
            raise serializers.ValidationError(
                {api_settings.NON_FIELD_ERRORS_KEY: ["Must be a JSON object."]}
            )
        unknown = sorted(set(body) - {"policy", "name", "item", "months"})
        if unknown:
            raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
        for key in ("name", "item"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise serializers.ValidationError({key: ["Must be a string."]})
        sim = simulate(
            self.url_vault,
            draft=body.get("policy"),
            name=body.get("name"),
            item=body.get("item"),
            months=body.get("months", 3),
        )
        return Response(simulation_data(sim))
