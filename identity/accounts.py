"""Local users that a directory vouches for: linked at sign-in, refreshed at each check,
disabled when the directory says so. A directory never takes over a local account."""

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from identity.models import Directory, DirectoryAccount
from identity.sync import sync_user
from vaults import audit


class NotLinkable(Exception):
    """The name belongs to a local account or another directory's user."""


def may_link(directory: Directory, user: User, subject: str) -> bool:
    """A directory signs in only users it created (never a local account of the same name)."""
    account = DirectoryAccount.objects.filter(user=user).first()
    return account is not None and (account.directory_id, account.subject) == (
        directory.pk,
        subject,
    )


def user_for(directory: Directory, subject: str, username: str) -> User:
    """The user `directory` knows as `subject`, made on first sign-in as `username`."""
    account = DirectoryAccount.objects.filter(directory=directory, subject=subject).first()
    if account is not None:
        return account.user
    User = get_user_model()
    if User.objects.filter(username__iexact=username).exists():
        raise NotLinkable(f"the name {username} is taken by another account")
    user = User(username=username)
    user.set_unusable_password()
    user.save()
    return user


def checked(
    directory: Directory,
    user: User,
    *,
    subject: str,
    groups: Iterable[str],
    request: HttpRequest | None = None,
    reason: str = "sign-in",
) -> DirectoryAccount:
    """The directory just vouched for `user` with these groups: record it and apply the
    mappings (the user is active again if the directory had disabled it)."""
    with transaction.atomic():
        account, _ = DirectoryAccount.objects.update_or_create(
            user=user,
            defaults={
                "directory": directory,
                "subject": subject,
                "groups": sorted(set(groups)),
                "checked_at": timezone.now(),
                "disabled": False,
            },
        )
        if not user.is_active:
            user.is_active = True
            user.save(update_fields=["is_active"])
            audit.record(
                "directory.enable",
                actor=user,
                request=request,
                obj=account,
                after={"directory": directory.name, "reason": reason},
            )
        sync_user(account, request=request, reason=reason)
    return account


def disable(account: DirectoryAccount, *, reason: str, request: HttpRequest | None = None) -> None:
    """The directory says the account is disabled or gone: the user can neither sign in nor
    use API tokens, and loses every mapped role."""
    with transaction.atomic():
        account.disabled = True
        account.groups = []
        account.checked_at = timezone.now()
        account.save(update_fields=["disabled", "groups", "checked_at"])
        user = account.user
        if user.is_active:
            user.is_active = False
            user.save(update_fields=["is_active"])
        audit.record(
            "directory.disable",
            actor=None,
            request=request,
            obj=account,
            after={"user": user.username, "directory": account.directory.name, "reason": reason},
        )
        sync_user(account, request=request, reason=reason)
