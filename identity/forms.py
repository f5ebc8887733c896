"""Forms for the directory pages. They only parse input; `identity.services` decides and saves."""

from typing import Any

from django import forms
from django.forms.models import fields_for_model

from identity.models import Directory, GroupMapping
from identity.services import DIRECTORY_FIELDS
from vaults.models import Role

HELP = {
    "secret_name": "The NAME of the environment variable, or the path of the file, holding the "
    "OIDC client secret or the LDAP bind password. Never the secret itself.",
    "issuer": "OIDC: the issuer URL; its /.well-known/openid-configuration is read.",
    "scopes": "OIDC: space-separated; include the scope that releases the groups claim.",
    "server_uri": "LDAP: ldap://host:389 (with StartTLS) or ldaps://host:636.",
    "user_filter": "LDAP: %(user)s is the name typed at login. AD: (sAMAccountName=%(user)s).",
    "group_base": "LDAP: where groups are searched; empty: no groups.",
    "disabled_filter": "LDAP: matches disabled accounts, e.g. (pwdAccountLockedTime=*) or AD's "
    "(userAccountControl:1.2.840.113556.1.4.803:=2).",
}


class DirectoryForm(forms.Form):
    """Every field of a directory (the kind decides which ones matter)."""

    def __init__(self, *args: Any, editing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, field in fields_for_model(Directory, fields=DIRECTORY_FIELDS).items():
            if name in HELP:
                field.help_text = HELP[name]
            self.fields[name] = field
        if editing:
            for name in ("name", "kind"):
                self.fields[name].disabled = True

    @staticmethod
    def initial_from(d: Directory) -> dict[str, Any]:
        return {f: getattr(d, f) for f in DIRECTORY_FIELDS}


class GroupMappingForm(forms.Form):
    directory = forms.ModelChoiceField(queryset=Directory.objects.all(), to_field_name="name")
    group = forms.CharField(
        max_length=200, help_text="As the directory names it (LDAP: the group's cn)."
    )
    vault_pattern = forms.CharField(
        max_length=100, required=False, help_text="A vault name or a pattern such as prod-*."
    )
    role = forms.ChoiceField(choices=[("", "—"), *Role.choices], required=False)
    site_admin = forms.BooleanField(required=False, label="Site administrator")


def mapping_rows() -> list[GroupMapping]:
    return list(GroupMapping.objects.select_related("directory"))
