"""Signing in through a real OpenLDAP realm: group mapping at every sign-in, a user removed
from the group or disabled in the directory, wrong passwords counted by the lockout, API tokens
that stop when the directory drops the user."""

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from identity.models import DirectoryAccount, GroupMapping
from portal.tokens import issue_token
from security.models import LoginFailure
from tests import factories as f
from tests.identity import servers
from tests.identity.servers import BASE
from vaults.models import AuditEvent, Role, VaultMembership
from vaults.services.members import change_member_role, remove_member

# python-ldap is the optional `ldap` extra (identity.ldap_support); CI installs it.
ldap = pytest.importorskip("ldap", reason="python-ldap is not installed (the ldap extra)")


def sign_in(client: Client, username: str, password: str):
    return client.post(reverse("login"), {"username": username, "password": password})


@pytest.fixture
def vaults(db):
    admin = f.make_user("admin", superuser=True)
    return {name: f.make_vault(name, owner=admin) for name in ("prod-a", "prod-b", "test-c")}


@pytest.fixture
def operators_mapping(realm):
    return GroupMapping.objects.create(
        directory=realm, group="backup-operators", vault_pattern="prod-*", role=Role.OPERATOR
    )


def roles(username: str) -> dict[str, tuple[str, str]]:
    return {
        m.vault.name: (m.role, m.mapped_from)
        for m in VaultMembership.objects.filter(user__username=username).select_related("vault")
    }


def test_it_signs_in_with_the_mapped_role(client, vaults, operators_mapping):
    response = sign_in(client, "alice", "alice-pw")
    assert response.status_code == 302, response.content.decode()[:2000]
    assert response["Location"] == "/"
    assert client.get("/").status_code == 200
    assert roles("alice") == {
        "prod-a": ("operator", "corp-ldap:backup-operators"),
        "prod-b": ("operator", "corp-ldap:backup-operators"),
    }
    account = DirectoryAccount.objects.get(user__username="alice")
    assert account.subject == "alice" and account.groups == ["backup-operators"]
    user = User.objects.get(username="alice")
    assert not user.has_usable_password() and user.email == "alice@example.org"
    login = AuditEvent.objects.get(action="login.success")
    assert login.after == {"method": "ldap", "directory": "corp-ldap"}
    assert login.source_ip == "127.0.0.1"
    sync = AuditEvent.objects.get(action="directory.sync")
    assert {a["vault"] for a in sync.after["added"]} == {"prod-a", "prod-b"}


def test_highest_role_of_the_groups_wins_and_site_admin_follows_a_group(
    client, vaults, operators_mapping, realm
):
    GroupMapping.objects.create(
        directory=realm, group="backup-admins", vault_pattern="prod-a", role=Role.OWNER
    )
    GroupMapping.objects.create(directory=realm, group="backup-admins", site_admin=True)
    assert sign_in(client, "bob", "bob-pw").status_code == 302
    assert roles("bob") == {
        "prod-a": ("owner", "corp-ldap:backup-admins"),
        "prod-b": ("operator", "corp-ldap:backup-operators"),
    }
    assert User.objects.get(username="bob").is_superuser


def test_user_removed_from_the_group_loses_the_role_at_next_sign_in(
    client, vaults, operators_mapping, ldap_server
):
    assert sign_in(client, "alice", "alice-pw").status_code == 302
    assert set(roles("alice")) == {"prod-a", "prod-b"}
    client.post(reverse("logout"))
    conn = ldap_server.admin()
    conn.modify_s(
        f"cn=backup-operators,ou=groups,{BASE}",
        [(ldap.MOD_DELETE, "member", [f"uid=alice,ou=people,{BASE}".encode()])],
    )
    assert sign_in(client, "alice", "alice-pw").status_code == 302
    assert roles("alice") == {}
    sync = AuditEvent.objects.filter(action="directory.sync").first()
    assert {r["vault"] for r in sync.after["removed"]} == {"prod-a", "prod-b"}


def test_disabled_user_is_refused(client, vaults, realm):
    response = sign_in(client, "carol", "carol-pw")
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session
    assert not User.objects.get(username="carol").is_active
    failure = AuditEvent.objects.get(action="login.failure")
    assert failure.after["tried"] == [{"directory": "corp-ldap", "reason": "disabled"}]


def test_wrong_password_is_counted_by_the_lockout(client, realm, settings):
    settings.LIFEBOAT = {**settings.LIFEBOAT, "LOGIN_FAILURE_LIMIT": 3}
    for _ in range(3):
        assert sign_in(client, "alice", "wrong").status_code == 200
    assert LoginFailure.objects.filter(username="alice").count() == 3
    response = sign_in(client, "alice", "alice-pw")
    assert "Too many failed sign-ins" in response.content.decode()
    assert "_auth_user_id" not in client.session
    failures = AuditEvent.objects.filter(action="login.failure")
    assert failures.count() == 3
    assert failures.first().after["tried"] == [
        {"directory": "corp-ldap", "reason": "wrong_password"}
    ]


def test_a_local_account_of_the_same_name_is_not_taken_over(client, realm):
    local = f.make_user("alice", password="local-pw")
    assert sign_in(client, "alice", "alice-pw").status_code == 200
    assert not DirectoryAccount.objects.exists()
    # The local password still works, and only it.
    assert sign_in(client, "alice", "local-pw").status_code == 302
    assert int(client.session["_auth_user_id"]) == local.pk


def test_mapped_memberships_are_marked_and_not_edited_locally(client, vaults, operators_mapping):
    assert sign_in(client, "alice", "alice-pw").status_code == 302
    m = VaultMembership.objects.get(user__username="alice", vault__name="prod-a")
    admin = User.objects.get(username="admin")
    with pytest.raises(ValidationError) as err:
        change_member_role(m, by=admin, role=Role.OWNER)
    assert "change the group mapping" in str(err.value.message_dict["role"])
    with pytest.raises(ValidationError):
        remove_member(m, by=admin)
    admin_client = Client()
    admin_client.force_login(admin)
    page = admin_client.get(reverse("vault-access", args=["prod-a"])).content.decode()
    assert "from corp-ldap:backup-operators" in page
    assert reverse("vault-member-remove", args=["prod-a", m.pk]) not in page
    api = admin_client.get(f"/api/v1/vaults/prod-a/members/{m.pk}/").json()
    assert api["mapped_from"] == "corp-ldap:backup-operators"
    refused = admin_client.patch(
        f"/api/v1/vaults/prod-a/members/{m.pk}/", {"role": "owner"}, content_type="application/json"
    )
    assert refused.status_code == 400 and "role" in refused.json()


def test_api_token_stops_when_the_directory_removes_the_user(
    client, vaults, operators_mapping, ldap_server, settings
):
    assert sign_in(client, "alice", "alice-pw").status_code == 302
    alice = User.objects.get(username="alice")
    _token, key = issue_token(alice, name="script")
    api = Client(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/v1/vaults/").status_code == 200
    ldap_server.admin().delete_s(f"uid=alice,ou=people,{BASE}")
    # Within the re-check interval the token still works on the last check...
    assert api.get("/api/v1/vaults/").status_code == 200
    # ...and once it is over, the directory is asked again and says the user is gone.
    settings.LIFEBOAT = {**settings.LIFEBOAT, "DIRECTORY_RECHECK_MINUTES": 0}
    refused = api.get("/api/v1/vaults/")
    assert refused.status_code in (401, 403)
    assert "removed" in refused.json()["detail"]
    alice.refresh_from_db()
    assert not alice.is_active and roles("alice") == {}
    assert AuditEvent.objects.filter(action="directory.disable").exists()


def test_api_token_stops_when_the_directory_disables_the_user(
    client, vaults, operators_mapping, ldap_server, settings
):
    assert sign_in(client, "alice", "alice-pw").status_code == 302
    _token, key = issue_token(User.objects.get(username="alice"), name="script")
    settings.LIFEBOAT = {**settings.LIFEBOAT, "DIRECTORY_RECHECK_MINUTES": 0}
    api = Client(HTTP_AUTHORIZATION=f"Token {key}")
    # A re-check that finds the user enabled keeps the token working (and syncs the groups).
    assert api.get("/api/v1/vaults/").status_code == 200
    ldap_server.admin().modify_s(
        f"uid=alice,ou=people,{BASE}", [(ldap.MOD_ADD, "employeeType", [b"disabled"])]
    )
    assert api.get("/api/v1/vaults/").status_code in (401, 403)


def test_api_token_is_refused_while_the_directory_cannot_be_reached(
    client, vaults, operators_mapping, realm, settings
):
    assert sign_in(client, "alice", "alice-pw").status_code == 302
    _token, key = issue_token(User.objects.get(username="alice"), name="script")
    realm.server_uri = "ldap://127.0.0.1:9"
    realm.save()
    settings.LIFEBOAT = {**settings.LIFEBOAT, "DIRECTORY_RECHECK_MINUTES": 0}
    refused = Client(HTTP_AUTHORIZATION=f"Token {key}").get("/api/v1/vaults/")
    assert refused.status_code in (401, 403)
    assert "cannot be reached" in refused.json()["detail"]
    assert User.objects.get(username="alice").is_active


@pytest.mark.parametrize("transport", ["starttls", "ldaps"])
def test_it_signs_in_over_tls_with_the_certificate_verified(
    client, vaults, operators_mapping, realm, ldap_server, tmp_path, transport
):
    realm.ca_file = str(ldap_server.ca_file)
    if transport == "ldaps":
        realm.server_uri = ldap_server.ldaps_uri
    else:
        realm.start_tls = True
    realm.save()
    assert sign_in(client, "alice", "alice-pw").status_code == 302
    assert set(roles("alice")) == {"prod-a", "prod-b"}
    client.post(reverse("logout"))
    # A certificate that the configured CA did not sign is refused: no sign-in.
    other_ca, _cert, _key = servers.make_tls(tmp_path / "other", name="other-ca")
    realm.ca_file = str(other_ca)
    realm.save()
    assert sign_in(client, "alice", "alice-pw").status_code == 200
    assert "_auth_user_id" not in client.session


def test_a_user_disabled_after_signing_in_is_refused_and_loses_the_roles(
    client, vaults, operators_mapping, ldap_server
):
    assert sign_in(client, "alice", "alice-pw").status_code == 302
    client.post(reverse("logout"))
    ldap_server.admin().modify_s(
        f"uid=alice,ou=people,{BASE}", [(ldap.MOD_ADD, "employeeType", [b"disabled"])]
    )
    assert sign_in(client, "alice", "alice-pw").status_code == 200
    alice = User.objects.get(username="alice")
    assert not alice.is_active and roles("alice") == {}
    assert DirectoryAccount.objects.get(user=alice).disabled
    # Enabled again in the directory: the next sign-in brings the user and the roles back.
    ldap_server.admin().modify_s(
        f"uid=alice,ou=people,{BASE}", [(ldap.MOD_DELETE, "employeeType", None)]
    )
    assert sign_in(client, "alice", "alice-pw").status_code == 302
    assert set(roles("alice")) == {"prod-a", "prod-b"}


def test_a_disabled_realm_signs_nobody_in_and_refuses_its_users_tokens(
    client, vaults, operators_mapping, realm
):
    assert sign_in(client, "alice", "alice-pw").status_code == 302
    client.post(reverse("logout"))
    _token, key = issue_token(User.objects.get(username="alice"), name="script")
    realm.enabled = False
    realm.save()
    assert sign_in(client, "alice", "alice-pw").status_code == 200
    refused = Client(HTTP_AUTHORIZATION=f"Token {key}").get("/api/v1/vaults/")
    assert refused.status_code in (401, 403) and "disabled" in refused.json()["detail"]


def test_local_sign_ins_are_audited_too(client, db):
    f.make_user("local", password="local-pw")
    assert sign_in(client, "local", "nope").status_code == 200
    assert sign_in(client, "local", "local-pw").status_code == 302
    failure = AuditEvent.objects.get(action="login.failure")
    success = AuditEvent.objects.get(action="login.success")
    assert failure.after == {"username": "local", "method": "password"}
    assert success.after == {"method": "password"} and success.actor_name == "local"
    assert failure.source_ip == success.source_ip == "127.0.0.1"


def test_a_directory_user_with_an_authenticator_app_gives_its_code_too(client, vaults, realm):
    assert sign_in(client, "alice", "alice-pw").status_code == 302
    app = f.make_totp(User.objects.get(username="alice"))
    client.logout()
    response = sign_in(client, "alice", "alice-pw")
    assert response.status_code == 302 and response["Location"] == reverse("login-code")
    assert "_auth_user_id" not in client.session
    response = client.post(reverse("login-code"), {"code": f.totp_code(app)})
    assert response.status_code == 302 and response["Location"] == "/"
    login = AuditEvent.objects.filter(action="login.success").latest("id")
    assert login.after == {"method": "totp", "first_factor": "ldap", "directory": "corp-ldap"}
