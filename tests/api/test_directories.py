"""Directories and group mappings through the API (site admins): validation naming the field,
secrets only by reference, audit records, and mappings applied at once to directory users."""

import pytest
from django.urls import reverse
from django.utils import timezone

from identity.models import Directory, DirectoryAccount, GroupMapping
from identity.sync import sync_everyone
from tests import factories as f
from vaults.models import AuditEvent, Role, VaultMembership

DIRECTORIES = reverse("api-directory-list")
MAPPINGS = reverse("api-group-mapping-list")


def oidc_body(**overrides):
    body = {
        "name": "corp-sso",
        "kind": "oidc",
        "title": "Corp SSO",
        "issuer": "https://login.example.org/realms/corp",
        "client_id": "lifeboat",
        "secret_source": "env",
        "secret_name": "LIFEBOAT_OIDC_SECRET",
    }
    body.update(overrides)
    return body


def ldap_body(**overrides):
    body = {
        "name": "corp-ldap",
        "kind": "ldap",
        "title": "Corp LDAP",
        "server_uri": "ldap://ldap.example.org",
        "start_tls": True,
        "bind_dn": "cn=lifeboat,ou=services,dc=example,dc=org",
        "secret_source": "file",
        "secret_name": "/etc/lifeboat/ldap-bind",
        "user_base": "ou=people,dc=example,dc=org",
        "group_base": "ou=groups,dc=example,dc=org",
        "disabled_filter": "(pwdAccountLockedTime=*)",
    }
    body.update(overrides)
    return body


def test_admin_creates_a_provider_and_a_realm_audited(api, admin_user):
    client = api(admin_user)
    r = client.post(DIRECTORIES, oidc_body(), format="json")
    assert r.status_code == 201, r.json()
    assert r.json()["secret_name"] == "LIFEBOAT_OIDC_SECRET"
    r = client.post(DIRECTORIES, ldap_body(), format="json")
    assert r.status_code == 201, r.json()
    created = AuditEvent.objects.filter(action="directory.create")
    assert {e.after["name"] for e in created} == {"corp-sso", "corp-ldap"}
    assert client.get(DIRECTORIES).json()["count"] == 2


def test_bad_input_names_the_field(api, admin_user):
    client = api(admin_user)
    cases = [
        (oidc_body(issuer="not a url"), "issuer"),
        (oidc_body(scopes="profile"), "scopes"),
        (oidc_body(secret_name="has spaces"), "secret_name"),
        (ldap_body(server_uri="http://ldap"), "server_uri"),
        (ldap_body(server_uri="ldaps://ldap", start_tls=True), "start_tls"),
        (ldap_body(user_filter="(uid=alice)"), "user_filter"),
        (ldap_body(user_filter="(uid=%(user)s%(other)s)"), "user_filter"),
        (ldap_body(user_filter="(uid=%(user)s%d)"), "user_filter"),
        (ldap_body(secret_name="relative/path"), "secret_name"),
        (oidc_body(name="1bad"), "name"),
    ]
    for body, field in cases:
        r = client.post(DIRECTORIES, body, format="json")
        assert r.status_code == 400 and field in r.json(), (field, r.json())
    assert not Directory.objects.exists()


def test_name_and_kind_do_not_change(api, admin_user):
    client = api(admin_user)
    client.post(DIRECTORIES, oidc_body(), format="json")
    r = client.patch(reverse("api-directory-detail", args=["corp-sso"]), {"kind": "ldap"})
    assert r.status_code == 400 and "kind" in r.json()


def test_a_directory_people_signed_in_through_is_not_deleted(api, admin_user):
    client = api(admin_user)
    client.post(DIRECTORIES, oidc_body(), format="json")
    d = Directory.objects.get()
    DirectoryAccount.objects.create(
        user=f.make_user("alice@corp-sso"), directory=d, subject="a", checked_at=timezone.now()
    )
    r = client.delete(reverse("api-directory-detail", args=["corp-sso"]))
    assert r.status_code == 400 and "disable" in r.json()["detail"]


def test_a_mapping_applies_at_once_and_its_removal_takes_the_role_away(api, admin_user):
    client = api(admin_user)
    client.post(DIRECTORIES, oidc_body(), format="json")
    d = Directory.objects.get()
    prod = f.make_vault("prod-a", owner=admin_user)
    alice = f.make_user("alice@corp-sso")
    DirectoryAccount.objects.create(
        user=alice, directory=d, subject="a", groups=["ops"], checked_at=timezone.now()
    )
    r = client.post(
        MAPPINGS,
        {"directory": "corp-sso", "group": "ops", "vault_pattern": "prod-*", "role": "operator"},
        format="json",
    )
    assert r.status_code == 201, r.json()
    m = VaultMembership.objects.get(user=alice, vault=prod)
    assert (m.role, m.mapped_from) == (Role.OPERATOR, "corp-sso:ops")
    sync = AuditEvent.objects.get(action="directory.sync")
    assert sync.actor == admin_user and sync.after["reason"] == "mapping created"
    assert AuditEvent.objects.filter(action="group_mapping.create").exists()

    r = client.delete(reverse("api-group-mapping-detail", args=[r.json()["id"]]))
    assert r.status_code == 204
    assert not VaultMembership.objects.filter(user=alice).exists()
    assert not GroupMapping.objects.exists()
    assert AuditEvent.objects.filter(action="group_mapping.delete").exists()


def test_mapping_bad_input_names_the_field(api, admin_user):
    client = api(admin_user)
    client.post(DIRECTORIES, oidc_body(), format="json")
    cases = [
        ({"directory": "corp-sso", "group": "ops"}, "role"),
        ({"directory": "corp-sso", "group": "ops", "role": "operator"}, "vault_pattern"),
        (
            {"directory": "corp-sso", "group": "ops", "vault_pattern": "a b", "role": "reader"},
            "vault_pattern",
        ),
        ({"directory": "nope", "group": "ops", "site_admin": True}, "directory"),
        ({"directory": "corp-sso", "group": " ", "site_admin": True}, "group"),
    ]
    for body, field in cases:
        r = client.post(MAPPINGS, body, format="json")
        assert r.status_code == 400 and field in r.json(), (field, r.json())


def test_a_vault_created_later_gets_the_mapped_roles_and_a_higher_local_role_holds(
    api, admin_user, django_capture_on_commit_callbacks
):
    client = api(admin_user)
    client.post(DIRECTORIES, oidc_body(), format="json")
    d = Directory.objects.get()
    alice = f.make_user("alice@corp-sso")
    DirectoryAccount.objects.create(
        user=alice, directory=d, subject="a", groups=["ops"], checked_at=timezone.now()
    )
    GroupMapping.objects.create(
        directory=d, group="ops", vault_pattern="prod-*", role=Role.OPERATOR
    )
    with django_capture_on_commit_callbacks(execute=True):
        r = client.post(reverse("api-vault-list"), {"name": "prod-new"}, format="json")
    assert r.status_code == 201, r.json()
    m = VaultMembership.objects.get(user=alice, vault__name="prod-new")
    assert (m.role, m.mapped_from) == (Role.OPERATOR, "corp-sso:ops")
    # A local owner role is higher than the mapped operator: it stays local.
    own = f.make_vault("prod-own", owner=admin_user)
    f.add_member(own, alice, Role.OWNER)
    sync_everyone(by=admin_user, reason="test")
    assert VaultMembership.objects.get(user=alice, vault=own).mapped_from == ""


@pytest.mark.parametrize("rows", [3, 50])
def test_mapping_list_queries_do_not_grow_with_rows(
    api, admin_user, rows, django_assert_num_queries
):
    d = Directory.objects.create(
        name="corp-sso", kind="oidc", title="Corp", issuer="https://x.example", client_id="c"
    )
    GroupMapping.objects.bulk_create(
        GroupMapping(directory=d, group=f"g{i}", site_admin=True) for i in range(rows)
    )
    client = api(admin_user)
    with django_assert_num_queries(2):  # count and page, whatever the rows
        r = client.get(MAPPINGS + "?page_size=100")
    assert r.status_code == 200 and r.json()["count"] == rows
