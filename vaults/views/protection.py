"""Protecting a VM and changing its protection: protect, change policy, stop, resume.

A refused change shows the item page again with the message next to its form.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.forms import Form
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST

from portal.pages import PageRequest, apply_errors, approval_pending, done, render_page
from security.mua import ApprovalRequired
from vaults import access
from vaults.forms import PolicyChoiceForm, ProtectForm, StopProtectionForm
from vaults.models import ProtectedVM, StopMode, Vault
from vaults.protection import protect_vm, resume_protection, stop_protection, update_item
from vaults.views.common import item_of, item_url, vault_context
from vaults.views.items import item_context


@login_required
def protect(request: PageRequest, name: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "protect")
    protected = ProtectedVM.objects.live().values("vm")
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
            item = protect_vm(
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
            return done(request, item_url(vault, item))
    context = vault_context(request, vault, "items", form=form, has_vms=vms.exists())
    return render(request, "vaults/protect.html", context)


def _item_refused(
    request: PageRequest,
    vault: Vault,
    item: ProtectedVM,
    exc: ValidationError,
    form_name: str,
    form: Form,
) -> HttpResponse:
    """A refused lifecycle POST: the item page with the message next to the form (htmx gets
    the protection card back with 200, since htmx swaps only 200s)."""
    apply_errors(form, exc)
    context = item_context(request, vault, item, with_rps=not request.htmx, **{form_name: form})
    status = 200 if request.htmx else 400
    return render_page(
        request, "vaults/item_detail.html", context, partial="protection", status=status
    )


@login_required
@require_POST
def item_stop(request: PageRequest, name: str, vm_name: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "stop_protection")
    item = item_of(vault, vm_name)
    form = StopProtectionForm(request.POST)
    if form.is_valid():
        mode = form.cleaned_data["mode"]
        try:
            stop_protection(item, by=request.user, request=request, mode=mode)
        except ApprovalRequired as exc:
            return approval_pending(request, exc)
        except ValidationError as exc:
            item.refresh_from_db()
            return _item_refused(request, vault, item, exc, "stop_form", form)
        if mode == StopMode.DELETE_DATA:
            messages.success(
                request, f"Protection of {item.vm.name} stopped; its backup data was deleted."
            )
            return done(request, reverse("vault-recycle-bin", args=[vault.name]))
        messages.success(request, f"Protection of {item.vm.name} stopped; its data is retained.")
        return done(request, item_url(vault, item))
    return _item_refused(request, vault, item, ValidationError([]), "stop_form", form)


@login_required
@require_POST
def item_resume(request: PageRequest, name: str, vm_name: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "resume_protection")
    item = item_of(vault, vm_name)
    form = PolicyChoiceForm(request.POST, policies=vault.policies.all(), required=False)
    if form.is_valid():
        try:
            resume_protection(
                item, by=request.user, request=request, policy=form.cleaned_data["policy"]
            )
        except ApprovalRequired as exc:
            return approval_pending(request, exc)
        except ValidationError as exc:
            item.refresh_from_db()
            return _item_refused(request, vault, item, exc, "resume_form", form)
        messages.success(request, f"Protection of {item.vm.name} resumed.")
        return done(request, item_url(vault, item))
    return _item_refused(request, vault, item, ValidationError([]), "resume_form", form)


@login_required
@require_POST
def item_change_policy(request: PageRequest, name: str, vm_name: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "change_item_policy")
    item = item_of(vault, vm_name)
    form = PolicyChoiceForm(request.POST, policies=vault.policies.all())
    if form.is_valid():
        policy = form.cleaned_data["policy"]
        try:
            if policy.pk != item.policy_id:
                update_item(item, by=request.user, request=request, policy=policy)
        except ApprovalRequired as exc:
            return approval_pending(request, exc)
        except ValidationError as exc:
            item = item_of(vault, vm_name)
            return _item_refused(request, vault, item, exc, "policy_form", form)
        messages.success(request, f"{item.vm.name} is protected by policy {policy.name}.")
        return done(request, item_url(vault, item))
    return _item_refused(request, vault, item, ValidationError([]), "policy_form", form)
