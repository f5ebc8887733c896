"""Vaults, members, guard approvers, protected items and recovery points.

Every write calls `vaults.services`, which checks the role again, validates and audits.
"""

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count, Q
from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.mixins import ListModelMixin
from rest_framework.response import Response

from inventory.models import Host
from portal.api.base import ApiListView, ApiView, changed_only
from vaults import access, services
from vaults.api.serializers import (
    GuardApproverCreateSerializer,
    GuardApproverSerializer,
    MembershipCreateSerializer,
    MembershipSerializer,
    ProtectCreateSerializer,
    ProtectedItemSerializer,
    RecoveryPointSerializer,
    VaultCreateSerializer,
    VaultSerializer,
)
from vaults.models import GuardApprover, ProtectedVM, RecoveryPoint, Vault, VaultMembership


def _user_named(username: str, field: str = "user"):
    try:
        return get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise serializers.ValidationError({field: [f"No user named {username}."]}) from None


def _hosts(ids: list[int]) -> list[Host]:
    hosts = list(Host.objects.filter(pk__in=ids))
    missing = sorted(set(ids) - {h.pk for h in hosts})
    if missing:
        raise serializers.ValidationError(
            {"linked_hosts": [f"No host with id {', '.join(map(str, missing))}."]}
        )
    return hosts


# -- vaults -----------------------------------------------------------------------------------


class VaultListView(ApiListView):
    serializer_class = VaultSerializer
    site_actions = {"POST": "create_vault"}

    def get_queryset(self):
        if self.schema_only:
            return Vault.objects.none()
        return (
            Vault.objects.visible_to(self.request.user)
            .prefetch_related("linked_hosts")
            .select_related("key_assignment__key")
        )

    @extend_schema(request=VaultCreateSerializer, responses={201: VaultSerializer})
    def post(self, request):
        """Create a vault (site administrators). The creator becomes its owner."""
        serializer = VaultCreateSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        host_ids = data.pop("linked_hosts", None)
        with transaction.atomic():
            vault = services.create_vault(by=request.user, request=request, **data)
            if host_ids:
                services.set_linked_hosts(vault, _hosts(host_ids), by=request.user, request=request)
        access.forget(request.user)
        vault = self.get_queryset().get(pk=vault.pk)
        return Response(self.get_serializer(vault).data, status=status.HTTP_201_CREATED)


class VaultDetailView(ApiView):
    serializer_class = VaultSerializer
    vault_actions = {"GET": "view", "PATCH": "change_settings", "DELETE": "delete_vault"}

    def _fresh(self):
        return (
            Vault.objects.prefetch_related("linked_hosts")
            .select_related("key_assignment__key")
            .get(pk=self.vault.pk)
        )

    def get(self, request, vault_name: str):
        return Response(self.get_serializer(self._fresh()).data)

    def patch(self, request, vault_name: str):
        """Change settings (contributors) and linked hosts (site administrators), all or
        nothing. Fields sent back unchanged are accepted."""
        vault = self._fresh()
        serializer = self.get_serializer(vault, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        host_ids = data.pop("linked_hosts", None)
        key = data.pop("encryption_key", None)
        data = changed_only(vault, data)
        if key is not None:
            from security.keys import key_name

            if key != key_name(vault):
                data["encryption_key"] = key
        changed_hosts = host_ids is not None and set(host_ids) != {
            h.pk for h in vault.linked_hosts.all()
        }
        if changed_hosts:
            access.require_site(request.user, "link_hosts")
        with transaction.atomic():
            if data:
                services.update_vault(vault, by=request.user, request=request, **data)
            if changed_hosts:
                services.set_linked_hosts(vault, _hosts(host_ids), by=request.user, request=request)
        return Response(self.get_serializer(self._fresh()).data)

    @extend_schema(responses={204: None})
    def delete(self, request, vault_name: str):
        """Delete an empty vault (owners). A vault that holds items or recovery points is
        refused with what to do first."""
        services.delete_vault(self.vault, by=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


# -- members ----------------------------------------------------------------------------------


class MemberListView(ApiListView):
    serializer_class = MembershipSerializer
    vault_actions = {"GET": "view", "POST": "assign_roles"}

    def get_queryset(self):
        if self.schema_only:
            return VaultMembership.objects.none()
        return (
            VaultMembership.objects.filter(vault=self.vault)
            .select_related("user")
            .order_by("user__username")
        )

    @extend_schema(request=MembershipCreateSerializer, responses={201: MembershipSerializer})
    def post(self, request, vault_name: str):
        serializer = MembershipCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        m = services.add_member(
            self.vault,
            by=request.user,
            request=request,
            user=_user_named(data["user"]),
            role=data["role"],
        )
        return Response(self.get_serializer(m).data, status=status.HTTP_201_CREATED)


class MemberDetailView(ApiView):
    serializer_class = MembershipSerializer
    vault_actions = {"GET": "view", "PATCH": "assign_roles", "DELETE": "assign_roles"}
    lookup_url_kwarg = "member_id"

    def get_queryset(self):
        if self.schema_only:
            return VaultMembership.objects.none()
        return VaultMembership.objects.filter(vault=self.vault).select_related("user", "vault")

    def get(self, request, vault_name: str, member_id: int):
        return Response(self.get_serializer(self.get_object()).data)

    def patch(self, request, vault_name: str, member_id: int):
        """Change the member's role (owners)."""
        m = self.get_object()
        serializer = self.get_serializer(m, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        changes = changed_only(m, dict(serializer.validated_data))
        if "role" in changes:
            role = changes["role"]
            m = services.change_member_role(m, by=request.user, request=request, role=role)
        return Response(self.get_serializer(m).data)

    @extend_schema(responses={204: None})
    def delete(self, request, vault_name: str, member_id: int):
        services.remove_member(self.get_object(), by=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


# -- guard approvers (MUA) ------------------------------------------------------------------------


class GuardApproverListView(ApiListView):
    serializer_class = GuardApproverSerializer
    site_actions = {"GET": "assign_guard", "POST": "assign_guard"}

    def get_queryset(self):
        if self.schema_only:
            return GuardApprover.objects.none()
        return (
            GuardApprover.objects.filter(vault=self.vault)
            .select_related("user", "assigned_by")
            .order_by("user__username")
        )

    @extend_schema(request=GuardApproverCreateSerializer, responses={201: GuardApproverSerializer})
    def post(self, request, vault_name: str):
        serializer = GuardApproverCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        ga = services.add_guard_approver(
            self.vault,
            by=request.user,
            request=request,
            user=_user_named(serializer.validated_data["user"]),
        )
        return Response(self.get_serializer(ga).data, status=status.HTTP_201_CREATED)


class GuardApproverDetailView(ApiView):
    serializer_class = GuardApproverSerializer
    site_actions = {"GET": "assign_guard", "DELETE": "assign_guard"}
    lookup_url_kwarg = "approver_id"

    def get_queryset(self):
        if self.schema_only:
            return GuardApprover.objects.none()
        return GuardApprover.objects.filter(vault=self.vault).select_related(
            "user", "assigned_by", "vault"
        )

    def get(self, request, vault_name: str, approver_id: int):
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(responses={204: None})
    def delete(self, request, vault_name: str, approver_id: int):
        services.remove_guard_approver(self.get_object(), by=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


# -- protected items --------------------------------------------------------------------------


def items_of(vault: Vault, user):
    return (
        ProtectedVM.objects.visible_to(user)
        .filter(vault=vault)
        .select_related("vm", "policy")
        .annotate(
            rp_count=Count(
                "recovery_points", filter=Q(recovery_points__soft_deleted_at__isnull=True)
            )
        )
    )


def get_item(vault: Vault, user, vm_name: str) -> ProtectedVM:
    """The vault's item for the named VM (the newest, should a VM have come back)."""
    item = items_of(vault, user).filter(vm__name=vm_name).order_by("-created_at").first()
    if item is None:
        raise Http404("No such protected item.")
    return item


class ProtectedItemListView(ApiListView):
    serializer_class = ProtectedItemSerializer
    vault_actions = {"GET": "view", "POST": "protect"}

    def get_queryset(self):
        if self.schema_only:
            return ProtectedVM.objects.none()
        return items_of(self.vault, self.request.user).order_by("vm__name", "pk")

    @extend_schema(request=ProtectCreateSerializer, responses={201: ProtectedItemSerializer})
    def post(self, request, vault_name: str):
        """Enable protection of a VM on a host linked to the vault (operators)."""
        serializer = ProtectCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        vm = access.visible_vms(request.user).select_related("host").filter(pk=data["vm"]).first()
        if vm is None:
            raise serializers.ValidationError({"vm": [f"No VM with id {data['vm']}."]})
        policy = self.vault.policies.filter(name=data["policy"]).first()
        if policy is None:
            raise serializers.ValidationError(
                {"policy": [f"No policy named {data['policy']} in vault {self.vault.name}."]}
            )
        item = services.protect_vm(
            self.vault,
            by=request.user,
            request=request,
            vm=vm,
            policy=policy,
            included_luns=data.get("included_luns"),
            excluded_luns=data.get("excluded_luns"),
        )
        item = get_item(self.vault, self.request.user, item.vm.name)
        return Response(self.get_serializer(item).data, status=status.HTTP_201_CREATED)


class ProtectedItemDetailView(ApiView):
    serializer_class = ProtectedItemSerializer
    vault_actions = {"GET": "view", "PATCH": "change_item_policy"}

    def get(self, request, vault_name: str, vm_name: str):
        return Response(self.get_serializer(get_item(self.vault, self.request.user, vm_name)).data)

    def patch(self, request, vault_name: str, vm_name: str):
        """Change the item's policy or disk selection (contributors). `state` is read-only."""
        item = get_item(self.vault, self.request.user, vm_name)
        serializer = self.get_serializer(item, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        changes = changed_only(
            item,
            dict(serializer.validated_data),
            current={
                "policy": item.policy.name,
                "included_luns": item.included_luns,
                "excluded_luns": item.excluded_luns,
            },
        )
        if "policy" in changes:
            name = changes["policy"]
            changes["policy"] = self.vault.policies.filter(name=name).first()
            if changes["policy"] is None:
                raise serializers.ValidationError(
                    {"policy": [f"No policy named {name} in vault {self.vault.name}."]}
                )
        if changes:
            services.update_item(item, by=request.user, request=request, **changes)
        return Response(self.get_serializer(get_item(self.vault, self.request.user, vm_name)).data)


# -- recovery points --------------------------------------------------------------------------


class RecoveryPointView(ApiView):
    serializer_class = RecoveryPointSerializer
    vault_actions = {"GET": "view"}
    lookup_url_kwarg = "rp_id"

    def get_queryset(self):
        """The item's recovery points, newest first; soft-deleted ones are in the recycle
        bin, not here."""
        if self.schema_only:
            return RecoveryPoint.objects.none()
        item = get_item(self.vault, self.request.user, self.kwargs["vm_name"])
        return (
            RecoveryPoint.objects.visible_to(self.request.user)
            .filter(protected_item=item, soft_deleted_at__isnull=True)
            .order_by("-time", "id")
        )


class RecoveryPointListView(ListModelMixin, RecoveryPointView):
    get = ApiListView.get


class RecoveryPointDetailView(RecoveryPointView):
    def get(self, request, vault_name: str, vm_name: str, rp_id):
        return Response(self.get_serializer(self.get_object()).data)
