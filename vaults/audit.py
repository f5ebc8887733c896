"""Writing the audit log: every state change goes through `record`."""

from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Model
from django.http import HttpRequest

from portal.client_address import client_ip
from vaults.models import AuditEvent, Vault


def record(
    action: str,
    *,
    actor: User | AnonymousUser | None = None,
    request: HttpRequest | None = None,
    vault: Vault | None = None,
    obj: Model | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    if actor is None and request is not None:
        actor = request.user
    by = None if actor is None or isinstance(actor, AnonymousUser) else actor
    return AuditEvent.objects.create(
        actor=by,
        actor_name=by.get_username() if by else "system",
        action=action,
        vault=vault,
        vault_name=vault.name if vault else "",
        object_type=type(obj).__name__ if obj is not None else "",
        object_id=str(obj.pk) if obj is not None and obj.pk is not None else "",
        object_repr=str(obj)[:200] if obj is not None else "",
        before=before,
        after=after,
        source_ip=client_ip(request),
    )
