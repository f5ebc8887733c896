"""Hosts and VMs. Site administrators register and change them (they name files and commands
on the server); vault members read the hosts linked to their vaults and those hosts' VMs."""

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.mixins import ListModelMixin
from rest_framework.request import Request
from rest_framework.response import Response

from inventory import services
from inventory.api.serializers import (
    DiscoveryResultSerializer,
    HostInfoSerializer,
    HostSerializer,
    VmSerializer,
)
from inventory.models import Host, VirtualMachine
from portal.api.base import ApiListView, ApiRequest, ApiView, changed_only
from vaults import access

WRITE = {"POST": "manage_inventory", "PATCH": "manage_inventory", "DELETE": "manage_inventory"}


def _host(pk: int) -> Host:
    host = Host.objects.filter(pk=pk).first()
    if host is None:
        raise serializers.ValidationError({"host": [f"No host with id {pk}."]})
    return host


class HostListView(ApiListView):
    serializer_class = HostSerializer
    site_actions = {"POST": "manage_inventory"}

    def get_queryset(self) -> QuerySet[Host]:
        if self.schema_only:
            return Host.objects.none()
        return access.visible_hosts(self.request.user).order_by("name")

    @extend_schema(responses={201: HostSerializer})
    def post(self, request: ApiRequest) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        host = services.create_host(by=request.user, request=request, **serializer.validated_data)
        return Response(self.get_serializer(host).data, status=status.HTTP_201_CREATED)


class HostDetailView(ApiView):
    serializer_class = HostSerializer
    object_site_actions = WRITE
    lookup_url_kwarg = "host_id"

    def get_queryset(self) -> QuerySet[Host]:
        if self.schema_only:
            return Host.objects.none()
        return access.visible_hosts(self.request.user)

    def get(self, request: Request, host_id: int) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    def patch(self, request: ApiRequest, host_id: int) -> Response:
        host = self.get_object()
        serializer = self.get_serializer(host, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        changes = changed_only(host, dict(serializer.validated_data))
        if changes:
            host = services.update_host(host, by=request.user, request=request, **changes)
        return Response(self.get_serializer(host).data)

    @extend_schema(responses={204: None})
    def delete(self, request: ApiRequest, host_id: int) -> Response:
        """Delete a host that has no VMs."""
        services.delete_host(self.get_object(), by=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class HostActionView(ApiView):
    """An action on a libvirt host named in the URL (site administrators only)."""

    site_actions = {"POST": "manage_inventory"}

    def host(self, name: str) -> Host:
        return get_object_or_404(Host, name=name)


class HostTestConnectionView(HostActionView):
    serializer_class = HostInfoSerializer

    @extend_schema(request=None, responses={200: HostInfoSerializer})
    def post(self, request: ApiRequest, name: str) -> Response:
        """Connect to the host's libvirt and report its versions; a failure is a 400 on
        `libvirt_uri` with libvirt's own message."""
        info = services.test_connection(self.host(name), by=request.user, request=request)
        return Response(HostInfoSerializer(info).data)


class HostDiscoverView(HostActionView):
    serializer_class = DiscoveryResultSerializer

    @extend_schema(request=None, responses={200: DiscoveryResultSerializer})
    def post(self, request: ApiRequest, name: str) -> Response:
        """Discover the host's domains: new ones become VMs, known ones get their disks
        updated, vanished ones are marked (never deleted)."""
        result = services.discover_host(self.host(name), by=request.user, request=request)
        return Response(DiscoveryResultSerializer(result).data)


def _vm_fields(validated: dict[str, Any]) -> dict[str, Any]:
    """Serializer output → service keywords (host resolved)."""
    data = dict(validated)
    if "host_id" in data:
        data["host"] = _host(data.pop("host_id"))
    return data


class VmView(ApiView):
    serializer_class = VmSerializer

    def get_queryset(self) -> QuerySet[VirtualMachine]:
        if self.schema_only:
            return VirtualMachine.objects.none()
        return access.visible_vms(self.request.user).prefetch_related("disks").order_by("name")

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        if not self.schema_only:
            context["hook_vm_ids"] = access.hook_detail_vm_ids(self.request.user)
        return context


class VmListView(ListModelMixin, VmView):
    get = ApiListView.get

    site_actions = {"POST": "manage_inventory"}

    @extend_schema(responses={201: VmSerializer})
    def post(self, request: ApiRequest) -> Response:
        """Register a VM: its disks must be files inside the host's allowed roots."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        vm = services.create_vm(
            by=request.user, request=request, **_vm_fields(serializer.validated_data)
        )
        vm = self.get_queryset().get(pk=vm.pk)
        return Response(self.get_serializer(vm).data, status=status.HTTP_201_CREATED)


class VmDetailView(VmView):
    object_site_actions = WRITE
    lookup_url_kwarg = "vm_id"

    def get(self, request: Request, vm_id: int) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    def patch(self, request: ApiRequest, vm_id: int) -> Response:
        """Change a VM; `disks` is replaced whole, `extension` key by key."""
        vm = self.get_object()
        serializer = self.get_serializer(vm, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        current = {
            "disks": [{"lun": d.lun, "path": d.path} for d in vm.disks.all()],
            **{k: getattr(vm, k) for k in data if k != "disks"},
        }
        changes = changed_only(vm, data, current)
        if changes:
            services.update_vm(vm, by=request.user, request=request, **_vm_fields(changes))
        return Response(self.get_serializer(self.get_queryset().get(pk=vm.pk)).data)

    @extend_schema(responses={204: None})
    def delete(self, request: ApiRequest, vm_id: int) -> Response:
        """Delete a VM that has no protection or backups in any vault."""
        services.delete_vm(self.get_object(), by=request.user, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class VmRepairExtensionView(VmView):
    lookup_url_kwarg = "vm_id"

    @extend_schema(request=None, responses={200: VmSerializer})
    def post(self, request: ApiRequest, vm_id: int) -> Response:
        """Repair the VM's backup extension: a failed extension is cleared, so the next
        backup installs and validates it afresh. Operators of the vault that protects the VM
        and site administrators; an unprotected VM, site administrators only."""
        vm = self.get_object()
        services.repair_extension(vm, by=request.user, request=request)
        return Response(self.get_serializer(self.get_queryset().get(pk=vm.pk)).data)
