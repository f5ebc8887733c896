"""Writing the audit log: every state change goes through `record`."""

from portal.client_address import client_ip
from vaults.models import AuditEvent


def record(
    action: str,
    *,
    actor=None,
    request=None,
    vault=None,
    obj=None,
    before: dict | None = None,
    after: dict | None = None,
) -> AuditEvent:
    if actor is None and request is not None:
        actor = request.user
    if actor is not None and not actor.is_authenticated:
        actor = None
    return AuditEvent.objects.create(
        actor=actor,
        actor_name=actor.get_username() if actor else "system",
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
