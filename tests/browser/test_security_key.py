"""A security key (WebAuthn) in a real browser: Chromium's virtual authenticator, driven over
the DevTools protocol, answers the ceremonies as a USB key would. A user with an authenticator
app adds a key, then logs in with password and key; a key whose signature counter goes
backwards (a clone) is refused and counted by the lockout."""

import pytest

from engine.tests.tools import require_tool
from security.models import LoginFailure, SecurityKey
from tests import factories as f
from vaults.models import AuditEvent

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def _chromium():
    require_tool("chromium")


def virtual_key(page):
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "usb",
                "hasResidentKey": False,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp


def password(page, base):
    page.goto(f"{base}/login/")
    page.fill("#id_username", "reader")
    page.fill("#id_password", "pw-secret-1")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/login/code/")


def test_add_a_security_key_then_log_in_with_it(transactional_db, live_server, page, reader):
    base = live_server.url.replace("127.0.0.1", "localhost")
    app = f.make_totp(reader)
    virtual_key(page)

    password(page, base)
    assert page.locator("#use-key").count() == 0  # no key yet
    page.fill("#id_code", f.totp_code(app))
    page.click("#code-form button[type=submit]")
    page.wait_for_url(f"{base}/")

    page.goto(f"{base}/account/second-factor/")
    page.fill("#key-name", "blue key")
    page.click("#add-key")
    page.wait_for_selector("#keys .key-row")
    assert "blue key" in page.inner_text("#keys")
    key = SecurityKey.objects.get(user=reader)
    enrol = AuditEvent.objects.get(action="second_factor.enrol", after__kind="webauthn")
    assert enrol.after["name"] == "blue key"

    page.click(".logout button")
    page.wait_for_url(f"{base}/login/")
    password(page, base)
    page.click("#use-key")
    page.wait_for_url(f"{base}/")
    ok = AuditEvent.objects.filter(action="login.success").latest("id")
    assert ok.after["method"] == "webauthn" and ok.actor == reader
    key.refresh_from_db()
    assert key.last_used_at is not None

    # A clone answers with a counter the real key has passed: refused, and counted.
    SecurityKey.objects.filter(pk=key.pk).update(sign_count=key.sign_count + 1000)
    page.click(".logout button")
    page.wait_for_url(f"{base}/login/")
    password(page, base)
    page.click("#use-key")
    page.wait_for_selector("#key-status:has-text('wrong')")
    assert page.url == f"{base}/login/code/"
    assert LoginFailure.objects.filter(username="reader").count() == 1
    assert AuditEvent.objects.filter(action="login.failure", after__method="webauthn").exists()
