"""API tokens die with the password: every way a password changes revokes the user's tokens;
a mere upgrade of the stored hash (same password, stronger hasher) does not."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from portal.models import ApiToken
from tests.api.clients import JsonClient
from vaults.models import AuditEvent

pytestmark = pytest.mark.django_db

NEW = "a-new-password-7"


def obtain(username="owner", password="pw-secret-1"):
    r = JsonClient().post(reverse("api-token-obtain"), {"username": username, "password": password})
    assert r.status_code == 201, r.content
    return r.data["token"]


def call(key):
    return JsonClient(HTTP_AUTHORIZATION=f"Token {key}").get(reverse("api-vault-list"))


def set_password_and_save(user, client, admin_user, monkeypatch):
    user.set_password(NEW)
    user.save()


def unusable_password(user, client, admin_user, monkeypatch):
    user.set_unusable_password()
    user.save()


def changepassword_command(user, client, admin_user, monkeypatch):
    answers = iter([NEW, NEW])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    call_command("changepassword", user.username, stdout=None)


def admin_sets_the_password(user, client, admin_user, monkeypatch):
    client.force_login(admin_user)
    r = client.post(
        reverse("admin:auth_user_password_change", args=[user.pk]),
        {"password1": NEW, "password2": NEW, "usable_password": "true"},
    )
    assert r.status_code == 302, r.content.decode()[:2000]


def user_changes_own_password_in_admin(user, client, admin_user, monkeypatch):
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    client.force_login(user)
    r = client.post(
        reverse("admin:password_change"),
        {"old_password": "pw-secret-1", "new_password1": NEW, "new_password2": NEW},
    )
    assert r.status_code == 302, r.content.decode()[:2000]


def hash_written_directly(user, client, admin_user, monkeypatch):
    # No save() and no signal: the token's check at use still sees the new password.
    get_user_model().objects.filter(pk=user.pk).update(password=make_password(NEW))


@pytest.mark.parametrize(
    "change",
    [
        set_password_and_save,
        unusable_password,
        changepassword_command,
        admin_sets_the_password,
        user_changes_own_password_in_admin,
        hash_written_directly,
    ],
)
def test_a_password_change_revokes_the_users_tokens(
    change, vault, owner, reader, admin_user, client, monkeypatch
):
    key, other_key = obtain(), obtain()
    readers_key = obtain("reader")
    assert call(key).status_code == 200
    change(owner, client, admin_user, monkeypatch)
    r = call(key)
    assert r.status_code == 401 and "revoked" in r.data["detail"]
    assert call(other_key).status_code == 401
    assert not ApiToken.objects.filter(user=owner, revoked_at=None).exists()
    assert AuditEvent.objects.filter(action="token.revoke", object_type="ApiToken").count() == 2
    # Nobody else's tokens.
    assert call(readers_key).status_code == 200


def test_a_token_issued_after_the_change_works(vault, owner):
    obtain()
    owner.set_password(NEW)
    owner.save()
    assert call(obtain(password=NEW)).status_code == 200


def test_saving_the_user_without_a_new_password_keeps_tokens(vault, owner):
    key = obtain()
    owner.first_name = "Olga"
    owner.save()
    owner.refresh_from_db()
    owner.save(update_fields=["last_login"])
    assert call(key).status_code == 200


def test_a_hash_upgrade_on_sign_in_keeps_tokens(vault, owner, settings):
    key = obtain()
    # A newer hasher is preferred: the next sign-in re-hashes the same password.
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.ScryptPasswordHasher",
        "django.contrib.auth.hashers.MD5PasswordHasher",
    ]
    assert owner.password.startswith("md5$")
    second = obtain()
    owner.refresh_from_db()
    assert owner.password.startswith("scrypt$")
    assert call(key).status_code == 200 and call(second).status_code == 200
    # The page login re-hashes in the same way.
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "django.contrib.auth.hashers.ScryptPasswordHasher",
    ]
    r = Client().post(reverse("login"), {"username": "owner", "password": "pw-secret-1"})
    owner.refresh_from_db()
    assert r.status_code == 302 and owner.password.startswith("md5$")
    assert call(key).status_code == 200


def test_the_token_page_says_a_password_change_revokes_tokens(client, owner):
    client.force_login(owner)
    html = client.get(reverse("account-tokens")).content.decode()
    assert "changing your password revokes" in html.lower()
