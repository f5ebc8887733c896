"""Inventory pages: hosts and VMs (site administrators only; others get 403)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.db.models import Count, OuterRef, Prefetch
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from inventory.forms import HostForm, VMForm
from inventory.models import Disk, Host, VirtualMachine
from portal.views import count_of, done
from vaults import access, audit
from vaults.models import ItemState, ProtectedVM


def _require_admin(request):
    access.require_site(request.user, "manage_inventory")


def _host_state(host: Host) -> dict:
    return {
        "name": host.name,
        "snapshot_root": host.snapshot_root,
        "allowed_roots": list(host.allowed_roots or []),
    }


def _vm_state(vm: VirtualMachine) -> dict:
    state = {f: getattr(vm, f) for f in VMForm.Meta.fields if f != "host"}
    state["host"] = vm.host.name
    state["disks"] = [{"lun": d.lun, "path": d.path, "size": d.size} for d in vm.disks.all()]
    return state


# -- hosts --------------------------------------------------------------------------------------


@login_required
def host_list(request):
    _require_admin(request)
    hosts = Host.objects.annotate(
        vm_count=count_of(VirtualMachine.objects.filter(host=OuterRef("pk")), "host"),
        vault_count=Count("linked_vaults", distinct=True),
    ).order_by("name")
    return render(request, "inventory/host_list.html", {"hosts": hosts})


def _host_form_page(request, host=None):
    before = _host_state(host) if host else None
    form = HostForm(request.POST or None, instance=host)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            saved = form.save()
            audit.record(
                "host.update" if before else "host.create",
                actor=request.user,
                request=request,
                obj=saved,
                before=before,
                after=_host_state(saved),
            )
        messages.success(request, f"Host {saved.name} saved.")
        return done(request, reverse("host-list"))
    return render(request, "inventory/host_form.html", {"form": form, "host": host})


@login_required
def host_create(request):
    _require_admin(request)
    return _host_form_page(request)


@login_required
def host_edit(request, name):
    _require_admin(request)
    return _host_form_page(request, get_object_or_404(Host, name=name))


# -- VMs ----------------------------------------------------------------------------------------


def _live_protections():
    return ProtectedVM.objects.exclude(state=ItemState.SOFT_DELETED).select_related("vault")


@login_required
def vm_list(request):
    _require_admin(request)
    vms = (
        VirtualMachine.objects.select_related("host")
        .annotate(disk_count=count_of(Disk.objects.filter(vm=OuterRef("pk")), "vm"))
        .prefetch_related(Prefetch("protections", queryset=_live_protections(), to_attr="live"))
        .order_by("name")
    )
    return render(request, "inventory/vm_list.html", {"vms": vms})


@login_required
def vm_detail(request, name):
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


def _vm_form_page(request, vm=None):
    before = _vm_state(vm) if vm else None
    form = VMForm(request.POST or None, instance=vm)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            saved = form.save()
            form.save_disks(saved)
            audit.record(
                "vm.update" if before else "vm.create",
                actor=request.user,
                request=request,
                obj=saved,
                before=before,
                after=_vm_state(saved),
            )
        messages.success(request, f"VM {saved.name} saved.")
        return done(request, reverse("vm-detail", args=[saved.name]))
    return render(request, "inventory/vm_form.html", {"form": form, "vm": vm})


@login_required
def vm_create(request):
    _require_admin(request)
    return _vm_form_page(request)


@login_required
def vm_edit(request, name):
    _require_admin(request)
    return _vm_form_page(request, get_object_or_404(VirtualMachine, name=name))
