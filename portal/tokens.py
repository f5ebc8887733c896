"""Issuing and revoking API tokens, with the audit record every state change gets.

Tokens die with the password: saving a user with another password hash revokes the tokens
issued under the old one (admin, `manage.py changepassword`, any `set_password()` + `save()`),
and the authentication refuses such a token even when the hash was written without a save.
A hash upgrade on sign-in (the same password under a stronger hasher) keeps them.
"""

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.http import HttpRequest

from portal.models import ApiToken, password_fingerprint
from vaults import audit

DEFAULT_NAME = "api"


def issue_token(
    user: User, *, name: str = DEFAULT_NAME, request: HttpRequest | None = None
) -> tuple[ApiToken, str]:
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


def _revoke(
    token: ApiToken,
    *,
    by: User | None,
    request: HttpRequest | None = None,
    reason: str = "",
) -> None:
    token.revoke()
    after = {"name": token.name, "prefix": token.prefix}
    if reason:
        after["reason"] = reason
    audit.record("token.revoke", actor=by, request=request, obj=token, after=after)


def revoke_token(token: ApiToken, *, by: User, request: HttpRequest | None = None) -> None:
    if token.revoked_at is not None:
        return
    with transaction.atomic():
        _revoke(token, by=by, request=request)


def revoke_tokens_of_old_passwords(user: User) -> int:
    """Revoke the user's tokens issued under another password than the current one."""
    current = password_fingerprint(user.password)
    with transaction.atomic():
        stale = list(
            ApiToken.objects.select_for_update()
            .filter(user=user, revoked_at=None)
            .exclude(password_fingerprint=current)
        )
        for token in stale:
            _revoke(token, by=None, reason="password changed")
    return len(stale)


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="tokens-password-changed")
def _password_saved(
    sender: type[User],
    instance: User,
    update_fields: frozenset[str] | None = None,
    raw: bool = False,
    **kwargs: Any,
) -> None:
    # Fixture loading (raw) restores rows as they were; the check at use still holds then.
    if not raw and (update_fields is None or "password" in update_fields):
        revoke_tokens_of_old_passwords(instance)


def keep_tokens_on_rehash(user: User, raw_password: str) -> None:
    """`check_password`'s setter on sign-in: store the same password under the preferred
    hasher, and move the user's tokens to the new hash with it (the password did not change).

    The update is conditional, so a password changed meanwhile is neither overwritten nor
    given the old password's tokens."""
    old_hash, new_hash = user.password, make_password(raw_password)
    with transaction.atomic():
        stored = (
            get_user_model().objects.filter(pk=user.pk, password=old_hash).update(password=new_hash)
        )
        if stored:
            user.password = new_hash
            ApiToken.objects.filter(
                user=user, revoked_at=None, password_fingerprint=password_fingerprint(old_hash)
            ).update(password_fingerprint=password_fingerprint(new_hash))
