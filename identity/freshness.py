"""May a directory user's API token be used now? The directory decides, not the token.

- LDAP: when the user's last directory check is older than DIRECTORY_RECHECK_MINUTES (5), the
  realm is asked again with its own account (`identity.ldap.recheck`): a user gone or disabled
  there is disabled here (tokens refused from then on); the groups are synced. While the
  directory cannot be reached the token is refused, never waved through.
- OpenID Connect: a provider cannot be asked about a user without the user, so a token works
  for DIRECTORY_TOKEN_HOURS (12) after the user's last sign-in through the provider; signing in
  again renews it.
- A disabled directory (site admin) refuses its users' tokens at once.
Local users are not concerned (their tokens die with their password: `portal.tokens`).
"""

from datetime import timedelta

from django.contrib.auth.models import User
from django.http import HttpRequest
from django.utils import timezone

from identity import ldap_support
from identity.models import DirectoryAccount, DirectoryKind
from identity.secrets import SecretUnavailable
from portal.options import option


def recheck_after() -> timedelta:
    return timedelta(minutes=option("DIRECTORY_RECHECK_MINUTES", 5))


def token_lifetime() -> timedelta:
    return timedelta(hours=option("DIRECTORY_TOKEN_HOURS", 12))


def token_refusal(user: User, request: HttpRequest | None = None) -> str | None:
    """Why `user`'s API token is refused now, or None when it may be used.

    The user's directory account (with its directory) is read here unless the caller loaded it
    with the user (`select_related("user__directory_account__directory")`), as the token
    authentication does to spare every API call a query."""
    account = _account_of(user)
    if account is None:
        return None
    if account.disabled:
        return "The directory disabled this user."
    if not account.directory.enabled:
        return f"Directory {account.directory.name} is disabled."
    age = timezone.now() - account.checked_at
    if account.directory.kind == DirectoryKind.OIDC:
        if age > token_lifetime():
            return (
                f"Sign in through {account.directory.title} again: tokens of its users work "
                f"{option('DIRECTORY_TOKEN_HOURS', 12):g} hours after the last sign-in."
            )
        return None
    if age <= recheck_after():
        return None
    if not ldap_support.AVAILABLE:
        return f"Directory {account.directory.name} cannot be checked: {ldap_support.MISSING}"
    # Imported here, not above: python-ldap is an optional extra (identity.ldap_support).
    import ldap as python_ldap

    from identity import ldap

    try:
        still_enabled = ldap.recheck(account, request)
    except (python_ldap.LDAPError, SecretUnavailable):
        return f"Directory {account.directory.name} cannot be reached to check this user."
    return None if still_enabled else "The directory disabled or removed this user."


def _account_of(user: User) -> DirectoryAccount | None:
    """The user's directory account with its directory, or None for a local user."""
    if not User.directory_account.is_cached(user):
        return DirectoryAccount.objects.select_related("directory").filter(user=user).first()
    try:
        return user.directory_account  # selected with the user; a local user has none
    except DirectoryAccount.DoesNotExist:
        return None
