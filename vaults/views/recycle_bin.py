"""The recycle bins (a vault's, every vault's) and what can be done to a binned item:
undelete it, or purge it now where the vault allows."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from portal.pages import PageRequest, done, error_text
from vaults import access, lifecycle
from vaults.models import BinReason, ItemState, ProtectedVM, SoftDeleteState, Vault
from vaults.protection import undelete
from vaults.views.common import item_url, vault_context


@login_required
def vault_recycle_bin(request: PageRequest, name: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "view")
    entries = lifecycle.recycle_bin(vault, user=request.user)
    caps = access.capabilities(request.user, vault)
    purge_allowed = lifecycle.purge_now_refusal(vault) is None
    context = vault_context(
        request,
        vault,
        "recycle-bin",
        entries=entries,
        reasons=BinReason.choices,
        always_on=vault.soft_delete_state == SoftDeleteState.ALWAYS_ON,
        purge_allowed=purge_allowed,
        purge_allowed_here=caps["stop_protection"] and purge_allowed,
    )
    return render(request, "vaults/recycle_bin.html", context)


@login_required
def site_recycle_bin(request: PageRequest) -> HttpResponse:
    access.require_site(request.user, "view_recycle_bin")
    entries = lifecycle.site_recycle_bin(user=request.user)
    context = {"entries": entries, "reasons": BinReason.choices}
    return render(request, "vaults/site_recycle_bin.html", context)


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


def _back(request: PageRequest, fallback: str) -> str:
    """The page a recycle-bin action returns to (`next`, if it is ours)."""
    nxt = request.POST.get("next", "")
    if nxt and url_has_allowed_host_and_scheme(nxt, {request.get_host()}, request.is_secure()):
        return nxt
    return fallback


@login_required
@require_POST
def item_undelete(request: PageRequest, name: str, vm_name: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "undelete")
    item = _binned_item(vault, vm_name)
    try:
        undelete(item, by=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return done(request, _back(request, reverse("vault-recycle-bin", args=[vault.name])))
    messages.success(
        request, f"{item.vm.name} undeleted: protection stopped, its data is retained."
    )
    return done(request, item_url(vault, item))


@login_required
@require_POST
def item_purge(request: PageRequest, name: str, vm_name: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "stop_protection")
    item = _binned_item(vault, vm_name)
    try:
        job = lifecycle.purge_now(item, by=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return done(request, _back(request, reverse("vault-recycle-bin", args=[vault.name])))
    messages.success(request, f"Purge of {item.vm.name} queued (job {job.pk}).")
    return done(request, reverse("job-detail", args=[vault.name, job.pk]))
