"""A vault's settings and its encryption key."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.forms import Form
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse

from portal.pages import PageRequest, apply_errors, approval_pending, done
from security.keys import has_protected, key_name
from security.models import CustomerKey
from security.mua import ApprovalRequired
from vaults import access
from vaults.forms import EncryptionForm, VaultSettingsForm
from vaults.models import Encryption, SoftDeleteState, Vault
from vaults.services.vaults import VaultChanges, update_vault
from vaults.stores import immutability_enforcement, store_places
from vaults.views.common import vault_context


def _save(
    request: PageRequest, vault: Vault, form: Form, changes: VaultChanges, saved: str, page: str
) -> HttpResponse | None:
    """Apply `changes` (none: nothing to do) and answer: the page again on success, the approval
    it waits for under MUA, or None with the service's errors put on `form`."""
    try:
        if changes:
            update_vault(vault, by=request.user, request=request, **changes)
    except ApprovalRequired as exc:
        return approval_pending(request, exc)
    except ValidationError as exc:
        vault.refresh_from_db()
        apply_errors(form, exc)
        return None
    messages.success(request, saved if changes else "Nothing changed.")
    return done(request, reverse(page, args=[vault.name]))


@login_required
def vault_settings(request: PageRequest, name: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "change_settings")
    form = VaultSettingsForm(request.POST or None, initial=VaultSettingsForm.initial_for(vault))
    if request.method == "POST" and form.is_valid():
        answer = _save(
            request, vault, form, form.changes(vault), "Settings saved.", "vault-settings"
        )
        if answer is not None:
            return answer
    context = vault_context(
        request,
        vault,
        "settings",
        form=form,
        always_on=vault.soft_delete_state == SoftDeleteState.ALWAYS_ON,
        locked=vault.immutability_locked,
        places=store_places(vault),
        enforcement=immutability_enforcement(vault),
    )
    return render(request, "vaults/vault_settings.html", context)


@login_required
def vault_encryption(request: PageRequest, name: str) -> HttpResponse:
    """Platform key or a customer-managed key chosen among the registered ones (names only)."""
    vault = access.get_vault(request.user, name, "change_settings")
    current = key_name(vault)
    key_names = list(CustomerKey.objects.order_by("name").values_list("name", flat=True))
    initial = {"encryption": vault.encryption, "encryption_key": current or ""}
    form = EncryptionForm(request.POST or None, key_names=key_names, initial=initial)
    if request.method == "POST" and form.is_valid():
        changes = VaultChanges(encryption=form.cleaned_data["encryption"])
        if changes["encryption"] == Encryption.CUSTOMER_MANAGED:
            changes["encryption_key"] = form.cleaned_data["encryption_key"]
        if changes["encryption"] == vault.encryption and (
            changes.get("encryption_key") in (None, current)
        ):
            changes = VaultChanges()
        answer = _save(request, vault, form, changes, "Encryption saved.", "vault-encryption")
        if answer is not None:
            return answer
    context = vault_context(
        request,
        vault,
        "encryption",
        form=form,
        current_key=current,
        has_keys=bool(key_names),
        has_protected=has_protected(vault),
        platform_key=vault.encryption == Encryption.PLATFORM,
    )
    return render(request, "vaults/vault_encryption.html", context)
