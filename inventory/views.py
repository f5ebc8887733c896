"""Inventory pages: hosts and VMs (site administrators only; others get 403)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Count, OuterRef, Prefetch, QuerySet
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from inventory import services
from inventory.forms import HostForm, VMForm
from inventory.models import Disk, Host, VirtualMachine
from jobs import workers
from portal.pages import PageRequest, apply_errors, count_of, done, error_text, render_page
from vaults import access
from vaults.models import ItemState, ProtectedVM


def _require_admin(request: PageRequest) -> None:
    access.require_site(request.user, "manage_inventory")


# -- hosts --------------------------------------------------------------------------------------


@login_required
def host_list(request: PageRequest) -> HttpResponse:
    _require_admin(request)
    hosts = list(
        Host.objects.annotate(
            vm_count=count_of(VirtualMachine.objects.filter(host=OuterRef("pk")), "host"),
            vault_count=Count("linked_vaults", distinct=True),
        ).order_by("name")
    )
    now = timezone.now()
    statuses = workers.statuses(hosts, now)
    for host in hosts:
        host.worker_status = statuses.get(host.pk)  # type: ignore[attr-defined]  # _host_worker.html
    context = {"hosts": hosts, "workers": workers.listed(now), "now": now}
    return render(request, "inventory/host_list.html", context)


def _host_form_page(request: PageRequest, host: Host | None = None) -> HttpResponse:
    initial = HostForm.initial_from(host) if host else None
    form = HostForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            if host is None:
                host = services.create_host(by=request.user, request=request, **form.cleaned_data)
            else:
                host = services.update_host(
                    host, by=request.user, request=request, **form.cleaned_data
                )
        except ValidationError as exc:
            if host is not None:
                host.refresh_from_db()
            apply_errors(form, exc)
        else:
            messages.success(request, f"Host {host.name} saved.")
            return done(request, reverse("host-detail", args=[host.name]))
    context = {
        "form": form,
        "host": host,
        "worker_status": workers.status_of(host) if host is not None else None,
    }
    return render(request, "inventory/host_form.html", context)


@login_required
def host_create(request: PageRequest) -> HttpResponse:
    _require_admin(request)
    return _host_form_page(request)


@login_required
def host_edit(request: PageRequest, name: str) -> HttpResponse:
    _require_admin(request)
    return _host_form_page(request, get_object_or_404(Host, name=name))


def _host_page(
    request: PageRequest, host: Host, partial: str | None = None, **found: object
) -> HttpResponse:
    """The host, its VMs, and what a connection test or a discovery just found (`found`)."""
    vms = (
        VirtualMachine.objects.filter(host=host)
        .annotate(disk_count=count_of(Disk.objects.filter(vm=OuterRef("pk")), "vm"))
        .order_by("name")
    )
    context = {"host": host, "vms": vms, **found}
    return render_page(request, "inventory/host_detail.html", context, partial=partial)


@login_required
def host_detail(request: PageRequest, name: str) -> HttpResponse:
    _require_admin(request)
    return _host_page(request, get_object_or_404(Host, name=name))


@login_required
@require_POST
def host_test_connection(request: PageRequest, name: str) -> HttpResponse:
    """Shown in place (htmx) or on the host page; nothing is stored but the audit record."""
    _require_admin(request)
    host = get_object_or_404(Host, name=name)
    try:
        info = services.test_connection(host, by=request.user, request=request)
    except ValidationError as exc:
        return _host_page(request, host, "connection", connection_error=error_text(exc))
    return _host_page(request, host, "connection", connection=info)


@login_required
@require_POST
def host_discover(request: PageRequest, name: str) -> HttpResponse:
    _require_admin(request)
    host = get_object_or_404(Host, name=name)
    try:
        result = services.discover_host(host, by=request.user, request=request)
    except ValidationError as exc:
        return _host_page(request, host, "discovery", discovery_error=error_text(exc))
    # One table: each VM with what discovery made of it (new, changed, vanished, unchanged).
    rows = [
        (kind, entry)
        for kind, entries in (
            ("new", result.new),
            ("changed", result.changed),
            ("vanished", result.vanished),
            ("unchanged", result.unchanged),
        )
        for entry in entries
    ]
    return _host_page(request, host, "discovery", result=result, result_rows=rows)


# -- VMs ----------------------------------------------------------------------------------------


def _live_protections() -> QuerySet[ProtectedVM]:
    return ProtectedVM.objects.exclude(state=ItemState.SOFT_DELETED).select_related("vault")


@login_required
def vm_list(request: PageRequest) -> HttpResponse:
    _require_admin(request)
    vms = (
        VirtualMachine.objects.select_related("host")
        .annotate(disk_count=count_of(Disk.objects.filter(vm=OuterRef("pk")), "vm"))
        .prefetch_related(Prefetch("protections", queryset=_live_protections(), to_attr="live"))
        .order_by("name")
    )
    return render(request, "inventory/vm_list.html", {"vms": vms})


@login_required
def vm_detail(request: PageRequest, name: str) -> HttpResponse:
    _require_admin(request)
    vm = get_object_or_404(
        VirtualMachine.objects.select_related("host").prefetch_related(
            Prefetch("disks", queryset=Disk.objects.order_by("lun")),
            Prefetch(
                "protections",
                queryset=ProtectedVM.objects.select_related("vault", "policy").order_by(
                    "-created_at"
                ),
            ),
        ),
        name=name,
    )
    return render(request, "inventory/vm_detail.html", {"vm": vm})


def _vm_form_page(request: PageRequest, vm: VirtualMachine | None = None) -> HttpResponse:
    initial = VMForm.initial_from(vm) if vm else None
    form = VMForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            if vm is None:
                vm = services.create_vm(
                    by=request.user,
                    request=request,
                    host=data["host"],
                    disks=data["disks"],
                    **form.vm_fields(),
                )
            else:
                vm = services.update_vm(
                    vm,
                    by=request.user,
                    request=request,
                    host=data["host"],
                    disks=data["disks"],
                    **form.vm_fields(),
                )
        except ValidationError as exc:
            if vm is not None:
                vm.refresh_from_db()
            apply_errors(form, exc)
        else:
            messages.success(request, f"VM {vm.name} saved.")
            return done(request, reverse("vm-detail", args=[vm.name]))
    return render(request, "inventory/vm_form.html", {"form": form, "vm": vm})


@login_required
def vm_create(request: PageRequest) -> HttpResponse:
    _require_admin(request)
    return _vm_form_page(request)


@login_required
def vm_edit(request: PageRequest, name: str) -> HttpResponse:
    _require_admin(request)
    return _vm_form_page(request, get_object_or_404(VirtualMachine, name=name))
