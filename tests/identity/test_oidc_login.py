"""Signing in through a real OpenID provider (the npm oidc-provider, started by the fixture)
in Chromium: the full flow, the groups claim mapped to a vault role, a tampered state or nonce
refused, logout ending the local session, and API tokens that need a recent sign-in."""

from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from identity.models import Directory, DirectoryAccount, DirectoryKind, GroupMapping
from portal.tokens import issue_token
from tests import factories as f
from tests.browser.conftest import needs_chromium
from tests.identity import servers
from vaults.models import AuditEvent, Role, VaultMembership

pytestmark = [pytest.mark.browser, needs_chromium]

USERS = {
    "alice": {"groups": ["backup-operators"], "email": "alice@example.org"},
    "dave": {"groups": ["staff"], "email": "dave@example.org"},
}


@pytest.fixture
def base(runserver):
    return f"http://localhost:{runserver.port}"


@pytest.fixture
def provider(tmp_path, base, monkeypatch):
    if not servers.NODE_PROVIDER.exists():
        pytest.skip("needs the npm package oidc-provider (npm ci)")
    callback = f"{base}/login/oidc/corp-sso/callback/"
    with servers.oidc_provider(tmp_path / "oidc", redirect_uris=[callback], users=USERS) as op:
        monkeypatch.setenv("LIFEBOAT_TEST_OIDC_SECRET", op.client_secret)
        yield op


@pytest.fixture
def sso(provider):
    directory = Directory.objects.create(
        name="corp-sso",
        kind=DirectoryKind.OIDC,
        title="Corp SSO",
        issuer=provider.issuer,
        client_id=provider.client_id,
        secret_source="env",
        secret_name="LIFEBOAT_TEST_OIDC_SECRET",
    )
    GroupMapping.objects.create(
        directory=directory, group="backup-operators", vault_pattern="prod-*", role=Role.OPERATOR
    )
    admin = f.make_user("admin", superuser=True)
    f.make_vault("prod-a", owner=admin)
    f.make_vault("test-b", owner=admin)
    return directory


def to_provider(page, base: str, login: str) -> None:
    """From the login page to the provider's login form, signed in there as `login`."""
    page.goto(f"{base}/login/")
    page.click("text=Sign in with Corp SSO")
    page.wait_for_selector("input[name=login]")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")


def consent(page) -> None:
    page.wait_for_selector("button[type=submit]")
    page.click("button[type=submit]")


def test_it_signs_in_through_the_provider_with_the_mapped_role(page, base, sso):
    to_provider(page, base, "alice")
    consent(page)
    page.wait_for_url(f"{base}/")
    assert "alice@corp-sso" in page.content()
    m = VaultMembership.objects.select_related("vault").get(user__username="alice@corp-sso")
    assert (m.vault.name, m.role, m.mapped_from) == (
        "prod-a",
        "operator",
        "corp-sso:backup-operators",
    )
    account = DirectoryAccount.objects.get(user=m.user)
    assert account.groups == ["backup-operators"] and account.subject == "alice"
    login = AuditEvent.objects.get(action="login.success")
    assert login.after == {"method": "oidc", "directory": "corp-sso"}
    assert login.source_ip == "127.0.0.1"
    page.goto(f"{base}/vaults/prod-a/access/")
    assert page.locator("#members").is_visible()

    # Logout ends the local session: the next page asks to sign in again.
    page.click("form.logout button")
    page.goto(f"{base}/")
    assert urlsplit(page.url).path == "/login/"
    assert (
        not Session.objects.filter(expire_date__gt=timezone.now())
        .exclude(session_data="")
        .filter(
            session_key__in=[c["value"] for c in page.context.cookies() if c["name"] == "sessionid"]
        )
        .exists()
    )


def back_from_provider(page, provider) -> str:
    """The callback URL the provider sends the browser to after consent, held back.

    Browsers do not let a page intercept the redirects of a navigation, so the consent form's
    POST is sent by the test and its redirects followed by hand (with the browser's cookies)."""
    held: list[str] = []

    def hold(route):
        if route.request.method == "POST" and "prompt=consent" in (route.request.post_data or ""):
            held.append(route.fetch(max_redirects=0).headers["location"])
            route.fulfill(status=200, body="held by the test")
        else:
            route.continue_()

    page.route("**/interaction/**", hold)
    consent(page)
    page.wait_for_selector("text=held by the test")
    url = urljoin(provider.issuer, held[0])
    while "/login/oidc/" not in url:
        url = urljoin(url, page.request.get(url, max_redirects=0).headers["location"])
    return url


def test_a_tampered_state_is_refused(page, base, sso, provider):
    to_provider(page, base, "alice")
    parts = urlsplit(back_from_provider(page, provider))
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query["state"] = query["state"][:-2] + "xx"
    page.goto(urlunsplit(parts._replace(query=urlencode(query))))
    assert urlsplit(page.url).path == "/login/"
    assert "refused" in page.content()
    assert not User.objects.filter(username="alice@corp-sso").exists()
    failure = AuditEvent.objects.get(action="login.failure")
    assert failure.after["method"] == "oidc" and failure.after["reason"] == "mismatching_state"


def test_a_tampered_nonce_is_refused(page, base, sso, provider):
    """The nonce the ID token carries must be the one this session sent."""
    to_provider(page, base, "alice")
    callback = back_from_provider(page, provider)
    key = next(c["value"] for c in page.context.cookies() if c["name"] == "sessionid")
    session = Session.objects.get(session_key=key)
    data = session.get_decoded()
    states = [name for name in data if name.startswith("_state_")]
    assert len(states) == 1
    data[states[0]]["data"]["nonce"] = "not-the-nonce-sent"
    Session.objects.save(key, data, session.expire_date)
    page.goto(callback)
    assert urlsplit(page.url).path == "/login/"
    assert not User.objects.filter(username="alice@corp-sso").exists()
    failure = AuditEvent.objects.get(action="login.failure")
    assert failure.after["reason"] == "invalid_id_token"


def test_a_user_without_a_mapped_group_signs_in_without_roles(page, base, sso):
    to_provider(page, base, "dave")
    consent(page)
    page.wait_for_url(f"{base}/")
    assert not VaultMembership.objects.filter(user__username="dave@corp-sso").exists()


def test_api_token_of_a_provider_user_needs_a_recent_sign_in(page, base, sso, settings):
    to_provider(page, base, "alice")
    consent(page)
    page.wait_for_url(f"{base}/")
    alice = User.objects.get(username="alice@corp-sso")
    _token, key = issue_token(alice, name="script")
    api = Client(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/v1/vaults/").status_code == 200
    DirectoryAccount.objects.filter(user=alice).update(
        checked_at=timezone.now() - timedelta(hours=13)
    )
    refused = api.get("/api/v1/vaults/")
    assert refused.status_code in (401, 403)
    assert "Sign in through Corp SSO again" in refused.json()["detail"]
