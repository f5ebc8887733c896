"""The hosts linked to a vault: whose VMs its members may protect and restore to."""

from collections.abc import Iterable

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest

from inventory.models import Host
from vaults import access, audit
from vaults.models import ProtectedVM, Vault


def link_host(
    vault: Vault,
    host: Host,
    *,
    by: User,
    request: HttpRequest | None = None,
    linked: bool = True,
) -> None:
    access.require_site(by, "link_hosts")
    with transaction.atomic():
        if linked:
            vault.linked_hosts.add(host)
        else:
            vault.linked_hosts.remove(host)
        audit.record(
            "vault.link_host" if linked else "vault.unlink_host",
            actor=by,
            request=request,
            vault=vault,
            obj=host,
        )


def set_linked_hosts(
    vault: Vault, hosts: Iterable[Host], *, by: User, request: HttpRequest | None = None
) -> None:
    """Link exactly `hosts` to the vault (site admins only).

    A host stays linked while VMs on it are protected in this vault: unlinking it would leave
    items that members can no longer see the VM of, and restores with no target.
    """
    access.require_site(by, "link_hosts")
    wanted = {h.pk: h for h in hosts}
    current = {h.pk: h for h in vault.linked_hosts.all()}
    dropped = [h for pk, h in current.items() if pk not in wanted]
    busy = sorted(
        set(
            ProtectedVM.objects.filter(vault=vault, vm__host__in=dropped)
            .live()
            .values_list("vm__host__name", flat=True)
        )
    )
    if busy:
        raise ValidationError(
            {
                "linked_hosts": f"Host(s) {', '.join(busy)} run VMs protected in this vault; "
                "stop their protection before unlinking."
            }
        )
    with transaction.atomic():
        for host in dropped:
            link_host(vault, host, by=by, request=request, linked=False)
        for pk, host in wanted.items():
            if pk not in current:
                link_host(vault, host, by=by, request=request, linked=True)
