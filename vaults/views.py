"""Vault pages: list, create, overview, settings, protected items, protection, access.

Each view first asks `access.get_vault(user, name, action)` (404 for non-members, 403 for a
role too low), then lets `vaults.services` do any change.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import OuterRef, Prefetch
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from inventory.models import Disk, Host, VirtualMachine
from policies.models import BackupPolicy
from portal.views import (
    annotate_vault_counts,
    apply_errors,
    count_of,
    done,
    error_text,
    live_items,
    live_rps,
    render_page,
)
from vaults import access, services
from vaults.forms import (
    GuardForm,
    HostLinkForm,
    MemberForm,
    ProtectForm,
    VaultCreateForm,
    VaultSettingsForm,
)
from vaults.models import GuardApprover, ItemState, ProtectedVM, Vault, VaultMembership


def vault_context(request, vault: Vault, tab: str, **extra) -> dict:
    return {
        "vault": vault,
        "caps": access.capabilities(request.user, vault),
        "tab": tab,
        **extra,
    }


# -- list, create, overview ---------------------------------------------------------------------


@login_required
def vault_list(request):
    vaults = annotate_vault_counts(Vault.objects.visible_to(request.user)).annotate(
        policy_count=count_of(BackupPolicy.objects.filter(vault=OuterRef("pk")), "vault")
    )
    context = {"vaults": vaults, "site_caps": access.site_capabilities(request.user)}
    return render(request, "vaults/vault_list.html", context)


@login_required
def vault_create(request):
    access.require_site(request.user, "create_vault")
    form = VaultCreateForm(request.POST or None, initial=_setting_initial(Vault()))
    if request.method == "POST" and form.is_valid():
        try:
            vault = services.create_vault(
                by=request.user, request=request, name=form.cleaned_data["name"], **form.settings()
            )
        except ValidationError as exc:
            apply_errors(form, exc)
        else:
            messages.success(request, f"Vault {vault.name} created; you are its owner.")
            return done(request, reverse("vault-detail", args=[vault.name]))
    return render(request, "vaults/vault_create.html", {"form": form})


def _setting_initial(vault: Vault) -> dict:
    return {f: getattr(vault, f) for f in VaultSettingsForm.FIELDS}


@login_required
def vault_detail(request, name):
    vault = access.get_vault(request.user, name, "view")
    counts = {
        "items": live_items().filter(vault=vault).count(),
        "rps": live_rps().filter(vault=vault).count(),
        "policies": vault.policies.count(),
        "soft_deleted": vault.protected_items.filter(state=ItemState.SOFT_DELETED).count(),
    }
    hosts = vault.linked_hosts.annotate(vm_count=count_of(_host_vms(), "host"))
    context = vault_context(request, vault, "overview", counts=counts, hosts=hosts)
    return render(request, "vaults/vault_detail.html", context)


def _host_vms():
    return VirtualMachine.objects.filter(host=OuterRef("pk"))


# -- settings and delete ------------------------------------------------------------------------


@login_required
def vault_settings(request, name):
    vault = access.get_vault(request.user, name, "change_settings")
    form = VaultSettingsForm(request.POST or None, initial=_setting_initial(vault))
    if request.method == "POST" and form.is_valid():
        changes = form.changes(vault)
        try:
            if changes:
                services.update_vault(vault, by=request.user, request=request, **changes)
        except ValidationError as exc:
            vault.refresh_from_db()
            apply_errors(form, exc)
        else:
            messages.success(request, "Settings saved." if changes else "Nothing changed.")
            return done(request, reverse("vault-settings", args=[vault.name]))
    context = vault_context(request, vault, "settings", form=form)
    return render(request, "vaults/vault_settings.html", context)


@login_required
@require_POST
def vault_delete(request, name):
    vault = access.get_vault(request.user, name, "delete_vault")
    try:
        services.delete_vault(vault, by=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return done(request, reverse("vault-settings", args=[vault.name]))
    messages.success(request, f"Vault {name} deleted.")
    return done(request, reverse("vault-list"))


# -- protected items ----------------------------------------------------------------------------


@login_required
def item_list(request, name):
    vault = access.get_vault(request.user, name, "view")
    items = (
        vault.protected_items.select_related("vm", "vm__host", "policy")
        .annotate(
            rp_count=count_of(live_rps().filter(protected_item=OuterRef("pk")), "protected_item")
        )
        .order_by("vm__name")
    )
    context = vault_context(request, vault, "items", items=items)
    return render(request, "vaults/item_list.html", context)


@login_required
def item_detail(request, name, vm_name):
    vault = access.get_vault(request.user, name, "view")
    items = vault.protected_items.select_related("vm", "vm__host", "policy").prefetch_related(
        Prefetch("vm__disks", queryset=Disk.objects.order_by("lun"))
    )
    # A soft-deleted item and a newer live item may share the VM: prefer the live one.
    item = (
        items.filter(vm__name=vm_name).exclude(state=ItemState.SOFT_DELETED).first()
        or items.filter(vm__name=vm_name).order_by("-created_at").first()
    )
    if item is None:
        raise Http404("No such protected VM in this vault.")
    rps = item.recovery_points.filter(soft_deleted_at__isnull=True).order_by("-time")
    context = vault_context(request, vault, "items", item=item, rps=rps)
    return render(request, "vaults/item_detail.html", context)


@login_required
def protect(request, name):
    vault = access.get_vault(request.user, name, "protect")
    protected = ProtectedVM.objects.exclude(state=ItemState.SOFT_DELETED).values("vm")
    vms = (
        access.visible_vms(request.user)
        .filter(host__in=vault.linked_hosts.all())
        .exclude(pk__in=protected)
        .select_related("host")
        .order_by("name")
    )
    policies = vault.policies.order_by("name")
    initial = {}
    if request.GET.get("vm"):
        initial["vm"] = request.GET["vm"]
    form = ProtectForm(request.POST or None, vms=vms, policies=policies, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            item = services.protect_vm(
                vault,
                by=request.user,
                request=request,
                vm=data["vm"],
                policy=data["policy"],
                included_luns=data["included_luns"],
                excluded_luns=data["excluded_luns"],
            )
        except ValidationError as exc:
            apply_errors(form, exc, {"included_luns": "luns", "excluded_luns": "luns"})
        else:
            messages.success(request, f"Protection enabled for {item.vm.name}.")
            return done(request, reverse("item-detail", args=[vault.name, item.vm.name]))
    context = vault_context(request, vault, "items", form=form, has_vms=vms.exists())
    return render(request, "vaults/protect.html", context)


# -- access -------------------------------------------------------------------------------------


def _access_context(request, vault, **forms):
    user = request.user
    caps = access.capabilities(user, vault)
    site_caps = access.site_capabilities(user)
    linked = vault.linked_hosts.order_by("name")
    context = vault_context(
        request,
        vault,
        "access",
        site_caps=site_caps,
        members=vault.memberships.select_related("user").order_by("user__username"),
        guards=vault.guard_approvers.select_related("user", "assigned_by").order_by(
            "user__username"
        ),
        hosts=linked,
    )
    if caps["assign_roles"]:
        context["member_form"] = forms.get("member_form") or MemberForm()
    if site_caps["assign_guard"]:
        context["guard_form"] = forms.get("guard_form") or GuardForm()
    if site_caps["link_hosts"]:
        unlinked = Host.objects.exclude(pk__in=linked.values("pk")).order_by("name")
        context["link_form"] = forms.get("link_form") or HostLinkForm(hosts=unlinked)
    return context


@login_required
def access_page(request, name):
    vault = access.get_vault(request.user, name, "view")
    return render(request, "vaults/access.html", _access_context(request, vault))


def _back_to_access(request, vault):
    return done(request, reverse("vault-access", args=[vault.name]))


def _access_invalid(request, vault, **forms):
    return render_page(
        request, "vaults/access.html", _access_context(request, vault, **forms), status=400
    )


@login_required
@require_POST
def member_add(request, name):
    vault = access.get_vault(request.user, name, "assign_roles")
    form = MemberForm(request.POST)
    if form.is_valid():
        user = form.cleaned_data["username"]
        try:
            services.add_member(
                vault, by=request.user, request=request, user=user, role=form.cleaned_data["role"]
            )
        except ValidationError as exc:
            apply_errors(form, exc, {"user": "username"})
        else:
            messages.success(request, f"{user.username} is now {form.cleaned_data['role']}.")
            return _back_to_access(request, vault)
    return _access_invalid(request, vault, member_form=form)


@login_required
@require_POST
def member_remove(request, name, pk):
    vault = access.get_vault(request.user, name, "assign_roles")
    membership = get_object_or_404(
        VaultMembership.objects.select_related("user"), vault=vault, pk=pk
    )
    try:
        services.remove_member(membership, by=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, f"{membership.user.username} removed from {vault.name}.")
    return _back_to_access(request, vault)


@login_required
@require_POST
def guard_add(request, name):
    vault = access.get_vault(request.user, name, "view")
    access.require_site(request.user, "assign_guard")
    form = GuardForm(request.POST)
    if form.is_valid():
        user = form.cleaned_data["username"]
        try:
            services.add_guard_approver(vault, by=request.user, request=request, user=user)
        except ValidationError as exc:
            apply_errors(form, exc, {"user": "username"})
        else:
            messages.success(request, f"{user.username} is now a guard approver.")
            return _back_to_access(request, vault)
    return _access_invalid(request, vault, guard_form=form)


@login_required
@require_POST
def guard_remove(request, name, pk):
    vault = access.get_vault(request.user, name, "view")
    access.require_site(request.user, "assign_guard")
    guard = get_object_or_404(GuardApprover.objects.select_related("user"), vault=vault, pk=pk)
    services.remove_guard_approver(guard, by=request.user, request=request)
    messages.success(request, f"{guard.user.username} no longer approves for {vault.name}.")
    return _back_to_access(request, vault)


@login_required
@require_POST
def host_link(request, name):
    vault = access.get_vault(request.user, name, "view")
    access.require_site(request.user, "link_hosts")
    unlinked = Host.objects.exclude(pk__in=vault.linked_hosts.values("pk"))
    form = HostLinkForm(request.POST, hosts=unlinked)
    if form.is_valid():
        host = form.cleaned_data["host"]
        services.link_host(vault, host, by=request.user, request=request)
        messages.success(request, f"Host {host.name} linked.")
        return _back_to_access(request, vault)
    return _access_invalid(request, vault, link_form=form)


@login_required
@require_POST
def host_unlink(request, name, pk):
    vault = access.get_vault(request.user, name, "view")
    access.require_site(request.user, "link_hosts")
    host = get_object_or_404(vault.linked_hosts.all(), pk=pk)
    remaining = vault.linked_hosts.exclude(pk=host.pk)
    try:
        services.set_linked_hosts(vault, remaining, by=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, f"Host {host.name} unlinked.")
    return _back_to_access(request, vault)
