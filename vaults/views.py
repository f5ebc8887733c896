"""Vault pages: list, create, overview, settings, protected items, protection, access.

Each view first asks `access.get_vault(user, name, action)` (404 for non-members, 403 for a
role too low), then lets `vaults.services` do any change.
"""

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import OuterRef, Prefetch
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import (
    url_has_allowed_host_and_scheme,
    urlencode,
)
from django.views.decorators.http import require_POST
from django_htmx.http import HTMX_STOP_POLLING

from inventory import services as inventory_services
from inventory.models import Disk, Host, VirtualMachine
from jobs import hook_details
from jobs.backup import ACTIVE, ON_DEMAND_DEFAULT_DAYS, SCHEDULABLE, backup_now
from jobs.models import Operation
from jobs.restore import request_restore
from policies.models import BackupPolicy
from portal.pages import (
    annotate_vault_counts,
    apply_errors,
    approval_pending,
    count_of,
    done,
    error_text,
    live_items,
    live_rps,
    render_page,
)
from security import alerts
from security.keys import has_protected, key_name
from security.models import CustomerKey
from security.mua import ApprovalRequired
from vaults import access, file_recovery, lifecycle, services
from vaults.forms import (
    STOP_MODE_HELP,
    STOP_MODE_LABELS,
    BackupNowForm,
    EncryptionForm,
    GuardForm,
    HostLinkForm,
    MemberForm,
    PolicyChoiceForm,
    ProtectForm,
    RestoreForm,
    StopProtectionForm,
    VaultCreateForm,
    VaultSettingsForm,
    lun_label,
)
from vaults.models import (
    BinReason,
    Encryption,
    FileRecoverySession,
    GuardApprover,
    ItemState,
    ProtectedVM,
    RecoveryPoint,
    RPType,
    SoftDeleteState,
    Vault,
    VaultMembership,
)
from vaults.storage import vault_storage


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
    context = vault_context(
        request, vault, "overview", counts=counts, hosts=hosts, storage=vault_storage(vault)
    )
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
        except ApprovalRequired as exc:
            return approval_pending(request, exc)
        except ValidationError as exc:
            vault.refresh_from_db()
            apply_errors(form, exc)
        else:
            messages.success(request, "Settings saved." if changes else "Nothing changed.")
            return done(request, reverse("vault-settings", args=[vault.name]))
    context = vault_context(request, vault, "settings", form=form, **_settings_notes(vault))
    return render(request, "vaults/vault_settings.html", context)


def _settings_notes(vault: Vault) -> dict:
    return {
        "always_on": vault.soft_delete_state == SoftDeleteState.ALWAYS_ON,
        "locked": vault.immutability == "locked",
    }


@login_required
def vault_encryption(request, name):
    """Platform key or a customer-managed key chosen among the registered ones (names only)."""
    vault = access.get_vault(request.user, name, "change_settings")
    current = key_name(vault)
    key_names = list(CustomerKey.objects.order_by("name").values_list("name", flat=True))
    initial = {"encryption": vault.encryption, "encryption_key": current or ""}
    form = EncryptionForm(request.POST or None, key_names=key_names, initial=initial)
    if request.method == "POST" and form.is_valid():
        changes = {"encryption": form.cleaned_data["encryption"]}
        if changes["encryption"] == Encryption.CUSTOMER_MANAGED:
            changes["encryption_key"] = form.cleaned_data["encryption_key"]
        unchanged = changes["encryption"] == vault.encryption and (
            changes.get("encryption_key") in (None, current)
        )
        try:
            if not unchanged:
                services.update_vault(vault, by=request.user, request=request, **changes)
        except ApprovalRequired as exc:
            return approval_pending(request, exc)
        except ValidationError as exc:
            vault.refresh_from_db()
            apply_errors(form, exc)
        else:
            messages.success(request, "Nothing changed." if unchanged else "Encryption saved.")
            return done(request, reverse("vault-encryption", args=[vault.name]))
    context = vault_context(
        request,
        vault,
        "encryption",
        form=form,
        current_key=current,
        has_keys=bool(key_names),
        has_protected=has_protected(vault),
    )
    return render(request, "vaults/vault_encryption.html", context)


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


def _item(vault: Vault, vm_name: str) -> ProtectedVM:
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
    return item


TIERS = [RPType.SNAPSHOT, RPType.SNAPSHOT_AND_VAULT, RPType.VAULT]
RECENT_JOBS = 10


def _item_context(request, vault: Vault, item: ProtectedVM, **extra) -> dict:
    """The protected VM page: recovery points grouped by tier, recent jobs, the running job."""
    rps = list(item.recovery_points.filter(soft_deleted_at__isnull=True).order_by("-time"))
    groups = [(t, t.label, [rp for rp in rps if rp.type == t]) for t in TIERS]
    jobs = list(item.jobs.select_related("created_by").order_by("-created_at", "-id")[:RECENT_JOBS])
    active = list(item.jobs.filter(status__in=ACTIVE).order_by("-created_at", "-id"))
    caps = access.capabilities(request.user, vault)
    can_backup = (
        caps["backup_now"]
        and item.state in SCHEDULABLE
        and not any(j.operation == Operation.BACKUP for j in active)
    )
    backup_form = extra.pop("backup_form", None)
    if can_backup and backup_form is None:
        backup_form = BackupNowForm(initial={"retain_until": _default_retain_until()})
    return vault_context(
        request,
        vault,
        "items",
        item=item,
        rps=rps,
        rp_groups=[g for g in groups if g[2]],
        jobs=jobs,
        active_jobs=active,
        backup_form=backup_form if can_backup else None,
        extension_message=hook_details.message(
            item.vm.extension_code,
            item.vm.extension_message,
            details=caps["view_hook_details"],
        ),
        **_protection(vault, item, caps, extra),
        **extra,
    )


def _protection(vault: Vault, item: ProtectedVM, caps: dict, bound: dict) -> dict:
    """The forms of the protection card, as far as the user's role and the item's state allow
    (a bound form with errors from a failed POST replaces its blank one)."""
    out: dict = {"stop_form": None, "resume_form": None, "policy_form": None}
    state = item.state
    policies = vault.policies.order_by("name")
    if caps["stop_protection"] and state in lifecycle.STOPPABLE:
        modes = lifecycle.stop_modes(vault)
        if state == ItemState.PROTECTION_STOPPED:
            modes = [m for m in modes if m != item.retention_mode]
        out["stop_form"] = bound.pop("stop_form", None) or StopProtectionForm()
        out["stop_modes"] = [(m, STOP_MODE_LABELS[m], STOP_MODE_HELP[m]) for m in modes]
        out["immutable"] = vault.is_immutable
    if caps["resume_protection"] and state == ItemState.PROTECTION_STOPPED:
        out["resume_form"] = bound.pop("resume_form", None) or PolicyChoiceForm(
            policies=policies, required=False
        )
    if caps["change_item_policy"] and state != ItemState.SOFT_DELETED:
        out["policy_form"] = bound.pop("policy_form", None) or PolicyChoiceForm(
            policies=policies, initial={"policy": item.policy.name}
        )
    out["can_undelete"] = caps["undelete"] and state == ItemState.SOFT_DELETED
    return out


def _default_retain_until():
    return timezone.localdate() + timedelta(days=ON_DEMAND_DEFAULT_DAYS)


@login_required
def item_detail(request, name, vm_name):
    """The page; its `live` partial polls every 2 s while a job of the item is unfinished and
    is answered with 286 (stop polling) once none is."""
    vault = access.get_vault(request.user, name, "view")
    item = _item(vault, vm_name)
    context = _item_context(request, vault, item)
    status = HTMX_STOP_POLLING if request.htmx and not context["active_jobs"] else 200
    return render_page(request, "vaults/item_detail.html", context, partial="live", status=status)


@login_required
def item_backup_now(request, name, vm_name):
    """Backup now: the job detail for a plain POST; htmx gets the item's live section back."""
    vault = access.get_vault(request.user, name, "backup_now")
    item = _item(vault, vm_name)
    data = request.POST if request.method == "POST" else None
    form = BackupNowForm(data, initial={"retain_until": _default_retain_until()})
    if request.method == "POST" and form.is_valid():
        try:
            job = backup_now(
                item,
                by=request.user,
                request=request,
                retain_until=form.cleaned_data["retain_until"],
            )
        except ValidationError as exc:
            apply_errors(form, exc)
        else:
            if request.htmx:
                context = _item_context(request, vault, item, started=job)
                return render_page(request, "vaults/item_detail.html", context, partial="live")
            messages.success(request, f"Backup of {item.vm.name} started (job {job.pk}).")
            return redirect("job-detail", vault.name, job.pk)
    if request.htmx:  # htmx swaps 200s only: the errors come back inside the live section
        context = _item_context(request, vault, item, backup_form=form)
        return render_page(request, "vaults/item_detail.html", context, partial="live")
    context = vault_context(request, vault, "items", item=item, form=form)
    status = 400 if request.method == "POST" else 200
    return render(request, "vaults/backup_now.html", context, status=status)


@login_required
@require_POST
def item_repair_extension(request, name, vm_name):
    vault = access.get_vault(request.user, name, "backup_now")
    item = _item(vault, vm_name)
    try:
        inventory_services.repair_extension(item.vm, by=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(
            request,
            f"The backup extension of {item.vm.name} will be installed and validated again "
            "on its next backup.",
        )
    return done(request, reverse("item-detail", args=[vault.name, item.vm.name]))


# -- protection lifecycle (stop, resume, undelete, change policy, purge) ---------------------------


def _item_refused(request, vault, item, exc, form_name: str, form):
    """A refused lifecycle POST: the item page with the message next to the form (htmx gets
    the protection card back with 200, since htmx swaps only 200s)."""
    apply_errors(form, exc)
    context = _item_context(request, vault, item, **{form_name: form})
    status = 200 if request.htmx else 400
    return render_page(
        request, "vaults/item_detail.html", context, partial="protection", status=status
    )


def _item_url(vault, item) -> str:
    return reverse("item-detail", args=[vault.name, item.vm.name])


@login_required
@require_POST
def item_stop(request, name, vm_name):
    vault = access.get_vault(request.user, name, "stop_protection")
    item = _item(vault, vm_name)
    form = StopProtectionForm(request.POST)
    if form.is_valid():
        mode = form.cleaned_data["mode"]
        try:
            lifecycle.stop_protection(item, by=request.user, request=request, mode=mode)
        except ApprovalRequired as exc:
            return approval_pending(request, exc)
        except ValidationError as exc:
            item.refresh_from_db()
            return _item_refused(request, vault, item, exc, "stop_form", form)
        if mode == lifecycle.DELETE_DATA:
            messages.success(
                request, f"Protection of {item.vm.name} stopped; its backup data was deleted."
            )
            return done(request, reverse("vault-recycle-bin", args=[vault.name]))
        messages.success(request, f"Protection of {item.vm.name} stopped; its data is retained.")
        return done(request, _item_url(vault, item))
    return _item_refused(request, vault, item, ValidationError([]), "stop_form", form)


@login_required
@require_POST
def item_resume(request, name, vm_name):
    vault = access.get_vault(request.user, name, "resume_protection")
    item = _item(vault, vm_name)
    form = PolicyChoiceForm(request.POST, policies=vault.policies.all(), required=False)
    if form.is_valid():
        try:
            lifecycle.resume_protection(
                item, by=request.user, request=request, policy=form.cleaned_data["policy"]
            )
        except ApprovalRequired as exc:
            return approval_pending(request, exc)
        except ValidationError as exc:
            item.refresh_from_db()
            return _item_refused(request, vault, item, exc, "resume_form", form)
        messages.success(request, f"Protection of {item.vm.name} resumed.")
        return done(request, _item_url(vault, item))
    return _item_refused(request, vault, item, ValidationError([]), "resume_form", form)


@login_required
@require_POST
def item_change_policy(request, name, vm_name):
    vault = access.get_vault(request.user, name, "change_item_policy")
    item = _item(vault, vm_name)
    form = PolicyChoiceForm(request.POST, policies=vault.policies.all())
    if form.is_valid():
        policy = form.cleaned_data["policy"]
        try:
            if policy.pk != item.policy_id:
                services.update_item(item, by=request.user, request=request, policy=policy)
        except ApprovalRequired as exc:
            return approval_pending(request, exc)
        except ValidationError as exc:
            item = _item(vault, vm_name)
            return _item_refused(request, vault, item, exc, "policy_form", form)
        messages.success(request, f"{item.vm.name} is protected by policy {policy.name}.")
        return done(request, _item_url(vault, item))
    return _item_refused(request, vault, item, ValidationError([]), "policy_form", form)


def _binned_item(vault: Vault, vm_name: str) -> ProtectedVM:
    item = (
        vault.protected_items.select_related("vm", "policy", "vault")
        .filter(vm__name=vm_name, state=ItemState.SOFT_DELETED)
        .order_by("-deleted_at", "-pk")
        .first()
    )
    if item is None:
        raise Http404("No such item in the recycle bin.")
    return item


def _back(request, fallback: str) -> str:
    """The page a recycle-bin or alert action returns to (`next`, if it is ours)."""
    nxt = request.POST.get("next", "")
    if nxt and url_has_allowed_host_and_scheme(nxt, {request.get_host()}, request.is_secure()):
        return nxt
    return fallback


@login_required
@require_POST
def item_undelete(request, name, vm_name):
    vault = access.get_vault(request.user, name, "undelete")
    item = _binned_item(vault, vm_name)
    try:
        lifecycle.undelete(item, by=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return done(request, _back(request, reverse("vault-recycle-bin", args=[vault.name])))
    messages.success(
        request, f"{item.vm.name} undeleted: protection stopped, its data is retained."
    )
    return done(request, _item_url(vault, item))


@login_required
@require_POST
def item_purge(request, name, vm_name):
    vault = access.get_vault(request.user, name, "stop_protection")
    item = _binned_item(vault, vm_name)
    try:
        job = lifecycle.purge_now(item, by=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return done(request, _back(request, reverse("vault-recycle-bin", args=[vault.name])))
    messages.success(request, f"Purge of {item.vm.name} queued (job {job.pk}).")
    return done(request, reverse("job-detail", args=[vault.name, job.pk]))


# -- the recycle bin ----------------------------------------------------------------------------


def purge_allowed(vault: Vault) -> bool:
    """Whether "Purge now" can succeed in the vault (the rules of `lifecycle.purge_now`, which
    decides again): only with soft delete disabled and the vault not immutable."""
    return vault.soft_delete_state == SoftDeleteState.DISABLED and not vault.is_immutable


@login_required
def vault_recycle_bin(request, name):
    vault = access.get_vault(request.user, name, "view")
    entries = lifecycle.recycle_bin(vault, user=request.user)
    caps = access.capabilities(request.user, vault)
    context = vault_context(
        request,
        vault,
        "recycle-bin",
        entries=entries,
        reasons=BinReason.choices,
        purge_allowed=purge_allowed(vault),
        purge_allowed_here=caps["stop_protection"] and purge_allowed(vault),
    )
    return render(request, "vaults/recycle_bin.html", context)


@login_required
def site_recycle_bin(request):
    access.require_site(request.user, "view_recycle_bin")
    entries = lifecycle.site_recycle_bin(user=request.user)
    context = {"entries": entries, "reasons": BinReason.choices}
    return render(request, "vaults/site_recycle_bin.html", context)


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


# -- restore and file recovery ------------------------------------------------------------------


def _rp(vault: Vault, vm_name: str, rp_id) -> RecoveryPoint:
    item = _item(vault, vm_name)
    rp = (
        RecoveryPoint.objects.filter(vault=vault, protected_item=item, pk=rp_id)
        .select_related("protected_item__vm__host", "vault")
        .first()
    )
    if rp is None:
        raise Http404("No such recovery point.")
    return rp


# request_restore's error keys → the restore form's fields ("detail" goes above the form).
RESTORE_FIELDS = {
    "target.path": "path",
    "target.name": "name",
    "target.host": "host",
    "target": "path",
}


@login_required
def rp_restore(request, name, vm_name, rp_id):
    vault = access.get_vault(request.user, name, "restore")
    rp = _rp(vault, vm_name, rp_id)
    hosts = list(vault.linked_hosts.order_by("name"))
    selective = bool(rp.excluded_luns)
    initial = {"host": hosts[0].pk} if len(hosts) == 1 else {}
    data = request.POST if request.method == "POST" else None
    form = RestoreForm(data, rp=rp, hosts=hosts, selective=selective, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            job = request_restore(rp, by=request.user, request=request, **form.request_args())
        except ValidationError as exc:
            apply_errors(form, exc, RESTORE_FIELDS)
        else:
            messages.success(request, f"Restore of {rp.protected_item.vm.name} queued.")
            return done(request, reverse("job-detail", args=[vault.name, job.pk]))
    context = vault_context(
        request,
        vault,
        "items",
        item=rp.protected_item,
        rp=rp,
        form=form,
        selective=selective,
        hosts=hosts,
        disks=[{**d, "label": lun_label(d["lun"])} for d in rp.disks],
    )
    status = 400 if request.method == "POST" else 200
    return render(request, "vaults/rp_restore.html", context, status=status)


def _query(**params) -> str:
    """A query string of the non-empty params; None when a value cannot be sent as UTF-8
    (a file name that is not valid UTF-8 on ext4)."""
    try:
        return urlencode({k: v for k, v in params.items() if v not in (None, "")})
    except UnicodeEncodeError:
        return None


def _shown(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _crumbs(path: str, disk, partition) -> list[tuple[str, str]]:
    crumbs = [("/", _query(disk=disk, partition=partition, path="/"))]
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        sub = "/" + "/".join(parts[: i + 1])
        crumbs.append((_shown(part), _query(disk=disk, partition=partition, path=sub)))
    return crumbs


def _last_session(rp: RecoveryPoint, user) -> FileRecoverySession | None:
    return (
        FileRecoverySession.objects.filter(recovery_point=rp, user=user)
        .order_by("-created_at")
        .first()
    )


def _expired_text(rp: RecoveryPoint, user) -> str:
    last = _last_session(rp, user)
    if last is not None and last.ended_at is None and not last.is_open():
        return (
            f"Your file-recovery session expired at {last.expires_at:%Y-%m-%d %H:%M} UTC; "
            "open a new one to continue."
        )
    return ""


def _files_context(request, vault, rp, session, **extra) -> dict:
    return vault_context(
        request,
        vault,
        "items",
        item=rp.protected_item,
        rp=rp,
        session=session,
        damage=alerts.open_damage_alert(rp),
        disks=[
            {**d, "label": lun_label(d["lun"]), "query": _query(disk=d["lun"])} for d in rp.disks
        ],
        **extra,
    )


@login_required
def rp_files(request, name, vm_name, rp_id):
    """Browse a recovery point's files: pick a disk (and a partition), walk directories.

    Needs an open session of this user for this RP; without one the page offers to open it.
    """
    vault = access.get_vault(request.user, name, "file_recovery")
    rp = _rp(vault, vm_name, rp_id)
    session = file_recovery.current_session(rp, request.user)
    if session is None:
        context = _files_context(request, vault, rp, None, expired=_expired_text(rp, request.user))
        return render(request, "vaults/rp_files.html", context)
    disk = request.GET.get("disk", "")
    partition = request.GET.get("partition", "")
    path = request.GET.get("path") or "/"
    browse: dict = {
        "disk": disk,
        "partition": partition,
        "path": path,
        "partitions": None,
        "entries": None,
        "error": "",
    }
    status = 200
    try:
        if disk != "" and partition == "":
            parts = file_recovery.partitions(rp, request.user, disk)
            if parts:
                browse["partitions"] = [
                    {"part": p, "query": _query(disk=disk, partition=p.index)} for p in parts
                ]
        if disk != "" and not browse["partitions"]:
            entries = file_recovery.list_dir(
                rp, request.user, disk=disk, partition=partition or None, path=path
            )
            browse["crumbs"] = _crumbs(path, disk, partition)
            browse["entries"] = [
                {
                    "entry": e,
                    "name": _shown(e.name),
                    "browse": _query(disk=disk, partition=partition, path=e.path)
                    if e.kind == "dir"
                    else None,
                    "download": _query(disk=disk, partition=partition, path=e.path)
                    if e.kind in ("file", "dir")
                    else None,
                }
                for e in sorted(entries, key=lambda e: (e.kind != "dir", e.name))
            ]
            browse["here"] = _query(disk=disk, partition=partition, path=path)
    except ValidationError as exc:
        browse["error"] = error_text(exc)
        status = 200 if request.htmx else 400
    except file_recovery.Unreadable as exc:
        browse["error"] = str(exc)
        status = 200 if request.htmx else 409
    context = _files_context(request, vault, rp, session, browse=browse)
    return render_page(request, "vaults/rp_files.html", context, partial="listing", status=status)


def _files_url(vault, rp) -> str:
    return reverse("rp-files", args=[vault.name, rp.protected_item.vm.name, rp.pk])


@login_required
@require_POST
def rp_files_session(request, name, vm_name, rp_id):
    vault = access.get_vault(request.user, name, "file_recovery")
    rp = _rp(vault, vm_name, rp_id)
    if file_recovery.current_session(rp, request.user) is None:
        try:
            session = file_recovery.open_session(rp, by=request.user, request=request)
        except ValidationError as exc:
            messages.error(request, error_text(exc))
        else:
            messages.success(
                request,
                f"File-recovery session open until {session.expires_at:%Y-%m-%d %H:%M} UTC.",
            )
    return done(request, _files_url(vault, rp))


@login_required
@require_POST
def rp_files_session_end(request, name, vm_name, rp_id):
    vault = access.get_vault(request.user, name, "file_recovery")
    rp = _rp(vault, vm_name, rp_id)
    session = file_recovery.current_session(rp, request.user)
    if session is not None:
        file_recovery.end_session(session, by=request.user, request=request)
        messages.success(request, "File-recovery session ended.")
    return done(request, _files_url(vault, rp))


def safe_filename(name: str) -> str:
    """A download name without path separators or control characters, valid UTF-8."""
    name = _shown(name)
    name = "".join("_" if ch in "/\\" or ord(ch) < 32 or ord(ch) == 127 else ch for ch in name)
    return name.strip(" .") or "download"


@login_required
def rp_files_download(request, name, vm_name, rp_id):
    """A file as it is, or a folder as a zip, streamed (RFC 6266/5987 file name)."""
    vault = access.get_vault(request.user, name, "file_recovery")
    rp = _rp(vault, vm_name, rp_id)
    session = file_recovery.current_session(rp, request.user)
    if session is None:
        expired = _expired_text(rp, request.user) or (
            "No open file-recovery session for this recovery point; open one first."
        )
        context = _files_context(request, vault, rp, None, expired=expired)
        return render(request, "vaults/rp_files.html", context, status=403)
    path = request.GET.get("path") or ""
    try:
        download = file_recovery.download(
            rp,
            request.user,
            disk=request.GET.get("disk"),
            partition=request.GET.get("partition") or None,
            path=path,
            request=request,
        )
    except (ValidationError, file_recovery.Unreadable) as exc:
        # The download links are plain links: this page replaces the one the user was on.
        unreadable = isinstance(exc, file_recovery.Unreadable)
        text = str(exc) if unreadable else error_text(exc)
        browse = {"error": text, "disk": request.GET.get("disk", "")}
        context = _files_context(request, vault, rp, session, browse=browse)
        return render(request, "vaults/rp_files.html", context, status=409 if unreadable else 400)
    return download.response(safe_filename(download.name))
