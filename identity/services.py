"""Directories and group mappings (site administrators only): role check → validate → change →
audit, for the pages and the API alike. A mapping change applies at once to every directory
user, with the groups of their last check (identity.sync)."""

import re
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest

from identity.models import Directory, DirectoryKind, GroupMapping, GroupType, SecretSource
from identity.sync import sync_everyone
from vaults import access, audit
from vaults.models import Role, vault_name_validator

SITE = "manage_directories"

DIRECTORY_FIELDS = (
    "name",
    "kind",
    "title",
    "enabled",
    "secret_source",
    "secret_name",
    "issuer",
    "client_id",
    "scopes",
    "groups_claim",
    "username_claim",
    "server_uri",
    "start_tls",
    "ca_file",
    "bind_dn",
    "user_base",
    "user_filter",
    "group_base",
    "group_type",
    "disabled_filter",
)
_env_name = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def summary(directory: Directory) -> dict[str, Any]:
    """What the audit log records: names of variables and files, never a secret."""
    return {f: getattr(directory, f) for f in DIRECTORY_FIELDS}


def _validate(d: Directory) -> None:
    errors: dict[str, str] = {}
    try:
        vault_name_validator(d.name)
    except ValidationError as exc:
        errors["name"] = exc.messages[0]
    if d.kind not in DirectoryKind.values:
        errors["kind"] = f"Choose one of: {', '.join(DirectoryKind.values)}."
    if not d.title.strip():
        errors["title"] = "Give the name people see on the login page."
    if d.secret_source not in SecretSource.values:
        errors["secret_source"] = f"Choose one of: {', '.join(SecretSource.values)}."
    elif d.secret_name:
        if d.secret_source == SecretSource.ENV and not _env_name.match(d.secret_name):
            errors["secret_name"] = "The NAME of an environment variable (letters, digits, _)."
        if d.secret_source == SecretSource.FILE and not d.secret_name.startswith("/"):
            errors["secret_name"] = "An absolute path to a file on the server."
    if d.kind == DirectoryKind.OIDC:
        issuer = urlsplit(d.issuer)
        if issuer.scheme not in ("https", "http") or not issuer.netloc:
            errors["issuer"] = "The provider's issuer URL, e.g. https://login.example.com/realm."
        if not d.client_id:
            errors["client_id"] = "The client id registered at the provider."
        if "openid" not in d.scopes.split():
            errors["scopes"] = "The scopes must include openid."
        if not d.groups_claim:
            errors["groups_claim"] = "The claim that lists the user's groups, e.g. groups."
        if not d.username_claim:
            errors["username_claim"] = "The claim that names the user, e.g. preferred_username."
    elif d.kind == DirectoryKind.LDAP:
        if urlsplit(d.server_uri).scheme not in ("ldap", "ldaps") or "," in d.server_uri:
            errors["server_uri"] = "One server: ldap://host[:port] or ldaps://host[:port]."
        if d.start_tls and d.server_uri.startswith("ldaps:"):
            errors["start_tls"] = "StartTLS is for ldap:// URIs; ldaps:// is TLS already."
        if not d.user_base:
            errors["user_base"] = "Where users are searched, e.g. ou=people,dc=example,dc=org."
        try:
            usable = "%(user)s" in d.user_filter and bool(d.user_filter % {"user": "x"})
        except (KeyError, ValueError, TypeError):
            usable = False  # another %-placeholder: the search would fail at sign-in
        if not usable:
            errors["user_filter"] = "A filter with %(user)s, e.g. (uid=%(user)s)."
        if d.group_type not in GroupType.values:
            errors["group_type"] = f"Choose one of: {', '.join(GroupType.values)}."
        for f in ("user_filter", "disabled_filter"):
            value = getattr(d, f)
            if value and not (value.startswith("(") and value.endswith(")")):
                errors[f] = "An LDAP filter in parentheses."
        if d.ca_file and not d.ca_file.startswith("/"):
            errors["ca_file"] = "An absolute path to a PEM file on the server."
    if errors:
        raise ValidationError(errors)


def _unknown(fields: dict[str, Any]) -> None:
    unknown = set(fields) - set(DIRECTORY_FIELDS)
    if unknown:
        raise ValidationError({f: "Unknown field." for f in sorted(unknown)})


def create_directory(*, by: User, request: HttpRequest | None = None, **fields: Any) -> Directory:
    access.require_site(by, SITE)
    _unknown(fields)
    d = Directory(created_by=by, **fields)
    _validate(d)
    if Directory.objects.filter(name__iexact=d.name).exists():
        raise ValidationError({"name": f"A directory named {d.name} exists."})
    with transaction.atomic():
        d.save()
        audit.record("directory.create", actor=by, request=request, obj=d, after=summary(d))
    return d


def update_directory(
    d: Directory, *, by: User, request: HttpRequest | None = None, **fields: Any
) -> Directory:
    access.require_site(by, SITE)
    _unknown(fields)
    before = summary(d)
    for key in ("name", "kind"):
        if key in fields and fields[key] != before[key]:
            # Users and mappings are linked to the directory they came from.
            raise ValidationError({key: "A directory's name and kind do not change."})
    for key, value in fields.items():
        setattr(d, key, value)
    _validate(d)
    with transaction.atomic():
        d.save()
        audit.record(
            "directory.update", actor=by, request=request, obj=d, before=before, after=summary(d)
        )
    return d


def delete_directory(d: Directory, *, by: User, request: HttpRequest | None = None) -> None:
    access.require_site(by, SITE)
    if d.accounts.exists():
        raise ValidationError(
            {"detail": f"Users signed in through {d.name}: disable the directory instead."}
        )
    with transaction.atomic():
        audit.record("directory.delete", actor=by, request=request, obj=d, before=summary(d))
        d.mappings.all().delete()
        d.delete()


# -- group mappings ------------------------------------------------------------------------------


def mapping_summary(m: GroupMapping) -> dict[str, Any]:
    return {
        "directory": m.directory.name,
        "group": m.group,
        "vault_pattern": m.vault_pattern,
        "role": m.role,
        "site_admin": m.site_admin,
    }


def _validate_mapping(m: GroupMapping) -> None:
    errors: dict[str, str] = {}
    if not m.group.strip():
        errors["group"] = "The group's name as the directory gives it (LDAP: its cn)."
    if m.role and m.role not in Role.values:
        errors["role"] = f"Choose one of: {', '.join(Role.values)}."
    if bool(m.role) != bool(m.vault_pattern):
        key = "vault_pattern" if m.role else "role"
        errors[key] = "A role needs vaults to apply to (a name or a pattern such as prod-*)."
    if m.vault_pattern and not re.fullmatch(r"[A-Za-z0-9*?\[\]!-]{1,100}", m.vault_pattern):
        errors["vault_pattern"] = "A vault name or a pattern of *, ?, [..] and name characters."
    if not m.role and not m.site_admin:
        errors["role"] = "Grant a role on vaults, or site administrator, or both."
    if errors:
        raise ValidationError(errors)


def create_mapping(
    *,
    by: User,
    request: HttpRequest | None = None,
    directory: Directory,
    group: str,
    vault_pattern: str = "",
    role: str = "",
    site_admin: bool = False,
) -> GroupMapping:
    access.require_site(by, SITE)
    m = GroupMapping(
        directory=directory,
        group=group.strip(),
        vault_pattern=vault_pattern.strip(),
        role=role,
        site_admin=site_admin,
        created_by=by,
    )
    _validate_mapping(m)
    if GroupMapping.objects.filter(
        directory=directory, group=m.group, vault_pattern=m.vault_pattern
    ).exists():
        raise ValidationError({"group": "This group already has a mapping for these vaults."})
    with transaction.atomic():
        m.save()
        audit.record(
            "group_mapping.create", actor=by, request=request, obj=m, after=mapping_summary(m)
        )
        sync_everyone(by=by, request=request, reason="mapping created")
    return m


def delete_mapping(m: GroupMapping, *, by: User, request: HttpRequest | None = None) -> None:
    """Remove the mapping and, at once, the memberships only it granted."""
    access.require_site(by, SITE)
    with transaction.atomic():
        audit.record(
            "group_mapping.delete", actor=by, request=request, obj=m, before=mapping_summary(m)
        )
        m.delete()
        sync_everyone(by=by, request=request, reason="mapping deleted")


def vaults_matching(pattern: str, names: list[str]) -> list[str]:
    return [n for n in names if fnmatchcase(n, pattern)]
