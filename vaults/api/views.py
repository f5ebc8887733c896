"""Vaults, members, guard approvers, protected items and recovery points.

Every write calls the domain modules (`vaults.services.*`, `vaults.protection`), which check
the role again, validate and audit.
"""

from typing import cast
from uuid import UUID

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import OuterRef, QuerySet
from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.mixins import ListModelMixin
from rest_framework.response import Response

from inventory.models import Host
from portal.api.base import ApiListView, ApiRequest, ApiView, changed_only
from portal.pages import count_of
from security.keys import key_name
from vaults import access
from vaults.access import AnyUser
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
from vaults.models import (
    GuardApprover,
    ProtectedVM,
    ProtectedVMQuerySet,
    RecoveryPoint,
    Vault,
    VaultMembership,
)
from vaults.protection import ItemChanges, protect_vm, update_item
from vaults.services.hosts import set_linked_hosts
from vaults.services.members import (
    add_guard_approver,
    add_member,
    change_member_role,
    remove_guard_approver,
    remove_member,
)
from vaults.services.vaults import create_vault, delete_vault, update_vault


def _user_named(username: str, field: str = "user") -> User:
    try:
        return User.objects.get(username=username)
    except User.DoesNotExist:
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

    def get_queryset(self) -> QuerySet[Vault]:
        if self.schema_only:
            return Vault.objects.none()
        return (
            access.visible(Vault.objects.all(), self.request.user)
            .prefetch_related("linked_hosts")
            .select_related("key_assignment__key", "storage_target", "secondary_target")
        )

    @extend_schema(request=VaultCreateSerializer, responses={201: VaultSerializer})
    def post(self, request: ApiRequest) -> Response:
        """Create a vault (site administrators). The creator becomes its owner."""
        serializer = VaultCreateSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        host_ids = data.pop("linked_hosts", None)
        with transaction.atomic():
            vault = create_vault(by=request.user, request=request, **data)
            if host_ids:
                set_linked_hosts(vault, _hosts(host_ids), by=request.user, request=request)
        access.forget(request.user)
        vault = self.get_queryset().get(pk=vault.pk)
        return Response(self.get_serializer(vault).data, status=status.HTTP_201_CREATED)


class VaultDetailView(ApiView):
    serializer_class = VaultSerializer
    vault_actions = {"GET": "view", "PATCH": "change_settings", "DELETE": "delete_vault"}

    def _fresh(self) -> Vault:
        return (
            Vault.objects.prefetch_related("linked_hosts")
            .select_related("key_assignment__key", "storage_target", "secondary_target")
            .get(pk=self.url_vault.pk)
        )

    def get(self, request: ApiRequest, vault_name: str) -> Response:
        return Response(self.get_serializer(self._fresh()).data)

    def patch(self, request: ApiRequest, vault_name: str) -> Response:
        """Change settings (contributors) and linked hosts (site administrators), all or
        nothing. Fields sent back unchanged are accepted."""
        vault = self._fresh()
        serializer = self.get_serializer(vault, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        host_ids = data.pop("linked_hosts", None)
        key = data.pop("encryption_key", None)
        data = changed_only(vault, data)
        if key is not None and key != key_name(vault):
            data["encryption_key"] = key
        changed_hosts = host_ids is not None and set(host_ids) != {
            h.pk for h in vault.linked_hosts.all()
        }
        if changed_hosts:
            access.require_site(request.user, "link_hosts")
        with transaction.atomic():
            if data:
                update_vault(vault, by=request.user, request=request, **data)
            if changed_hosts:
                set_linked_hosts(vault, _hosts(host_ids), by=request.user, request=request)
        return Response(self.get_serializer(self._fresh()).data)

    @extend_schema(responses={204: None})
    def delete(self, request: ApiRequest, vault_name: str) -> Response:
        """Delete an empty vault (owners). A vault that holds items or recovery points is
        refused with what to do first."""
        delete_vault(self.url_vault, by=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


# -- members ----------------------------------------------------------------------------------


class MemberListView(ApiListView):
    serializer_class = MembershipSerializer
    vault_actions = {"GET": "view", "POST": "assign_roles"}

    def get_queryset(self) -> QuerySet[VaultMembership]:
        if self.schema_only:
            return VaultMembership.objects.none()
        return (
            VaultMembership.objects.filter(vault=self.url_vault)
            .select_related("user")
            .order_by("user__username")
        )

    @extend_schema(request=MembershipCreateSerializer, responses={201: MembershipSerializer})
    def post(self, request: ApiRequest, vault_name: str) -> Response:
        serializer = MembershipCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        m = add_member(
            self.url_vault,
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

    def get_queryset(self) -> QuerySet[VaultMembership]:
        if self.schema_only:
            return VaultMembership.objects.none()
        return VaultMembership.objects.filter(vault=self.url_vault).select_related("user", "vault")

    def get(self, request: ApiRequest, vault_name: str, member_id: int) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    def patch(self, request: ApiRequest, vault_name: str, member_id: int) -> Response:
        """Change the member's role (owners)."""
        m = self.get_object()
        serializer = self.get_serializer(m, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        changes = changed_only(m, dict(serializer.validated_data))
        if "role" in changes:
            role = changes["role"]
            m = change_member_role(m, by=request.user, request=request, role=role)
        return Response(self.get_serializer(m).data)

    @extend_schema(responses={204: None})
    def delete(self, request: ApiRequest, vault_name: str, member_id: int) -> Response:
        remove_member(self.get_object(), by=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


# -- guard approvers (MUA) ------------------------------------------------------------------------


class GuardApproverListView(ApiListView):
    serializer_class = GuardApproverSerializer
    site_actions = {"GET": "assign_guard", "POST": "assign_guard"}

    def get_queryset(self) -> QuerySet[GuardApprover]:
        if self.schema_only:
            return GuardApprover.objects.none()
        return (
            GuardApprover.objects.filter(vault=self.url_vault)
            .select_related("user", "assigned_by")
            .order_by("user__username")
        )

    @extend_schema(request=GuardApproverCreateSerializer, responses={201: GuardApproverSerializer})
    def post(self, request: ApiRequest, vault_name: str) -> Response:
        serializer = GuardApproverCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        ga = add_guard_approver(
            self.url_vault,
            by=request.user,
            request=request,
            user=_user_named(serializer.validated_data["user"]),
        )
        return Response(self.get_serializer(ga).data, status=status.HTTP_201_CREATED)


class GuardApproverDetailView(ApiView):
    serializer_class = GuardApproverSerializer
    site_actions = {"GET": "assign_guard", "DELETE": "assign_guard"}
    lookup_url_kwarg = "approver_id"

    def get_queryset(self) -> QuerySet[GuardApprover]:
        if self.schema_only:
            return GuardApprover.objects.none()
        return GuardApprover.objects.filter(vault=self.url_vault).select_related(
            "user", "assigned_by", "vault"
        )

    def get(self, request: ApiRequest, vault_name: str, approver_id: int) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(responses={204: None})
    def delete(self, request: ApiRequest, vault_name: str, approver_id: int) -> Response:
        remove_guard_approver(self.get_object(), by=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


# -- protected items --------------------------------------------------------------------------


def items_of(vault: Vault, user: AnyUser) -> ProtectedVMQuerySet:
    return (
        access.visible(ProtectedVM.objects.all(), user)
        .filter(vault=vault)
        .select_related("vm", "policy")
        # A correlated count, not a join: the page's COUNT(*) and rows skip the recovery points.
        .annotate(
            rp_count=count_of(
                RecoveryPoint.objects.live().filter(protected_item=OuterRef("pk")),
                "protected_item",
            )
        )
    )


def get_item(vault: Vault, user: AnyUser, vm_name: str) -> ProtectedVM:
    """The vault's item the VM name means (`named`)."""
    item = items_of(vault, user).named(vm_name)
    if item is None:
        raise Http404("No such protected item.")
    return item


class ProtectedItemListView(ApiListView):
    serializer_class = ProtectedItemSerializer
    vault_actions = {"GET": "view", "POST": "protect"}

    def get_queryset(self) -> QuerySet[ProtectedVM]:
        if self.schema_only:
            return ProtectedVM.objects.none()
        return items_of(self.url_vault, self.request.user).order_by("vm__name", "pk")

    @extend_schema(request=ProtectCreateSerializer, responses={201: ProtectedItemSerializer})
    def post(self, request: ApiRequest, vault_name: str) -> Response:
        """Enable protection of a VM on a host linked to the vault (operators)."""
        serializer = ProtectCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        vm = access.visible_vms(request.user).select_related("host").filter(pk=data["vm"]).first()
        if vm is None:
            raise serializers.ValidationError({"vm": [f"No VM with id {data['vm']}."]})
        vault = self.url_vault
        policy = vault.policies.filter(name=data["policy"]).first()
        if policy is None:
            raise serializers.ValidationError(
                {"policy": [f"No policy named {data['policy']} in vault {vault.name}."]}
            )
        item = protect_vm(
            vault,
            by=request.user,
            request=request,
            vm=vm,
            policy=policy,
            included_luns=data.get("included_luns"),
            excluded_luns=data.get("excluded_luns"),
        )
        item = get_item(vault, request.user, item.vm.name)
        return Response(self.get_serializer(item).data, status=status.HTTP_201_CREATED)


class ProtectedItemDetailView(ApiView):
    serializer_class = ProtectedItemSerializer
    vault_actions = {"GET": "view", "PATCH": "change_item_policy"}

    def get(self, request: ApiRequest, vault_name: str, vm_name: str) -> Response:
        return Response(self.get_serializer(get_item(self.url_vault, request.user, vm_name)).data)

    def patch(self, request: ApiRequest, vault_name: str, vm_name: str) -> Response:
        """Change the item's policy or disk selection (contributors). `state` is read-only."""
        vault = self.url_vault
        item = get_item(vault, request.user, vm_name)
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
            changes["policy"] = vault.policies.filter(name=name).first()
            if changes["policy"] is None:
                raise serializers.ValidationError(
                    {"policy": [f"No policy named {name} in vault {vault.name}."]}
                )
        if changes:
            update_item(item, by=request.user, request=request, **cast(ItemChanges, changes))
        return Response(self.get_serializer(get_item(vault, request.user, vm_name)).data)


# -- recovery points --------------------------------------------------------------------------


class RecoveryPointView(ApiView):
    serializer_class = RecoveryPointSerializer
    vault_actions = {"GET": "view"}
    lookup_url_kwarg = "rp_id"

    def get_queryset(self) -> QuerySet[RecoveryPoint]:
        """The item's recovery points, newest first; soft-deleted ones are in the recycle
        bin, not here."""
        if self.schema_only:
            return RecoveryPoint.objects.none()
        user = self.request.user
        item = get_item(self.url_vault, user, self.kwargs["vm_name"])
        return (
            access.visible(RecoveryPoint.objects.all(), user)
            .live()
            .filter(protected_item=item)
            .order_by("-time", "id")
        )


class RecoveryPointListView(ListModelMixin, RecoveryPointView):
    get = ApiListView.get


class RecoveryPointDetailView(RecoveryPointView):
    def get(self, request: ApiRequest, vault_name: str, vm_name: str, rp_id: UUID) -> Response:
        return Response(self.get_serializer(self.get_object()).data)
