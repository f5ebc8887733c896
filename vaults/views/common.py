"""What the vault pages share: the request they serve, the vault context, item lookups."""

from typing import Any
from uuid import UUID

from django.db.models import Prefetch
from django.http import Http404, HttpRequest
from django.urls import reverse

from inventory.models import Disk
from vaults import access
from vaults.models import ProtectedVM, RecoveryPoint, Vault


def vault_context(request: HttpRequest, vault: Vault, tab: str, **extra: Any) -> dict[str, Any]:
    return {
        "vault": vault,
        "caps": access.capabilities(request.user, vault),
        "tab": tab,
        **extra,
    }


def item_of(vault: Vault, vm_name: str) -> ProtectedVM:
    """The vault's item the VM name means (`named`), ready for the item pages."""
    items = vault.protected_items.select_related("vm", "vm__host", "policy").prefetch_related(
        Prefetch("vm__disks", queryset=Disk.objects.order_by("lun"))
    )
    item = items.named(vm_name)
    if item is None:
        raise Http404("No such protected VM in this vault.")
    return item


def item_url(vault: Vault, item: ProtectedVM) -> str:
    return reverse("item-detail", args=[vault.name, item.vm.name])


def rp_of(vault: Vault, vm_name: str, rp_id: UUID) -> RecoveryPoint:
    item = item_of(vault, vm_name)
    rp = (
        RecoveryPoint.objects.filter(vault=vault, protected_item=item, pk=rp_id)
        .select_related("protected_item__vm__host", "vault")
        .first()
    )
    if rp is None:
        raise Http404("No such recovery point.")
    return rp
