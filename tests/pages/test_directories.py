"""The site admins' directory pages and the login page's "Sign in with …" buttons."""

from django.urls import reverse

from identity.models import Directory, GroupMapping
from vaults.models import AuditEvent


def make_provider(**fields):
    data = {
        "name": "corp-sso",
        "kind": "oidc",
        "title": "Corp SSO",
        "issuer": "https://login.example.org",
        "client_id": "lifeboat",
    }
    data.update(fields)
    return Directory.objects.create(**data)


def form_body(**overrides):
    body = {
        "name": "corp-ldap",
        "kind": "ldap",
        "title": "Corp LDAP",
        "enabled": "on",
        "secret_source": "env",
        "secret_name": "LIFEBOAT_LDAP_BIND",
        "server_uri": "ldap://ldap.example.org",
        "start_tls": "on",
        "bind_dn": "cn=lifeboat,dc=example,dc=org",
        "user_base": "ou=people,dc=example,dc=org",
        "user_filter": "(uid=%(user)s)",
        "group_type": "group_of_names",
        "scopes": "openid",
    }
    body.update(overrides)
    return body


def test_login_page_offers_the_enabled_providers(client, db):
    make_provider()
    make_provider(name="old-sso", title="Old SSO", enabled=False)
    page = client.get(reverse("login") + "?next=/vaults/").content.decode()
    assert "Sign in with Corp SSO" in page
    assert reverse("oidc-login", args=["corp-sso"]) + "?next=/vaults/" in page
    assert "Old SSO" not in page


def test_admin_adds_a_realm_through_the_form(client, admin_user):
    client.force_login(admin_user)
    assert "Directories" in client.get("/").content.decode()
    r = client.post(reverse("directory-create"), form_body())
    assert r.status_code == 302, r.content.decode()[:3000]
    d = Directory.objects.get(name="corp-ldap")
    assert d.start_tls and d.secret_name == "LIFEBOAT_LDAP_BIND"
    assert AuditEvent.objects.filter(action="directory.create").exists()
    listing = client.get(reverse("directory-list")).content.decode()
    assert "ldap://ldap.example.org + StartTLS" in listing


def test_bad_form_input_is_shown_at_its_field(client, admin_user):
    client.force_login(admin_user)
    r = client.post(reverse("directory-create"), form_body(server_uri="http://x"))
    assert r.status_code == 200
    assert "One server: ldap://host[:port]" in r.content.decode()
    assert not Directory.objects.exists()


def test_admin_maps_a_group_and_removes_the_mapping(client, admin_user):
    make_provider()
    client.force_login(admin_user)
    body = {"directory": "corp-sso", "group": "ops", "vault_pattern": "prod-*", "role": "operator"}
    assert client.post(reverse("group-mapping-create"), body).status_code == 302
    m = GroupMapping.objects.get()
    assert "prod-*" in client.get(reverse("directory-list")).content.decode()
    refused = client.post(reverse("group-mapping-create"), {**body, "role": ""})
    assert refused.status_code == 400
    assert client.post(reverse("group-mapping-delete", args=[m.pk])).status_code == 302
    assert not GroupMapping.objects.exists()
