"""Login lockout (page and API token endpoint), token revocation and last use."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from portal.models import ApiToken
from security import lockout
from security.models import LoginFailure
from vaults.models import AuditEvent

pytestmark = pytest.mark.django_db


def page_login(client, username, password, ip="10.0.0.1"):
    return client.post(
        reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=ip
    )


def api_login(api, username, password, ip="10.0.0.1"):
    return api().post(
        reverse("api-token-obtain"), {"username": username, "password": password}, REMOTE_ADDR=ip
    )


def test_five_failures_lock_the_login_page(client, owner):
    for _ in range(5):
        assert page_login(client, "owner", "wrong").status_code == 200
    r = page_login(client, "owner", "pw-secret-1")
    assert r.status_code == 200 and "Too many failed sign-ins" in r.content.decode()
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="login.lockout").count() == 1
    # Another address is not locked out.
    assert page_login(client, "owner", "pw-secret-1", ip="10.0.0.2").status_code == 302


def test_the_lock_covers_the_api_token_endpoint(api, owner):
    for _ in range(5):
        assert api_login(api, "owner", "wrong").status_code == 401
    r = api_login(api, "owner", "pw-secret-1")
    assert r.status_code == 429 and "Too many failed sign-ins" in r.data["detail"]
    assert int(r["Retry-After"]) > 0
    assert not ApiToken.objects.exists()


def test_the_lock_ends_after_the_lockout_time(client, owner):
    for _ in range(5):
        page_login(client, "owner", "wrong")
    assert lockout.current_lock("owner", "10.0.0.1")
    LoginFailure.objects.update(time=timezone.now() - timedelta(minutes=16))
    assert lockout.current_lock("owner", "10.0.0.1") is None
    assert page_login(client, "owner", "pw-secret-1").status_code == 302


def test_failures_spread_beyond_the_window_do_not_lock(owner):
    now = timezone.now()
    for minutes in (40, 30, 20, 10, 0):
        LoginFailure.objects.create(
            username="owner", ip="10.0.0.1", time=now - timedelta(minutes=minutes)
        )
    assert lockout.current_lock("owner", "10.0.0.1", now) is None


def test_a_successful_login_clears_the_failures(client, owner):
    for _ in range(4):
        page_login(client, "owner", "wrong")
    assert page_login(client, "owner", "pw-secret-1").status_code == 302
    assert not LoginFailure.objects.exists()


def test_usernames_are_compared_case_insensitively(client, owner):
    for name in ("owner", "OWNER", "Owner", "owner ", "oWner"):
        page_login(client, name, "wrong")
    assert lockout.current_lock("owner", "10.0.0.1")


def test_tokens_record_last_use_and_are_revocable(api, owner):
    key = api_login(api, "owner", "pw-secret-1").data["token"]
    token = ApiToken.objects.get()
    assert token.last_used_at is None
    client = api()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get(reverse("api-vault-list"), REMOTE_ADDR="10.9.9.9").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None and token.last_used_ip == "10.9.9.9"
    assert client.delete(reverse("api-token-detail", args=[token.pk])).status_code == 204
    r = client.get(reverse("api-vault-list"))
    assert r.status_code == 401 and "revoked" in r.data["detail"]
    assert AuditEvent.objects.filter(action="token.revoke", actor=owner).exists()


def test_session_and_csrf_cookies_are_hardened(client, owner, settings):
    assert settings.SESSION_COOKIE_HTTPONLY and settings.CSRF_COOKIE_HTTPONLY
    assert settings.SESSION_COOKIE_SAMESITE == "Lax" and settings.CSRF_COOKIE_SAMESITE == "Lax"
    r = page_login(client, "owner", "pw-secret-1")
    cookie = r.cookies["sessionid"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
