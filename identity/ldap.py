"""Signing in through an LDAP / Active Directory realm (django-auth-ldap over python-ldap).

Each realm is a `Directory` of kind `ldap`; its settings become django-auth-ldap's for the
length of one attempt: bind with the realm's account (password read at use), search the user,
bind as the user, read the groups (their `cn`), then check the realm's `disabled_filter` on the
user's entry. StartTLS or an `ldaps://` URI with `ca_file` protect the passwords on the wire;
the server's certificate is always verified.

A realm signs in only users it created (a local account of the same name is refused), and
`recheck` looks a user up again with the realm's own account (API tokens, identity.freshness).
"""

import logging
from dataclasses import dataclass
from typing import Any

import ldap
from django.contrib.auth.models import User
from django.http import HttpRequest
from django_auth_ldap.backend import LDAPBackend, _LDAPUser
from django_auth_ldap.config import (
    GroupOfNamesType,
    GroupOfUniqueNamesType,
    LDAPSearch,
    LDAPSettings,
    NestedActiveDirectoryGroupType,
    PosixGroupType,
)
from ldap.filter import escape_filter_chars

from identity import accounts
from identity.models import Directory, DirectoryAccount, DirectoryKind, GroupType
from identity.secrets import SecretUnavailable, read_secret

log = logging.getLogger(__name__)

GROUP_TYPES = {
    GroupType.GROUP_OF_NAMES: GroupOfNamesType,
    GroupType.GROUP_OF_UNIQUE_NAMES: GroupOfUniqueNamesType,
    GroupType.POSIX: PosixGroupType,
    GroupType.ACTIVE_DIRECTORY: NestedActiveDirectoryGroupType,
}


def realm_settings(realm: Directory) -> LDAPSettings:
    # A prefix no Django setting has: everything comes from the realm.
    s = LDAPSettings(prefix="LIFEBOAT_LDAP_REALM_UNUSED_")
    s.SERVER_URI = realm.server_uri
    s.START_TLS = realm.start_tls
    s.BIND_DN = realm.bind_dn
    s.BIND_PASSWORD = read_secret(realm)
    s.USER_SEARCH = LDAPSearch(realm.user_base, ldap.SCOPE_SUBTREE, realm.user_filter)
    if realm.group_base:
        s.GROUP_SEARCH = LDAPSearch(realm.group_base, ldap.SCOPE_SUBTREE, "(objectClass=*)")
        s.GROUP_TYPE = GROUP_TYPES[GroupType(realm.group_type or GroupType.GROUP_OF_NAMES)]()
    s.USER_ATTR_MAP = {"first_name": "givenName", "last_name": "sn", "email": "mail"}
    options: dict[int, Any] = {
        ldap.OPT_NETWORK_TIMEOUT: 5,
        ldap.OPT_TIMEOUT: 10,
        # AD answers with referrals python-ldap would chase anonymously.
        ldap.OPT_REFERRALS: 0,
        ldap.OPT_X_TLS_REQUIRE_CERT: ldap.OPT_X_TLS_DEMAND,
    }
    if realm.ca_file:
        options[ldap.OPT_X_TLS_CACERTFILE] = realm.ca_file
    # Last: makes the TLS options above take effect for this connection.
    options[ldap.OPT_X_TLS_NEWCTX] = 0
    s.CONNECTION_OPTIONS = options
    return s


@dataclass(frozen=True)
class Entry:
    dn: str
    groups: frozenset[str]
    disabled: bool


def _entry(realm: Directory, ldap_user: _LDAPUser) -> Entry:
    conn = ldap_user.connection
    disabled = False
    if realm.disabled_filter:
        hits = conn.search_s(ldap_user.dn, ldap.SCOPE_BASE, realm.disabled_filter, ["1.1"])
        disabled = any(dn for dn, _attrs in hits if dn)
    groups = frozenset(ldap_user.group_names) if realm.group_base else frozenset()
    return Entry(dn=ldap_user.dn, groups=groups, disabled=disabled)


class RealmBackend(LDAPBackend):
    """django-auth-ldap configured from one realm; refuses to link a local account."""

    def __init__(self, realm: Directory) -> None:
        self.realm = realm
        self.settings = realm_settings(realm)
        self.entry: Entry | None = None

    def get_or_build_user(self, username: str, ldap_user: _LDAPUser) -> tuple[User, bool]:
        user, built = super().get_or_build_user(username, ldap_user)
        if not built and not accounts.may_link(self.realm, user, user.username):
            raise ldap_user.AuthenticationFailed(
                f"{user.username} is a local account or another directory's"
            )
        return user, built

    def authenticate_ldap_user(self, ldap_user: _LDAPUser, password: str) -> User | None:
        user: User | None = super().authenticate_ldap_user(ldap_user, password)
        if user is not None:
            try:
                self.entry = _entry(self.realm, ldap_user)
            except ldap.LDAPError as exc:
                log.warning("realm %s: reading %s failed: %s", self.realm.name, user, exc)
                return None
        return user


@dataclass(frozen=True)
class Outcome:
    user: User | None
    # Why not, for the audit record: wrong_password (or unknown user), disabled,
    # unavailable (server or secret), not_linkable.
    failure: str = ""


def sign_in(realm: Directory, request: HttpRequest | None, username: str, password: str) -> Outcome:
    try:
        backend = RealmBackend(realm)
    except SecretUnavailable as exc:
        log.error("%s", exc)
        return Outcome(None, "unavailable")
    user = backend.authenticate(request, username=username, password=password)
    if user is None or backend.entry is None:
        return Outcome(None, "wrong_password")
    account = DirectoryAccount.objects.filter(user=user).first()
    if backend.entry.disabled:
        if account is not None:
            accounts.disable(account, reason="disabled in the directory", request=request)
        else:
            user.is_active = False
            user.save(update_fields=["is_active"])
        return Outcome(None, "disabled")
    accounts.checked(
        realm, user, subject=user.username, groups=backend.entry.groups, request=request
    )
    return Outcome(user)


def recheck(account: DirectoryAccount, request: HttpRequest | None = None) -> bool:
    """Look the user up again with the realm's account: True and the groups synced while the
    directory still has the user enabled; False (and the user disabled) when it is gone or
    disabled. LDAPError (server unreachable) propagates: the caller refuses, keeps the state."""
    realm = account.directory
    backend = RealmBackend(realm)
    ldap_user = _LDAPUser(backend, username=account.subject)
    # Searched here, not through django-auth-ldap's lookup, which reads "server down" as
    # "no such user": an unreachable directory must never disable anybody.
    found = ldap_user.connection.search_s(
        realm.user_base,
        ldap.SCOPE_SUBTREE,
        realm.user_filter % {"user": escape_filter_chars(account.subject)},
        ["1.1"],
    )
    if not any(dn for dn, _attrs in found) or ldap_user.dn is None:
        accounts.disable(account, reason="gone from the directory", request=request)
        return False
    entry = _entry(realm, ldap_user)
    if entry.disabled:
        accounts.disable(account, reason="disabled in the directory", request=request)
        return False
    accounts.checked(
        realm,
        account.user,
        subject=account.subject,
        groups=entry.groups,
        request=request,
        reason="token check",
    )
    return True


def realms() -> list[Directory]:
    return list(Directory.objects.filter(kind=DirectoryKind.LDAP, enabled=True))
