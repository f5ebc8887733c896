"""One error shape for the whole API (DESIGN §6): `{"field": ["message"]}` or `{"detail": "..."}`.

Services raise Django's `ValidationError` keyed by the field at fault, `PermissionDenied` and
`Http404`; this handler turns them into DRF responses, so views never translate errors by hand.
Refusals that say the resource's state is in the way, not the input, answer 409: the domain
rules (`RuleBlocked`, with the rule's name) and the conflicts in `STATE_CONFLICTS`.
"""

from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from jobs.backup_queue import BackupBusy
from jobs.runner import JobFinished
from security.mua import ApprovalRequired
from vaults.file_recovery import Unreadable
from vaults.rules import RuleBlocked

# A backup of the item already queued or running; a job already finished; stored data that
# cannot be read (damaged): 409 with the domain's message as `detail`.
STATE_CONFLICTS = (BackupBusy, JobFinished, Unreadable)


def django_errors(exc: DjangoValidationError) -> dict[str, Any]:
    """A Django ValidationError as the API's error body.

    A lone "detail" key (services use it for a refusal that names no field) or a non-field
    error becomes `{"detail": "message"}`; everything else keeps its field keys.
    """
    if hasattr(exc, "error_dict"):
        errors: dict[str, Any] = {}
        for key, messages in exc.message_dict.items():
            if key == NON_FIELD_ERRORS:
                key = api_settings.NON_FIELD_ERRORS_KEY
            errors[key] = list(messages)
        if set(errors) <= {"detail", api_settings.NON_FIELD_ERRORS_KEY} and len(errors) == 1:
            return {"detail": " ".join(next(iter(errors.values())))}
        if "detail" in errors:
            errors["detail"] = " ".join(errors["detail"])
        return errors
    return {"detail": " ".join(exc.messages)}


def _conflict_detail(exc: Exception) -> str:
    if isinstance(exc, DjangoValidationError):
        return django_errors(exc).get("detail") or " ".join(exc.messages)
    return str(exc)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApprovalRequired):
        # MUA: nothing changed; the request waits for a guard approver (202 + its id).
        approval = exc.persist()
        return Response(
            {"approval": approval.pk, "status": approval.status, "detail": exc.text},
            status=status.HTTP_202_ACCEPTED,
        )
    if isinstance(exc, RuleBlocked):
        # A domain rule refuses the operation as things stand (always-on soft delete, an
        # immutable vault, the item's state): 409, with the message and the rule's name.
        set_rollback()
        return Response({"detail": exc.text, "rule": exc.rule}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, STATE_CONFLICTS):
        set_rollback()
        return Response({"detail": _conflict_detail(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, DjangoValidationError):
        set_rollback()
        return Response(django_errors(exc), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, IntegrityError):
        set_rollback()
        # A race lost against a concurrent change (the services check first, the database
        # constraint decides). Say so instead of answering 500.
        return Response(
            {"detail": "The change conflicts with a concurrent change; reload and try again."},
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, exceptions.ValidationError) and not isinstance(exc.detail, dict):
        exc = exceptions.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: exc.detail})
    # DRF already maps Http404 → 404 and django's PermissionDenied → 403.
    return drf_exception_handler(exc, context)
