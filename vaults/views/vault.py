"""The vault list, creating a vault, its overview, and deleting it."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Max, OuterRef
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST

from inventory.models import VirtualMachine
from policies.models import BackupPolicy
from portal.pages import (
    PageRequest,
    annotate_vault_counts,
    apply_errors,
    count_of,
    done,
    error_text,
)
from vaults import access
from vaults.accounting import secondary_copy
from vaults.attach import attach_vault
from vaults.forms import VaultAttachForm, VaultCreateForm
from vaults.models import Anomaly, ItemState, Vault, Verification
from vaults.services.vaults import create_vault, delete_vault
from vaults.storage import replication_lag, vault_storage
from vaults.views.common import vault_context


@login_required
def vault_list(request: PageRequest) -> HttpResponse:
    vaults = annotate_vault_counts(access.visible(Vault.objects.all(), request.user)).annotate(
        policy_count=count_of(BackupPolicy.objects.filter(vault=OuterRef("pk")), "vault")
    )
    context = {"vaults": vaults, "site_caps": access.site_capabilities(request.user)}
    return render(request, "vaults/vault_list.html", context)


@login_required
def vault_create(request: PageRequest) -> HttpResponse:
    access.require_site(request.user, "create_vault")
    form = VaultCreateForm(request.POST or None, initial=VaultCreateForm.initial_for(Vault()))
    if request.method == "POST" and form.is_valid():
        try:
            vault = create_vault(
                by=request.user, request=request, name=form.cleaned_data["name"], **form.settings()
            )
        except ValidationError as exc:
            apply_errors(form, exc)
        else:
            messages.success(request, f"Vault {vault.name} created; you are its owner.")
            return done(request, reverse("vault-detail", args=[vault.name]))
    return render(request, "vaults/vault_create.html", {"form": form})


@login_required
def vault_attach(request: PageRequest) -> HttpResponse:
    """Disaster recovery: recreate a vault from its store (`vaults.attach`); site admins."""
    access.require_site(request.user, "create_vault")
    form = VaultAttachForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            vault = attach_vault(by=request.user, request=request, **form.cleaned_data)
        except ValidationError as exc:
            apply_errors(form, exc)
        else:
            messages.success(
                request,
                f"Vault {vault.name} attached: {vault.recovery_points.count()} recovery points "
                f"of {vault.protected_items.count()} items (protection stopped, retain data).",
            )
            return done(request, reverse("vault-detail", args=[vault.name]))
    return render(request, "vaults/vault_attach.html", {"form": form})


@login_required
def vault_detail(request: PageRequest, name: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "view")
    counts = {
        "items": vault.protected_items.live().count(),
        "rps": vault.recovery_points.live().count(),
        "policies": vault.policies.count(),
        "soft_deleted": vault.protected_items.filter(state=ItemState.SOFT_DELETED).count(),
        "last_verified": vault.recovery_points.filter(verification=Verification.PASSED).aggregate(
            last=Max("verified_at")
        )["last"],
        "suspicious": vault.recovery_points.live().filter(anomaly=Anomaly.SUSPICIOUS).count(),
    }
    host_vms = VirtualMachine.objects.filter(host=OuterRef("pk"))
    hosts = vault.linked_hosts.annotate(vm_count=count_of(host_vms, "host"))
    context = vault_context(
        request,
        vault,
        "overview",
        counts=counts,
        hosts=hosts,
        storage=vault_storage(vault),
        replication=replication_lag(vault),
        secondary=secondary_copy(vault),
    )
    return render(request, "vaults/vault_detail.html", context)


@login_required
@require_POST
def vault_delete(request: PageRequest, name: str) -> HttpResponse:
    vault = access.get_vault(request.user, name, "delete_vault")
    try:
        delete_vault(vault, by=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return done(request, reverse("vault-settings", args=[vault.name]))
    messages.success(request, f"Vault {name} deleted.")
    return done(request, reverse("vault-list"))
