"""Directories people sign in through (OpenID Connect providers and LDAP/AD realms), their
group → role mappings, and the link between a local user and the directory that vouches for it.

No secret is stored: a directory names where its client secret or bind password is read at
use (an environment variable or a file on the server), like storage targets do.
"""

from django.conf import settings
from django.db import models

from vaults.models import Role, vault_name_validator


class DirectoryKind(models.TextChoices):
    OIDC = "oidc", "OpenID Connect provider"
    LDAP = "ldap", "LDAP / Active Directory realm"


class SecretSource(models.TextChoices):
    ENV = "env", "Environment variable"
    FILE = "file", "File on the server"


class GroupType(models.TextChoices):
    # How an LDAP directory lists a group's members (django-auth-ldap's group types).
    GROUP_OF_NAMES = "group_of_names", "groupOfNames (member)"
    GROUP_OF_UNIQUE_NAMES = "group_of_unique_names", "groupOfUniqueNames (uniqueMember)"
    POSIX = "posix", "posixGroup (memberUid)"
    ACTIVE_DIRECTORY = "active_directory", "Active Directory (member, nested)"


class Directory(models.Model):
    """One place people sign in through: an OpenID provider or an LDAP realm."""

    name = models.CharField(max_length=50, unique=True, validators=[vault_name_validator])
    kind = models.CharField(max_length=4, choices=DirectoryKind)
    # Shown on the login page: "Sign in with <title>".
    title = models.CharField(max_length=100)
    enabled = models.BooleanField(default=True)
    # The OIDC client secret or the LDAP bind password: where to read it, never the value.
    secret_source = models.CharField(
        max_length=4, choices=SecretSource, default=SecretSource.ENV, blank=True
    )
    secret_name = models.CharField(max_length=500, blank=True)
    # -- OpenID Connect
    issuer = models.URLField(max_length=300, blank=True)
    client_id = models.CharField(max_length=200, blank=True)
    scopes = models.CharField(max_length=200, blank=True, default="openid profile email groups")
    groups_claim = models.CharField(max_length=100, blank=True, default="groups")
    username_claim = models.CharField(max_length=100, blank=True, default="preferred_username")
    # -- LDAP / Active Directory
    server_uri = models.CharField(max_length=300, blank=True)
    start_tls = models.BooleanField(default=False)
    # CA certificates that sign the server's (LDAPS or StartTLS); empty: the system's.
    ca_file = models.CharField(max_length=500, blank=True)
    bind_dn = models.CharField(max_length=300, blank=True)
    user_base = models.CharField(max_length=300, blank=True)
    user_filter = models.CharField(max_length=300, blank=True, default="(uid=%(user)s)")
    group_base = models.CharField(max_length=300, blank=True)
    group_type = models.CharField(
        max_length=24, choices=GroupType, default=GroupType.GROUP_OF_NAMES, blank=True
    )
    # An LDAP filter matching the directory's disabled accounts, e.g. OpenLDAP's
    # "(pwdAccountLockedTime=*)" or AD's "(userAccountControl:1.2.840.113556.1.4.803:=2)".
    disabled_filter = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "directories"

    def __str__(self) -> str:
        return self.name


class GroupMapping(models.Model):
    """Members of `group` in `directory` get `role` on the vaults matching `vault_pattern`
    (shell-style, e.g. "prod-*"), and/or are site administrators."""

    directory = models.ForeignKey(Directory, on_delete=models.PROTECT, related_name="mappings")
    group = models.CharField(max_length=200)
    vault_pattern = models.CharField(max_length=100, blank=True)
    role = models.CharField(max_length=12, choices=Role, blank=True)
    site_admin = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["directory__name", "group", "vault_pattern"]
        constraints = [
            models.UniqueConstraint(
                fields=["directory", "group", "vault_pattern"], name="group_mapping_unique"
            ),
        ]

    def __str__(self) -> str:
        grants = [f"{self.role} on {self.vault_pattern}"] if self.role else []
        if self.site_admin:
            grants.append("site admin")
        return f"{self.directory}:{self.group} → {', '.join(grants)}"


class DirectoryAccount(models.Model):
    """A local user that a directory vouches for: who it is there, its groups at the last
    check, and when that was (API tokens rely on it)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="directory_account"
    )
    directory = models.ForeignKey(Directory, on_delete=models.PROTECT, related_name="accounts")
    # OIDC: the `sub` claim; LDAP: the login name.
    subject = models.CharField(max_length=255)
    groups = models.JSONField(default=list, blank=True)
    checked_at = models.DateTimeField()
    # The directory said the account is disabled or gone (the user is inactive until it
    # says otherwise at a later sign-in).
    disabled = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["directory", "subject"], name="directory_account_unique_subject"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.subject} in {self.directory}"
