"""Issuing and revoking API tokens, with the audit record every state change gets."""

from django.db import transaction

from portal.models import ApiToken
from vaults import audit

DEFAULT_NAME = "api"


def issue_token(user, *, name: str = DEFAULT_NAME, request=None) -> tuple[ApiToken, str]:
    with transaction.atomic():
        token, key = ApiToken.issue(user, name)
        audit.record(
            "token.create",
            actor=user,
            request=request,
            obj=token,
            after={"name": token.name, "prefix": token.prefix},
        )
    return token, key


def revoke_token(token: ApiToken, *, by, request=None) -> None:
    if token.revoked_at is not None:
        return
    with transaction.atomic():
        token.revoke()
        audit.record(
            "token.revoke",
            actor=by,
            request=request,
            obj=token,
            after={"name": token.name, "prefix": token.prefix},
        )
