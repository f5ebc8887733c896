"""Who works in a vault: members and their roles, guard approvers, linked hosts."""

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.forms import Form
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from inventory.models import Host
from portal.pages import PageRequest, apply_errors, done, error_text, render_page
from vaults import access
from vaults.forms import GuardForm, HostLinkForm, MemberForm
from vaults.models import GuardApprover, Vault, VaultMembership
from vaults.services.hosts import link_host, set_linked_hosts
from vaults.services.members import (
    add_guard_approver,
    add_member,
    remove_guard_approver,
    remove_member,
)
from vaults.views.common import vault_context


def _access_context(request: PageRequest, vault: Vault, **forms: Form) -> dict[str, Any]:
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
def access_page(request: PageRequest, name: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "view")
    return render(request, "vaults/access.html", _access_context(request, vault))


def _back_to_access(request: PageRequest, vault: Vault) -> HttpResponse:
    return done(request, reverse("vault-access", args=[vault.name]))


def _access_invalid(request: PageRequest, vault: Vault, **forms: Form) -> HttpResponse:
    return render_page(
        request, "vaults/access.html", _access_context(request, vault, **forms), status=400
    )


@login_required
@require_POST
def member_add(request: PageRequest, name: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "assign_roles")
    form = MemberForm(request.POST)
    if form.is_valid():
        user = form.cleaned_data["username"]
        try:
            add_member(
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
def member_remove(request: PageRequest, name: str, pk: int) -> HttpResponse:
    vault = access.get_vault(request.user, name, "assign_roles")
    membership = get_object_or_404(
        VaultMembership.objects.select_related("user"), vault=vault, pk=pk
    )
    try:
        remove_member(membership, by=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, f"{membership.user.username} removed from {vault.name}.")
    return _back_to_access(request, vault)


@login_required
@require_POST
def guard_add(request: PageRequest, name: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "view")
    access.require_site(request.user, "assign_guard")
    form = GuardForm(request.POST)
    if form.is_valid():
        user = form.cleaned_data["username"]
        try:
            add_guard_approver(vault, by=request.user, request=request, user=user)
        except ValidationError as exc:
            apply_errors(form, exc, {"user": "username"})
        else:
            messages.success(request, f"{user.username} is now a guard approver.")
            return _back_to_access(request, vault)
    return _access_invalid(request, vault, guard_form=form)


@login_required
@require_POST
def guard_remove(request: PageRequest, name: str, pk: int) -> HttpResponse:
    vault = access.get_vault(request.user, name, "view")
    access.require_site(request.user, "assign_guard")
    guard = get_object_or_404(GuardApprover.objects.select_related("user"), vault=vault, pk=pk)
    remove_guard_approver(guard, by=request.user, request=request)
    messages.success(request, f"{guard.user.username} no longer approves for {vault.name}.")
    return _back_to_access(request, vault)


@login_required
@require_POST
def host_link(request: PageRequest, name: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "view")
    access.require_site(request.user, "link_hosts")
    unlinked = Host.objects.exclude(pk__in=vault.linked_hosts.values("pk"))
    form = HostLinkForm(request.POST, hosts=unlinked)
    if form.is_valid():
        host = form.cleaned_data["host"]
        link_host(vault, host, by=request.user, request=request)
        messages.success(request, f"Host {host.name} linked.")
        return _back_to_access(request, vault)
    return _access_invalid(request, vault, link_form=form)


@login_required
@require_POST
def host_unlink(request: PageRequest, name: str, pk: int) -> HttpResponse:
    vault = access.get_vault(request.user, name, "view")
    access.require_site(request.user, "link_hosts")
    host = get_object_or_404(vault.linked_hosts.all(), pk=pk)
    remaining = vault.linked_hosts.exclude(pk=host.pk)
    try:
        set_linked_hosts(vault, remaining, by=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, f"Host {host.name} unlinked.")
    return _back_to_access(request, vault)
